"""Job-type configuration: the shipped configs pass, every kind of bad input is refused clearly."""

from __future__ import annotations

import copy
from pathlib import Path
from typing import Any

import pytest
import yaml
from typer.testing import CliRunner

from robotoff_batch.cli import app
from robotoff_batch.config.catalog import load_catalog
from robotoff_batch.config.loader import JobConfigError, config_paths, load_job_config
from robotoff_batch.config.models import worst_case_cost
from robotoff_batch.paths import JOB_CONFIGS_DIR

SPELLCHECK = JOB_CONFIGS_DIR / "ingredients-spellcheck.yaml"
runner = CliRunner()


def good() -> dict[str, Any]:
    return yaml.safe_load(SPELLCHECK.read_text())


def write(tmp_path: Path, data: Any, name: str = "my-job.yaml") -> Path:
    path = tmp_path / name
    path.write_text(data if isinstance(data, str) else yaml.safe_dump(data, sort_keys=False))
    return path


def refused(path: Path) -> JobConfigError:
    with pytest.raises(JobConfigError) as info:
        load_job_config(path)
    return info.value


def with_resources(**changes: Any) -> dict[str, Any]:
    data = copy.deepcopy(good())
    data["resources"].update(changes)
    return data


def test_shipped_configs_are_valid() -> None:
    paths = config_paths()
    assert SPELLCHECK in paths
    for path in paths:
        item = load_job_config(path)
        assert item.config.cost.total_usd <= item.config.max_cost_usd


def test_spellcheck_config_has_robotoff_production_values() -> None:
    res = load_job_config(SPELLCHECK).config.resources
    assert (res.location, res.machine_type) == ("europe-west4", "g2-standard-8")
    assert (res.accelerators_type, res.accelerators_count) == ("nvidia-l4", 1)
    assert res.install_gpu_drivers is True
    assert (res.task_count, res.parallelism, res.max_retry_count) == (1, 1, 1)
    assert res.max_run_duration_s == 24 * 3600
    assert (res.boot_disk_gb, res.memory_mib) == (100, 32_000)
    assert isinstance(res.task_count, int)


def test_spellcheck_config_is_ready_for_production() -> None:
    """What docs/production.md sets up is what the shipped config asks for (issue 8)."""
    config = load_job_config(SPELLCHECK).config
    res = config.resources
    docs = (SPELLCHECK.parents[1] / "docs" / "production.md").read_text()
    # 1. the VMs run as the dedicated jobs' account the docs create and grant roles to
    assert res.service_account_email == "robotoff-batch-jobs@robotoff.iam.gserviceaccount.com"
    assert "JOB_SA=robotoff-batch-jobs@$PROJECT.iam.gserviceaccount.com" in docs
    assert res.network == "projects/robotoff/global/networks/default"
    assert res.subnetwork and "/regions/europe-west4/" in res.subnetwork
    # 2. a pinned boot image with Docker and the NVIDIA toolkit, a boot disk for the image
    assert (res.boot_image, res.boot_disk_gb) == ("batch-debian", 100)
    # 8. this project's image, in the jobs' region, named after the job type
    assert res.container_image_uri.startswith(
        "europe-west4-docker.pkg.dev/robotoff/robotoff-batch/ingredients-spellcheck:"
    )
    assert (res.fail_fast_exit_codes, config.max_pending_duration_s) == ([2], 6 * 3600)


def test_worst_case_cost_arithmetic() -> None:
    cost = worst_case_cost(load_job_config(SPELLCHECK).config.resources)
    assert cost.total_usd == pytest.approx(0.896306 * 24 * 1 * 2)
    assert "$0.896306/h" in cost.explain() and "= $43.02" in cost.explain()


