"""``robotoff-batch smoke``: on the local runner (CPU stand-in, through the CLI) and on the fake
Cloud Batch service with the GCS emulator (the job type's real resources, GPU expected)."""

from __future__ import annotations

import json
import os
import stat
import sys
from pathlib import Path

import pytest
from typer.testing import CliRunner

from robotoff_batch.batch.cloud_batch import CloudBatchEngine
from robotoff_batch.batch.engine import JobState
from robotoff_batch.batch.local import LocalBatchEngine
from robotoff_batch.cli import app
from robotoff_batch.cli.smoke import GPU_NOT_VISIBLE_EXIT_CODE, build_smoke_request, run_smoke
from robotoff_batch.config.loader import load_job_config
from robotoff_batch.paths import JOB_CONFIGS_DIR
from robotoff_batch.staging.gcs import GCSStaging
from tests.fakes.fake_batch_service import FakeBatchService
from tests.fakes.settings import STAGING_BUCKET

pytest_plugins = ["tests.gcp_fixtures"]  # also registered by tests/conftest.py

SPELLCHECK = load_job_config(JOB_CONFIGS_DIR / "ingredients-spellcheck.yaml").config


def test_the_smoke_request_has_the_job_types_resources_but_one_short_task() -> None:
    request = build_smoke_request(
        SPELLCHECK.resources,
        job_type="ingredients-spellcheck",
        project="robotoff",
        probe_uri="gs://b/p/probe.json",
        job_id="smoke-ingredients-spellcheck-20261201-000000-abcdef",
        local=False,
    )
    job = request.job
    group = job.task_groups[0]
    assert (group.task_count, group.task_spec.max_retry_count) == (1, 0)
    assert group.task_spec.max_run_duration.total_seconds() == 900
    container = group.task_spec.runnables[0].container
    assert container.image_uri == SPELLCHECK.resources.container_image_uri
    assert container.options == "--gpus all" and container.entrypoint == "python3"
    policy = job.allocation_policy
    assert policy.instances[0].policy.accelerators[0].type_ == "nvidia-l4"
    assert policy.service_account.email == SPELLCHECK.resources.service_account_email
    # never followed (nor imported) by the job type's sensor
    assert job.labels["job-type"] == "ingredients-spellcheck-smoke"
    assert group.task_spec.environment.variables["SMOKE_EXPECT_GPU"] == "1"


