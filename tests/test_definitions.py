"""The code location loads, lists what it defines, and refuses an invalid job config."""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

import dagster as dg
import pytest

from robotoff_batch.paths import PROJECT_ROOT


def test_code_location_loads_and_lists_its_definitions() -> None:
    from robotoff_batch.definitions import defs

    repo = defs.get_repository_def()
    keys = {key.to_user_string() for key in repo.asset_graph.get_all_asset_keys()}
    assert keys == {
        "ingredients_spellcheck/products",
        "ingredients_spellcheck/staged_input",
        "ingredients_spellcheck/batch_job_submission",
        "ingredients_spellcheck/batch_job",
        "ingredients_spellcheck/predictions",
    }
    checks = {k.name for k in repo.asset_graph.asset_check_keys}
    assert checks == {
        "batch_job_succeeded",
        "rows_imported_match_output",
        "no_duplicate_predictions",
        "no_rows_quarantined",
    }
    jobs = {j.name for j in repo.get_all_jobs()}
    assert {
        "launch_ingredients_spellcheck",
        "finish_ingredients_spellcheck",
        "cancel_ingredients_spellcheck",
    } <= jobs
    # the launch (one step) and the finish run (two) run in the run's process, no per-step
    # process to start (benchmarks/click_to_imported.py)
    for name in ("launch_ingredients_spellcheck", "finish_ingredients_spellcheck"):
        assert repo.get_job(name).executor_def.name == "in_process", name
    sensors = {s.name: s for s in repo.sensor_defs}
    assert set(sensors) == {"batch_job_sensor"}
    assert set(defs.resources) >= {
        "product_dump",
        "staging",
        "batch_engine",
        "prediction_store",
    }
    # the spellcheck config has no schedule: none is defined
    assert not repo.schedule_defs


@pytest.mark.parametrize(
    "selection",
    [
        ["ingredients_spellcheck/products"],
        ["ingredients_spellcheck/staged_input"],
        ["ingredients_spellcheck/batch_job_submission"],
        ["ingredients_spellcheck/products", "ingredients_spellcheck/staged_input"],
    ],
)
def test_part_of_the_launch_step_cannot_be_materialized(selection: list[str]) -> None:
    """The launch is one step: materializing a part of it is refused with a clear message."""
    from robotoff_batch.definitions import defs

    keys = [dg.AssetKey.from_user_string(k) for k in selection]
    launch_assets = [a for a in defs.assets or [] if isinstance(a, dg.AssetsDefinition)]
    with pytest.raises(dg.DagsterInvalidDefinitionError) as raised:
        dg.materialize(
            launch_assets, selection=keys, resources=defs.resources, raise_on_error=False
        )
    cause = raised.value.__cause__
    assert isinstance(cause, dg.DagsterInvalidSubsetError)
    assert "ingredients_spellcheck__launch" in str(cause)
    assert "does not support subsetting" in str(cause)


def test_a_groups_materialize_all_is_one_launch_or_job_partitions_never_a_mix() -> None:
    """The UI's "Materialize all" on a group: the launch group is the one launch step (no
    partition dialog); the batch-jobs group is only partitioned assets (pick a job)."""
    from robotoff_batch.definitions import defs

    graph = defs.resolve_asset_graph()
    launch = dg.AssetSelection.groups("ingredients_spellcheck").resolve(graph)
    jobs = dg.AssetSelection.groups("ingredients_spellcheck_batch_jobs").resolve(graph)
    assert {k.path[-1] for k in launch} == {"products", "staged_input", "batch_job_submission"}
    assert {k.path[-1] for k in jobs} == {"batch_job", "predictions"}
    assert not any(graph.get(k).is_partitioned for k in launch)
    assert all(graph.get(k).is_partitioned for k in jobs)


def _copy_project(tmp_path: Path) -> Path:
    root = tmp_path / "project"
    shutil.copytree(
        PROJECT_ROOT / "robotoff_batch",
        root / "robotoff_batch",
        ignore=shutil.ignore_patterns("__pycache__"),
    )
    shutil.copytree(PROJECT_ROOT / "job_configs", root / "job_configs")
    return root


def _env(root: Path) -> dict[str, str]:
    return {"PYTHONPATH": str(root), "PATH": "/usr/bin", "ROBOTOFF_BATCH_HOME": str(root / "home")}


def _load_in(root: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-c", "import robotoff_batch.definitions as d; print(len(d.defs.assets))"],
        cwd=root,
        capture_output=True,
        text=True,
        env=_env(root),
        timeout=120,
    )


def test_invalid_job_config_fails_the_load_with_the_same_message(tmp_path: Path) -> None:
    root = _copy_project(tmp_path)
    config = root / "job_configs" / "ingredients-spellcheck.yaml"
    config.write_text(config.read_text().replace("parallelism: 1", "parallelism: 2"))
    proc = _load_in(root)
    assert proc.returncode != 0
    assert f"invalid job configuration {config}" in proc.stderr
    line = next(
        n for n, text in enumerate(config.read_text().splitlines(), 1) if "parallelism:" in text
    )
    assert f"line {line}: resources.parallelism: parallelism 2 is above task_count 1" in (
        proc.stderr
    )