def test_spot_is_discounted_and_n1_gpus_are_added() -> None:
    data = with_resources(
        machine_type="n1-standard-8",
        accelerators_type="nvidia-tesla-t4",
        accelerators_count=2,
        provisioning_model="SPOT",
        cpu_milli=4000,
        memory_mib=16000,
    )
    cfg = load_job_config(write(Path(pytest.importorskip("tempfile").mkdtemp()), data)).config
    catalog = load_catalog()
    hourly = (
        catalog.machine_types["n1-standard-8"].usd_per_hour
        + 2 * (catalog.accelerator_prices["nvidia-tesla-t4"])
    )
    assert cfg.cost.total_usd == pytest.approx(hourly * catalog.spot_price_fraction * 24 * 2)
    assert "SPOT" in cfg.cost.explain()


@pytest.mark.parametrize(
    ("content", "expected"),
    [
        ("resources: [1, 2\n", "YAML syntax error"),
        ("", "the file is empty"),
        ("- a\n- b\n", "must be a mapping"),
    ],
    ids=["yaml-syntax", "empty", "list"],
)
def test_malformed_files(tmp_path: Path, content: str, expected: str) -> None:
    err = refused(write(tmp_path, content))
    assert expected in str(err)
    assert str(tmp_path / "my-job.yaml") in str(err)


def test_yaml_syntax_error_names_the_line(tmp_path: Path) -> None:
    text = SPELLCHECK.read_text().replace("task_count: 1", "task_count: [1")
    err = refused(write(tmp_path, text))
    assert "YAML syntax error" in str(err)
    assert err.problems[0].line is not None


def _line_of(path: Path, key: str) -> int:
    for number, line in enumerate(path.read_text().splitlines(), start=1):
        if line.strip().startswith(f"{key}:"):
            return number
    raise AssertionError(key)


# (change to resources, field named in the error, words in the message)
BAD_RESOURCES = {
    "unknown-field": ({"gpu": "yes"}, "resources.gpu", "unknown field"),
    "missing-image": ({"container_image_uri": None}, "resources.container_image_uri", ""),
    "zero-tasks": ({"task_count": 0}, "resources.task_count", "greater than or equal to 1"),
    "negative-retries": ({"max_retry_count": -1}, "resources.max_retry_count", "greater"),
    "parallelism-above-tasks": (
        {"task_count": 2, "parallelism": 3},
        "resources.parallelism",
        "parallelism 3 is above task_count 2",
    ),
    "gpu-wrong-family": (
        {"machine_type": "n1-standard-8", "accelerators_type": "nvidia-l4", "memory_mib": 16000},
        "resources.accelerators_type",
        "cannot be attached to a n1 machine",
    ),
    "gpu-not-in-location": (
        {"location": "europe-west9"},
        "resources.accelerators_type",
        "not offered in europe-west9",
    ),
    "unknown-location": ({"location": "europe-west42"}, "resources.location", "unknown"),
    "malformed-duration": (
        {"max_run_duration": "24 hours"},
        "resources.max_run_duration",
        "not a duration",
    ),
    "duration-too-long": ({"max_run_duration": "30d"}, "resources.max_run_duration", "7 days"),
    "absurd-task-count": ({"task_count": 10**12}, "resources.task_count", "less than or equal"),
    "absurd-memory": ({"memory_mib": 10**9}, "resources.memory_mib", "less than or equal"),
    "string-count": ({"task_count": "1"}, "resources.task_count", "valid integer"),
    "string-memory": ({"memory_mib": "32000"}, "resources.memory_mib", "valid integer"),
    "float-count": ({"task_count": 1.5}, "resources.task_count", "integer"),
    "bool-count": ({"parallelism": True}, "resources.parallelism", "integer"),
    "no-gpu-drivers": ({"install_gpu_drivers": False}, "resources.install_gpu_drivers", "driver"),
    "more-memory-than-machine": ({"memory_mib": 64000}, "resources.memory_mib", "more than"),
    "unpriced-machine": ({"machine_type": "m3-ultramem-128"}, "resources.machine_type", "price"),
    "bad-provisioning": ({"provisioning_model": "CHEAP"}, "resources.provisioning_model", ""),
    "secret-in-plain-env": (
        {"environment": {"BATCH_JOB_KEY": "hunter2"}},
        "resources.environment",
        "secret_environment",
    ),
    "bad-secret-ref": (
        {"secret_environment": {"BATCH_JOB_KEY": "hunter2"}},
        "resources.secret_environment",
        "",
    ),
    "gpu-count-mismatch": ({"accelerators_count": 2}, "resources.accelerators_count", "exactly"),
    "image-in-another-region": (
        {"container_image_uri": "europe-west9-docker.pkg.dev/robotoff/gcf-artifacts/x:0.1.0"},
        "resources.container_image_uri",
        "the jobs run in europe-west4",
    ),
    "reserved-label": (
        {"labels": {"goog-billing": "x"}},
        "resources.labels",
        "Google reserves",
    ),
    "fail-fast-on-preemption": (
        {"fail_fast_exit_codes": [2, 50001]},
        "resources.fail_fast_exit_codes",
        "always retried",
    ),
    "subnetwork-in-another-region": (
        {"subnetwork": "projects/robotoff/regions/us-central1/subnetworks/default"},
        "resources.subnetwork",
        "is in us-central1",
    ),
    "no-external-ip-without-subnetwork": (
        {"no_external_ip_address": True, "subnetwork": None, "network": None},
        "resources.no_external_ip_address",
        "Cloud NAT",
    ),
    "bad-boot-image": ({"boot_image": "ubuntu-latest"}, "resources.boot_image", "pattern"),
    "g2-without-gpu": (
        {"accelerators_type": None, "accelerators_count": 0},
        "resources.accelerators_type",
        "carries 1 nvidia-l4",
    ),
}