def test_cli_smoke_on_the_local_runner(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("ROBOTOFF_BATCH_HOME", str(tmp_path))
    monkeypatch.delenv("ROBOTOFF_BATCH_ENV", raising=False)
    monkeypatch.delenv("ROBOTOFF_BATCH_STAGING_URI", raising=False)
    monkeypatch.setenv("PATH", os.defpath)  # no nvidia-smi: the CPU stand-in
    result = CliRunner().invoke(app, ["smoke", "ingredients-spellcheck", "--timeout-s", "60"])
    assert result.exit_code == 0, result.output
    assert "SUCCEEDED" in result.output
    assert "local runner: CPU stand-in" in result.output
    assert "bucket: the job wrote its probe" in result.output and "cost: $" in result.output
    probes = list(tmp_path.rglob("probe.json"))
    assert len(probes) == 1 and json.loads(probes[0].read_text())["gpu"] is None


def _fake_nvidia_smi(directory: Path) -> None:
    script = directory / "nvidia-smi"
    script.write_text("#!/bin/sh\necho 'NVIDIA L4, 550.90.07, 23034 MiB'\n")
    script.chmod(script.stat().st_mode | stat.S_IEXEC)


def test_smoke_on_cloud_batch_sees_the_gpu_and_the_bucket(
    cloud_batch_engine: CloudBatchEngine,
    fake_batch_service: FakeBatchService,
    local_batch_backend: LocalBatchEngine,
    gcs_staging: GCSStaging,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    # The fake plays the job type's image with the local Python (the image has python3);
    # a stand-in nvidia-smi answers as the L4's would.
    image = SPELLCHECK.resources.container_image_uri
    local_batch_backend.commands_by_image[image] = (sys.executable,)
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    _fake_nvidia_smi(bin_dir)
    monkeypatch.setenv("PATH", f"{bin_dir}{os.pathsep}{os.environ['PATH']}")

    result = run_smoke(
        job_type="ingredients-spellcheck",
        resources=SPELLCHECK.resources,
        engine=cloud_batch_engine,
        staging=gcs_staging,
        project="test-project",
        timeout_s=60,
        poll_s=0.1,
    )
    assert result.ok, "\n".join(result.report())
    assert result.probe is not None and result.probe["gpu"] == "NVIDIA L4, 550.90.07, 23034 MiB"
    report = "\n".join(result.report())
    assert "gpu: NVIDIA L4" in report and "cost: $" in report
    assert "logs: the task's line arrived in its log" in report
    assert fake_batch_service.logging.calls["ListLogEntries"] >= 1
    sent = fake_batch_service.requests["CreateJob"][0]
    assert sent.job.task_groups[0].task_spec.runnables[0].container.options == "--gpus all"
    blobs = [b.name for b in gcs_staging.client.list_blobs(STAGING_BUCKET)]
    assert blobs == [f"batch/ingredients-spellcheck-smoke/{result.job_id}/probe.json"]


def test_smoke_fails_clearly_when_the_container_cannot_see_the_gpu(
    cloud_batch_engine: CloudBatchEngine,
    local_batch_backend: LocalBatchEngine,
    gcs_staging: GCSStaging,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    local_batch_backend.commands_by_image[SPELLCHECK.resources.container_image_uri] = (
        sys.executable,
    )
    monkeypatch.setenv("PATH", os.defpath)  # no nvidia-smi anywhere
    result = run_smoke(
        job_type="ingredients-spellcheck",
        resources=SPELLCHECK.resources,
        engine=cloud_batch_engine,
        staging=gcs_staging,
        project="test-project",
        timeout_s=60,
        poll_s=0.1,
    )
    assert not result.ok and result.status.state is JobState.FAILED
    assert [t.exit_code for t in result.status.tasks] == [GPU_NOT_VISIBLE_EXIT_CODE]
    assert "the container cannot see the GPU" in "\n".join(result.report())


GPU_STAND_IN = Path(__file__).parent / "fixtures" / "gpu_stand_in"


def _nvidia_smi_with_driver(directory: Path, driver: str) -> None:
    script = directory / "nvidia-smi"
    script.write_text(
        "#!/bin/sh\n"
        f'case "$*" in *driver_version,*|*name,driver*) echo "NVIDIA L4, {driver}, 23034 MiB";;\n'
        f'  *driver_version*) echo "{driver}";; *) echo "NVIDIA L4, {driver}, 23034 MiB";; esac\n'
    )
    script.chmod(script.stat().st_mode | stat.S_IEXEC)


@pytest.mark.parametrize(
    ("driver", "ok", "hub_copy"),
    [("580.65.06", True, False), ("550.90.07", False, False), ("580.65.06", False, True)],
    ids=["good", "old driver", "weights from the hub"],
)
def test_smoke_runs_the_vllm_images_gpu_check(
    cloud_batch_engine: CloudBatchEngine,
    local_batch_backend: LocalBatchEngine,
    gcs_staging: GCSStaging,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    driver: str,
    ok: bool,
    hub_copy: bool,
) -> None:
    """The GPU job's smoke runs the container's own check (spellcheck_job/gpu_check.py, real)
    with the job's variables (hub off, the staged weights): here torch and vLLM are stand-ins
    (tests/fixtures/gpu_stand_in/), so what it verifies is the check's plumbing and its
    verdicts; on a real VM it is the first run of vLLM itself (docs/production.md)."""
    from robotoff_batch.job_types.ingredients_spellcheck import JOB_TYPE
    from robotoff_batch.paths import CONTAINERS_DIR

    image = SPELLCHECK.resources.container_image_uri
    local_batch_backend.commands_by_image[image] = (sys.executable,)
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    _nvidia_smi_with_driver(bin_dir, driver)
    monkeypatch.setenv("PATH", f"{bin_dir}{os.pathsep}{os.environ['PATH']}")
    container = CONTAINERS_DIR / "ingredients-spellcheck"
    monkeypatch.setenv("PYTHONPATH", f"{GPU_STAND_IN}{os.pathsep}{container}")
    weights = tmp_path / "staged"
    weights.mkdir()
    (weights / "model.safetensors").write_bytes(b"\0")
    revision = "0123456789abcdef0123456789abcdef01234567"
    (weights / "STAGED.json").write_text(json.dumps({"revision": revision}))
    hf_home = tmp_path / "hf"
    if hub_copy:  # a model the hub's cache holds: it was downloaded, not read from staging
        (hf_home / "hub" / "models--openfoodfacts--spellcheck-mistral-7b").mkdir(parents=True)
    environment = {
        "HF_HOME": str(hf_home),
        "HF_HUB_OFFLINE": "1",
        "SPELLCHECK_MODEL_REVISION": revision,
        "SPELLCHECK_WEIGHTS_URI": weights.as_uri(),
        "SPELLCHECK_WEIGHTS_DIR": str(tmp_path / "local-weights"),
    }
    argv = JOB_TYPE.smoke_check_argv(SPELLCHECK)
    assert argv == ["python3", "-m", "spellcheck_job.gpu_check"]
    result = run_smoke(
        job_type="ingredients-spellcheck",
        resources=SPELLCHECK.resources,
        engine=cloud_batch_engine,
        staging=gcs_staging,
        project="test-project",
        timeout_s=120,
        poll_s=0.1,
        task_environment=environment,
        check_argv=[sys.executable, *argv[1:]],  # the image's python3 is this one here
    )
    report = "\n".join(result.report())
    assert result.probe is not None, report
    check = result.probe["check"]
    assert isinstance(check, dict)
    if ok:
        assert result.ok, report
        for name in (
            "vllm version",
            "fp8 capable gpu",
            "hub off",
            "pinned weights",
            "loaded with fp8",
            "weights from the staged copy of the pinned revision",
            "nothing downloaded from the hub",
            "long text skipped by the model's tokenizer",
            "typo corrected, not truncated",
            "a batch of 64 generated",
        ):
            assert f"check: ok {name}" in report
        assert "check: texts_per_s" in report and "check: predictor_version llm-v1-" in report
    elif hub_copy:
        assert not result.ok and check["failed"] == ["nothing downloaded from the hub"]
        assert [t.exit_code for t in result.status.tasks] == [12]
    else:
        assert not result.ok and result.status.state is JobState.FAILED
        assert [t.exit_code for t in result.status.tasks] == [12]
        assert check["failed"] == ["driver >= 580"]
        assert "check: FAILED driver >= 580: 550" in report
        assert "the job type's own check in its image failed" in report


def test_smoke_fails_when_the_tasks_log_never_arrives(
    cloud_batch_engine: CloudBatchEngine,
    fake_batch_service: FakeBatchService,
    local_batch_backend: LocalBatchEngine,
    gcs_staging: GCSStaging,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """The jobs' account cannot write logs: the job succeeds, but its line never reaches
    Cloud Logging; the smoke says so (a failed job would show no log tail)."""
    local_batch_backend.commands_by_image[SPELLCHECK.resources.container_image_uri] = (
        sys.executable,
    )
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    _fake_nvidia_smi(bin_dir)
    monkeypatch.setenv("PATH", f"{bin_dir}{os.pathsep}{os.environ['PATH']}")
    fake_batch_service.logging.ingest_task_logs = False
    result = run_smoke(
        job_type="ingredients-spellcheck",
        resources=SPELLCHECK.resources,
        engine=cloud_batch_engine,
        staging=gcs_staging,
        project="test-project",
        timeout_s=60,
        poll_s=0.1,
        log_wait_s=1.0,
    )
    report = "\n".join(result.report())
    assert result.status.state is JobState.SUCCEEDED and result.probe is not None
    assert not result.ok and result.log_seen is False, report
    assert "logs: FAILED: the task's line never arrived" in report
    assert "roles/logging.logWriter" in report