def test_a_schedule_in_the_config_creates_a_stopped_schedule(tmp_path: Path) -> None:
    root = _copy_project(tmp_path)
    config = root / "job_configs" / "ingredients-spellcheck.yaml"
    config.write_text(config.read_text().replace("schedule: null", 'schedule: "0 3 * * 1"'))
    proc = subprocess.run(
        [
            sys.executable,
            "-c",
            "import robotoff_batch.definitions as d\n"
            "s = d.defs.get_repository_def().schedule_defs[0]\n"
            "print(s.name, s.cron_schedule, s.default_status.value, s.job_name)",
        ],
        cwd=root,
        capture_output=True,
        text=True,
        env=_env(root),
        timeout=120,
    )
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.split() == [
        "ingredients_spellcheck_schedule",
        "0",
        "3",
        "*",
        "*",
        "1",
        "STOPPED",
        "launch_ingredients_spellcheck",
    ]


@pytest.mark.parametrize(("env", "interval"), [("local", 1), ("production", 30)])
def test_the_sensor_interval_is_the_engines_unless_set(
    env: str, interval: int, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The local runner is followed at every loop of the daemon (its listing reads a local
    directory), Cloud Batch every 30 s (one ListJobs call a tick); the variable overrides both."""
    from robotoff_batch.definitions import build_definitions

    def minimum_interval() -> int | None:
        repo = build_definitions(env).get_repository_def()
        return repo.get_sensor_def("batch_job_sensor").minimum_interval_seconds

    monkeypatch.delenv("ROBOTOFF_BATCH_SENSOR_INTERVAL_S", raising=False)
    assert minimum_interval() == interval
    monkeypatch.setenv("ROBOTOFF_BATCH_SENSOR_INTERVAL_S", "7")
    assert minimum_interval() == 7


@pytest.mark.parametrize("value", ["0", "-5", "ten", "2.5"])
def test_a_bad_sensor_interval_is_refused_naming_the_variable(
    value: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    from robotoff_batch.sensors import sensor_interval_s

    monkeypatch.setenv("ROBOTOFF_BATCH_SENSOR_INTERVAL_S", value)
    with pytest.raises(ValueError, match=f"ROBOTOFF_BATCH_SENSOR_INTERVAL_S.*{value!r}"):
        sensor_interval_s("local")


@pytest.mark.parametrize("env", ["local", "production"])
def test_resources_per_environment(env: str) -> None:
    from robotoff_batch.resources import build_resources

    resources = build_resources(env)
    engine = resources["batch_engine"]
    assert engine.kind == ("local" if env == "local" else "cloud-batch")
    # one resource per engine, each with only its own engine's settings
    from robotoff_batch.resources import CloudBatchEngineResource, LocalBatchEngineResource

    cls = LocalBatchEngineResource if env == "local" else CloudBatchEngineResource
    assert type(engine) is cls
    fields = set(cls.model_fields)
    assert ("gcp_location" in fields) == (env == "production")
    assert ("state_dir" in fields) == (env == "local")
    assert not any("emulator" in f for f in fields)  # test hooks live in the tests
    assert isinstance(resources["prediction_store"], dg.ConfigurableResource)


def test_the_requests_project_is_the_engines_own() -> None:
    """The launch's request parent and the sensor's listing use one project: the engine's
    (here the emulator's default, with no project configured)."""
    from tests.fakes.fake_batch_service import EmulatedCloudBatchEngineResource

    resource = EmulatedCloudBatchEngineResource(emulator_host="127.0.0.1:1")
    engine = resource.get_engine()
    assert resource.project == engine.project == "emulator"  # type: ignore[attr-defined]
    assert engine.parent == "projects/emulator/locations/europe-west4"  # type: ignore[attr-defined]
    assert engine.location == "europe-west4"


def test_the_local_engine_gets_the_job_types_commands_from_the_composition_root() -> None:
    from robotoff_batch.job_types import load_registry, local_commands
    from robotoff_batch.resources import LocalBatchEngineResource, build_resources

    image = load_registry()["ingredients-spellcheck"].config.resources.container_image_uri
    built = build_resources("local")["batch_engine"]
    assert built.job_type_commands == local_commands()
    assert built.local_argv(image)[-2:] == ["--engine", "lexicon-cpu"]
    # the resource itself never reads the registry; an override wins over the job type's
    assert LocalBatchEngineResource().local_argv(image) is None
    debug = LocalBatchEngineResource(
        job_type_commands=local_commands(), local_commands={image: ["x"]}
    )
    assert debug.local_argv(image) == ["x"]