@pytest.mark.parametrize("case", sorted(BAD_RESOURCES))
def test_bad_resources_are_refused_naming_file_field_and_line(tmp_path: Path, case: str) -> None:
    changes, field, words = BAD_RESOURCES[case]
    data = with_resources(**changes)
    if changes.get("container_image_uri", "") is None:
        del data["resources"]["container_image_uri"]
    path = write(tmp_path, data)
    err = refused(path)
    message = str(err)
    assert str(path) in message
    fields = [p.field for p in err.problems]
    assert any(f.startswith(field) for f in fields), (fields, message)
    assert words in message
    problem = next(p for p in err.problems if p.field.startswith(field))
    # the deepest key of the problem's field that is written in the file carries the line
    keys = [k for k in problem.field.split(".") if f"{k}:" in path.read_text()]
    expected_line = _line_of(path, keys[-1])
    assert problem.line == expected_line


def test_cost_over_ceiling_shows_the_arithmetic(tmp_path: Path) -> None:
    data = good()
    data["resources"]["task_count"] = 4
    data["resources"]["parallelism"] = 4
    path = write(tmp_path, data)
    err = refused(path)
    message = str(err)
    assert "max_cost_usd" in message
    # 0.896306 * 24 h * 4 tasks * 2 attempts
    assert "x 4 task(s) x 2 attempt(s)" in message and "$172.09" in message
    assert err.problems[0].line == _line_of(path, "max_cost_usd")


def test_string_ceiling_and_infinite_ceiling_are_refused(tmp_path: Path) -> None:
    for value in ("50", float("inf"), 10**9):
        data = good()
        data["max_cost_usd"] = value
        assert "max_cost_usd" in str(refused(write(tmp_path, data)))


def test_bad_schedule_is_refused(tmp_path: Path) -> None:
    data = good()
    data["schedule"] = "every monday"
    assert "cron" in str(refused(write(tmp_path, data)))


def test_bad_file_name_is_refused(tmp_path: Path) -> None:
    err = refused(write(tmp_path, good(), name="Bad_Name.yaml"))
    assert "job type" in str(err)


def test_cli_validate_passes_on_shipped_configs() -> None:
    result = runner.invoke(app, ["config", "validate"])
    assert result.exit_code == 0, result.output
    assert "ingredients-spellcheck" in result.output


