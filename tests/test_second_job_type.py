"""A second job type, end to end, with no change to the core: ``barcode-check``, a job-type
package kept as a test fixture (tests/fixtures/job_types/: its module, SQL, YAML and container
script, declared "no import"), picked up by the registry from ROBOTOFF_BATCH_JOB_TYPE_PACKAGES
and launched, followed and finished by the real code location on the local runner."""

from __future__ import annotations

import re
from collections.abc import Iterator
from pathlib import Path

import dagster as dg
import pyarrow.parquet as pq
import pytest

from robotoff_batch.assets.launch import launch_op_name
from robotoff_batch.batch.engine import JobState
from robotoff_batch.definitions import build_definitions
from robotoff_batch.job_types import PACKAGES_ENV, RegistryError, load_registry, local_commands
from robotoff_batch.job_types.base import JobType
from robotoff_batch.paths import PROJECT_ROOT, SAMPLE_DATA_DIR
from robotoff_batch.resources import (
    LocalBatchEngineResource,
    LocalStagingResource,
    PostgresPredictionStoreResource,
    ProductDumpResource,
)
from tests.test_e2e import failure_text, launched_job_id, run_request, tick, tick_until_done

PACKAGE = "tests.fixtures.job_types"
FIXTURE_DIR = PROJECT_ROOT / "tests" / "fixtures" / "job_types"
NAME = "barcode-check"
PREFIX = "barcode_check"