def test_cli_validate_fails_clearly_and_lists_each_bad_file(tmp_path: Path) -> None:
    bad = write(tmp_path, with_resources(parallelism=5), name="bad-one.yaml")
    result = runner.invoke(app, ["config", "validate", str(SPELLCHECK), str(bad)])
    assert result.exit_code == 1
    assert "bad-one.yaml" in result.output and "parallelism 5 is above task_count 1" in (
        result.output
    )


# -- capacity fallbacks -----------------------------------------------------------------------

MULTI_REGION_IMAGE = "europe-docker.pkg.dev/robotoff/robotoff-batch/ingredients-spellcheck:0.1.0"
WEST1_SUBNET = "projects/robotoff/regions/europe-west1/subnetworks/default"


def with_fallbacks(*fallbacks: dict[str, Any], **top: Any) -> dict[str, Any]:
    data = with_resources(container_image_uri=MULTI_REGION_IMAGE)
    data.update(fallbacks=list(fallbacks), **top)
    return data


def test_a_config_with_alternatives_validates(tmp_path: Path) -> None:
    spot = {"location": "us-central1", "provisioning_model": "SPOT", "subnetwork": None}
    spot.update(network=None, container_image_uri=MULTI_REGION_IMAGE.replace("europe", "us", 1))
    path = write(
        tmp_path,
        with_fallbacks({"location": "europe-west1", "subnetwork": WEST1_SUBNET}, spot),
    )
    config = load_job_config(path).config
    first, second = config.alternatives()
    assert (first.location, first.subnetwork, first.machine_type) == (
        "europe-west1",
        WEST1_SUBNET,
        "g2-standard-8",
    )
    assert (second.location, second.provisioning_model.value) == ("us-central1", "SPOT")
    assert worst_case_cost(second).total_usd < worst_case_cost(config.resources).total_usd
    assert config.locations == ["europe-west4", "europe-west1", "us-central1"]
    assert config.fallback_after_s == 2 * 3600  # the default


@pytest.mark.parametrize(
    ("fallbacks", "field", "words"),
    [
        (  # over the ceiling: a2-highgpu-1g is $3.75/h x 24 h x 2 attempts
            [
                {"location": "europe-west1", "subnetwork": WEST1_SUBNET},
                {"machine_type": "a2-highgpu-1g", "accelerators_type": "nvidia-tesla-a100"},
            ],
            "fallbacks[1]",
            "$179.91 is above the ceiling max_cost_usd = $50.00",
        ),
        (  # the GPU is not offered in the alternative's region
            [{"location": "europe-north1", "subnetwork": None, "network": None}],
            "fallbacks[0].accelerators_type",
            "nvidia-l4 is not offered in europe-north1",
        ),
        ([{"zone": "europe-west1-b"}], "fallbacks[0].zone", "unknown field"),
        (  # the main subnetwork is in another region than the alternative
            [{"location": "europe-west1"}],
            "fallbacks[0].subnetwork",
            "is in europe-west4, the jobs run in europe-west1",
        ),
    ],
    ids=["over-ceiling", "gpu-not-in-region", "bad-field", "subnetwork-region"],
)
def test_a_bad_alternative_is_refused_naming_its_index(
    tmp_path: Path, fallbacks: list[dict[str, Any]], field: str, words: str
) -> None:
    err = refused(write(tmp_path, with_fallbacks(*fallbacks)))
    (problem,) = err.problems
    assert problem.field == field, str(err)
    assert words in problem.message
    assert problem.line is not None and problem.line >= _line_of(err.path, "fallbacks")


def test_fallback_after_must_be_shorter_than_max_pending_duration(tmp_path: Path) -> None:
    data = with_fallbacks(
        {"location": "europe-west1", "subnetwork": WEST1_SUBNET}, fallback_after="6h"
    )
    (problem,) = refused(write(tmp_path, data)).problems
    assert problem.field == "fallback_after" and "max_pending_duration" in problem.message