@pytest.fixture
def instance(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[dg.DagsterInstance]:
    monkeypatch.setenv(PACKAGES_ENV, PACKAGE)
    monkeypatch.setenv("ROBOTOFF_BATCH_HOME", str(tmp_path / "home"))
    with dg.instance_for_test() as inst:
        yield inst


def resources(tmp_path: Path, database_url: str) -> dict[str, object]:
    return {
        "product_dump": ProductDumpResource(path=str(SAMPLE_DATA_DIR / "food_sample_2026.parquet")),
        "staging": LocalStagingResource(root_uri=(tmp_path / "staging").as_uri()),
        "batch_engine": LocalBatchEngineResource(
            state_dir=str(tmp_path / "batch"), job_type_commands=local_commands()
        ),
        "prediction_store": PostgresPredictionStoreResource(database_url=database_url),
    }


def gs1_ok(code: str) -> bool:
    digits = [int(d) for d in code]
    total = sum(d * (3 if i % 2 == 0 else 1) for i, d in enumerate(reversed(digits[:-1])))
    return code.isdigit() and (10 - total % 10) % 10 == digits[-1]


def test_second_job_type_runs_end_to_end_without_an_import(
    tmp_path: Path, instance: dg.DagsterInstance, pg_db: str
) -> None:
    res = resources(tmp_path, pg_db)
    defs = build_definitions(resources=res)
    # the code location has the fixture's assets and jobs, beside the built-in type's
    keys = {k.to_user_string() for k in defs.resolve_asset_graph().get_all_asset_keys()}
    assert {f"{PREFIX}/{n}" for n in ("products", "staged_input", "batch_job_submission")} <= keys
    assert f"{PREFIX}/batch_job" in keys and f"{PREFIX}/predictions" not in keys  # no import
    assert "ingredients_spellcheck/predictions" in keys

    launch = defs.resolve_job_def(f"launch_{PREFIX}")
    config_cls = load_registry()[NAME].job_type.launch_config
    result = launch.execute_in_process(
        run_config=dg.RunConfig(ops={launch_op_name(PREFIX): config_cls(limit=40)}),
        instance=instance,
        raise_on_error=False,
    )
    assert result.success, failure_text(result)
    job_id = launched_job_id(result)
    staged = tmp_path / "staging" / NAME / job_id
    assert pq.read_metadata(staged / "input.parquet").num_rows == 40

    requests, states, cursor = tick_until_done(defs, instance, res)  # type: ignore[arg-type]
    assert instance.has_dynamic_partition(f"{PREFIX}_batch_jobs", job_id)
    (request,) = requests
    assert request.job_name == f"finish_{PREFIX}" and request.partition_key == job_id
    assert [k.to_user_string() for k in request.asset_selection] == [f"{PREFIX}/batch_job"]

    finished = run_request(defs, instance, request)
    assert finished.success, failure_text(finished)
    steps = {e.step_key for e in finished.all_events if e.is_step_success}
    assert steps == {f"{PREFIX}__batch_job"}  # no predictions step
    mat = instance.get_latest_materialization_event(dg.AssetKey([PREFIX, "batch_job"]))
    assert mat is not None and mat.asset_materialization.partition == job_id
    assert mat.asset_materialization.metadata["state"].value == "SUCCEEDED"
    engine = res["batch_engine"].get_engine()  # type: ignore[attr-defined]
    status = engine.get_job(job_id=job_id)
    assert status.state == JobState.SUCCEEDED and len(status.tasks) == 2

    # the container's output: every staged barcode once, checked by the GS1 rule
    codes = pq.read_table(staged / "input.parquet")["code"].to_pylist()
    parts = sorted((staged / "output").glob("part-*.parquet"))
    assert [p.name for p in parts] == ["part-00000.parquet", "part-00001.parquet"]
    rows = [r for p in parts for r in pq.read_table(p).to_pylist()]
    assert sorted(r["code"] for r in rows) == sorted(codes)
    assert all(r["valid"] == gs1_ok(r["code"]) for r in rows)
    assert any(r["valid"] for r in rows)

    # settled without an import: nothing more is requested, with or without the cursor
    for cur in (cursor, None):
        later = tick(defs, instance, res, cur)  # type: ignore[arg-type]
        assert not later.run_requests and not later.asset_events


def test_the_core_never_names_the_second_job_type() -> None:
    """The fixture needs no line of robotoff_batch/: the core does not mention it."""
    for path in (PROJECT_ROOT / "robotoff_batch").rglob("*"):
        if path.suffix in (".py", ".sql", ".yaml"):
            text = path.read_text(encoding="utf-8").lower()
            assert NAME not in text and PREFIX not in text, path


def test_without_the_setting_the_fixture_is_not_loaded(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv(PACKAGES_ENV, raising=False)
    assert NAME not in load_registry()
    monkeypatch.setenv(PACKAGES_ENV, f"{PACKAGE}, ")
    assert NAME in load_registry()
    monkeypatch.setenv(PACKAGES_ENV, "tests.fixtures.no_such_package")
    with pytest.raises(RegistryError, match="cannot import job-type package"):
        load_registry()


def test_the_guide_is_the_fixture() -> None:
    """docs/adding-a-job-type.md quotes the fixture's files and every field of JobType."""
    guide = (PROJECT_ROOT / "docs" / "adding-a-job-type.md").read_text(encoding="utf-8")
    quoted = set(re.findall(r"`(tests/fixtures/job_types/[^`]+)`", guide))
    files = {
        str(p.relative_to(PROJECT_ROOT))
        for p in FIXTURE_DIR.rglob("*")
        if p.is_file() and "__pycache__" not in p.parts
    }
    assert quoted == files
    fields = [n for n in JobType.__annotations__ if not n.startswith("_")] + ["extract"]
    assert {"launch_config", "staged_files", "import_spec", "local_command"} <= set(fields)
    for field in fields:
        assert re.search(rf"`{field}[`(]", guide), f"the guide does not say what {field} is"
    assert PACKAGES_ENV in guide


def test_a_mistyped_launch_parameter_is_refused_by_the_launchpad(
    tmp_path: Path, instance: dg.DagsterInstance, pg_db: str
) -> None:
    """``limit: true`` in the UI's run config is refused, not read as 1; nothing launches."""
    defs = build_definitions(resources=resources(tmp_path, pg_db))
    launch = defs.resolve_job_def(f"launch_{PREFIX}")
    with pytest.raises(dg.DagsterInvalidConfigError, match="limit"):
        launch.execute_in_process(
            run_config={"ops": {launch_op_name(PREFIX): {"config": {"limit": True}}}},
            instance=instance,
        )
    assert not (tmp_path / "batch").exists() or not list((tmp_path / "batch").rglob("*.json"))


def test_the_cli_launches_and_follows_the_second_job_type(
    tmp_path: Path, pg_db: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """``robotoff-batch launch barcode-check ... --wait``: the CLI needs no change either."""
    from typer.testing import CliRunner

    from robotoff_batch.cli import app

    monkeypatch.setenv(PACKAGES_ENV, PACKAGE)
    monkeypatch.setenv("ROBOTOFF_BATCH_HOME", str(tmp_path / "home"))
    monkeypatch.setenv("DAGSTER_HOME", str(tmp_path / "dagster_home"))
    monkeypatch.setenv("ROBOTOFF_DATABASE_URL", pg_db)
    monkeypatch.delenv("ROBOTOFF_BATCH_ENV", raising=False)
    helped = CliRunner().invoke(app, ["launch", "--help"])
    assert "Launch parameters of barcode-check:" in helped.output
    validated = CliRunner().invoke(app, ["config", "validate"])
    assert validated.exit_code == 0 and "barcode-check.yaml: barcode-check" in validated.output
    shown = CliRunner().invoke(app, ["config", "show", NAME])
    assert shown.exit_code == 0 and "e2-standard-2" in shown.output
    out = CliRunner().invoke(app, ["launch", NAME, "limit=7", "--wait", "--timeout-s", "120"])
    assert out.exit_code == 0, out.output
    assert "(7 products)" in out.output
    assert "SUCCEEDED" in out.output and "its job type imports nothing" in out.output
