"""The Cloud Batch request: every config field reaches it; job ids are valid and unique."""

from __future__ import annotations

import json
import sys
import time
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest
from google.cloud import batch_v1
from typer.testing import CliRunner

from robotoff_batch.batch.engine import JobState, JobStatus
from robotoff_batch.batch.local import LocalBatchEngine
from robotoff_batch.batch.request import (
    JOB_ID_PATTERN,
    RequestError,
    build_create_job_request,
    make_job_id,
    request_to_json,
)
from robotoff_batch.cli import app
from robotoff_batch.config.loader import load_job_config
from robotoff_batch.config.models import BatchResources, JobConfig
from robotoff_batch.paths import JOB_CONFIGS_DIR

SPELLCHECK = load_job_config(JOB_CONFIGS_DIR / "ingredients-spellcheck.yaml").config
JOB_ID = "ingredients-spellcheck-20261124-101500-abc123"

# A valid alternative value for every BatchResources field. A new field without an entry here
# fails test_every_resources_field_has_a_mutation: add one, and prove it reaches the request.
MUTATIONS: dict[str, dict[str, Any]] = {
    "location": {
        "location": "us-central1",
        "container_image_uri": "us-central1-docker.pkg.dev/robotoff/robotoff-batch/x:1",
        "subnetwork": "projects/robotoff/regions/us-central1/subnetworks/default",
    },
    "machine_type": {"machine_type": "g2-standard-12"},
    "accelerators_type": {
        "machine_type": "a2-highgpu-1g",
        "accelerators_type": "nvidia-tesla-a100",
    },
    "accelerators_count": {
        "machine_type": "g2-standard-24",
        "accelerators_count": 2,
        "cpu_milli": 8000,
    },
    "install_gpu_drivers": {
        "machine_type": "e2-standard-8",
        "accelerators_type": None,
        "accelerators_count": 0,
        "install_gpu_drivers": False,
    },
    "provisioning_model": {"provisioning_model": "SPOT"},
    "cpu_milli": {"cpu_milli": 4000},
    "memory_mib": {"memory_mib": 16000},
    "boot_disk_gb": {"boot_disk_gb": 50},
    "boot_image": {"boot_image": "projects/my-images/global/images/batch-debian-pinned-1"},
    "fail_fast_exit_codes": {"fail_fast_exit_codes": [2, 3]},
    "retry_timeouts": {"retry_timeouts": True},
    "network": {
        "network": "projects/robotoff/global/networks/batch",
        "subnetwork": "projects/robotoff/regions/europe-west4/subnetworks/batch",
    },
    "subnetwork": {"subnetwork": "projects/robotoff/regions/europe-west4/subnetworks/batch"},
    "no_external_ip_address": {"no_external_ip_address": True},
    "task_count": {"task_count": 4, "parallelism": 1, "max_run_duration": "6h"},
    "parallelism": {"task_count": 4, "parallelism": 2, "max_run_duration": "6h"},
    "max_retry_count": {"max_retry_count": 3},
    "max_run_duration": {"max_run_duration": "12h"},
    "container_image_uri": {"container_image_uri": "europe-docker.pkg.dev/p/r/other:1.0"},
    "entrypoint": {"entrypoint": "python /app/main.py"},
    "commands": {"commands": ["--batch-size", "64"]},
    "environment": {"environment": {"MODEL": "x"}},
    "secret_environment": {
        "secret_environment": {"BATCH_JOB_KEY": "projects/robotoff/secrets/key/versions/latest"}
    },
    "labels": {"labels": {"team": "data"}},
    "service_account_email": {"service_account_email": "batch@robotoff.iam.gserviceaccount.com"},
}
# JobConfig fields outside `resources` act before submission, not in Cloud Batch.
NOT_IN_REQUEST = {
    "description": "for people reading the config",
    "max_cost_usd": "checked at validation, refuses the config before any request exists",
    "schedule": "creates a Dagster schedule",
    "max_pending_duration": "read by the follower: a job QUEUED/SCHEDULED longer is reported",
    "cancel_when_stuck": "read by the follower: cancels a job stuck past max_pending_duration",
    "fallbacks": "alternatives: each merged onto resources, built into its fallback job's request",
    "fallback_after": "read by the follower: when a job waiting on capacity falls back",
    "fallback_after_preemptions": "read by the follower: when a preempted job falls back",
}


def build(resources: BatchResources, **kwargs: Any) -> batch_v1.CreateJobRequest:
    args: dict[str, Any] = {
        "job_type": "ingredients-spellcheck",
        "job_id": JOB_ID,
        "project": "robotoff",
        "environment": {"INPUT_FILE_PATH": "gs://bucket/in.parquet"},
        "labels": {"dagster-run-id": "0f9c-RUN"},
    }
    args.update(kwargs)
    return build_create_job_request(resources, **args)


def mutated(changes: dict[str, Any]) -> BatchResources:
    data = SPELLCHECK.resources.model_dump()
    data.update(changes)
    return BatchResources.model_validate(data)


def test_every_resources_field_has_a_mutation() -> None:
    assert set(MUTATIONS) == set(BatchResources.model_fields)
    assert set(JobConfig.model_fields) == {"resources"} | set(NOT_IN_REQUEST)


@pytest.mark.parametrize("field", sorted(MUTATIONS))
def test_every_config_field_reaches_the_request(field: str) -> None:
    before = json.loads(request_to_json(build(SPELLCHECK.resources)))
    changed = mutated(MUTATIONS[field])
    assert getattr(changed, field) != getattr(SPELLCHECK.resources, field)
    after = json.loads(request_to_json(build(changed)))
    assert before != after, f"changing {field} does not change the CreateJobRequest"


# Where each BatchResources field lands in the request's JSON, with its value for the
# spellcheck config and for the field's mutation (None: absent, the proto default). A field the
# builder dropped or misplaced fails test_each_field_has_its_value_at_its_json_path.
INSTANCE = "job.allocationPolicy.instances.0"
P = INSTANCE + ".policy"
T = "job.taskGroups.0"
S = T + ".taskSpec"
C = S + ".runnables.0.container"
N = "job.allocationPolicy.network.networkInterfaces.0"
JSON_PATHS: dict[str, dict[str, tuple[Any, Any]]] = {
    "location": {
        "parent": (
            "projects/robotoff/locations/europe-west4",
            "projects/robotoff/locations/us-central1",
        ),
        "job.allocationPolicy.location.allowedLocations": (
            ["regions/europe-west4"],
            ["regions/us-central1"],
        ),
    },
    "machine_type": {
        P + ".machineType": ("g2-standard-8", "g2-standard-12"),
    },
    "accelerators_type": {
        P + ".accelerators.0.type": ("nvidia-l4", "nvidia-tesla-a100"),
    },
    "accelerators_count": {
        P + ".accelerators.0.count": ("1", "2"),
    },
    "install_gpu_drivers": {
        INSTANCE + ".installGpuDrivers": (True, None),
        C + ".options": ("--gpus all", None),
    },
    "provisioning_model": {
        P + ".provisioningModel": ("STANDARD", "SPOT"),
    },
    "cpu_milli": {
        S + ".computeResource.cpuMilli": ("8000", "4000"),
    },
    "memory_mib": {
        S + ".computeResource.memoryMib": ("32000", "16000"),
    },
    "boot_disk_gb": {
        P + ".bootDisk.sizeGb": ("100", "50"),
    },
    "boot_image": {
        P + ".bootDisk.image": (
            "batch-debian",
            "projects/my-images/global/images/batch-debian-pinned-1",
        ),
    },
    "fail_fast_exit_codes": {
        S + ".lifecyclePolicies.0.actionCondition.exitCodes": ([2, 50005], [2, 3, 50005]),
    },
    "retry_timeouts": {
        S + ".lifecyclePolicies.0.actionCondition.exitCodes": ([2, 50005], [2]),
    },
    "network": {
        N + ".network": (
            "projects/robotoff/global/networks/default",
            "projects/robotoff/global/networks/batch",
        ),
    },
    "subnetwork": {
        N + ".subnetwork": (
            "projects/robotoff/regions/europe-west4/subnetworks/default",
            "projects/robotoff/regions/europe-west4/subnetworks/batch",
        ),
    },
    "no_external_ip_address": {
        N + ".noExternalIpAddress": (None, True),
    },
    "task_count": {
        T + ".taskCount": ("1", "4"),
    },
    "parallelism": {
        T + ".parallelism": ("1", "2"),
    },
    "max_retry_count": {
        S + ".maxRetryCount": (1, 3),
    },
    "max_run_duration": {
        S + ".maxRunDuration": ("86400s", "43200s"),
    },
    "container_image_uri": {
        C + ".imageUri": (
            "europe-west4-docker.pkg.dev/robotoff/robotoff-batch/ingredients-spellcheck:0.1.0",
            "europe-docker.pkg.dev/p/r/other:1.0",
        ),
    },
    "entrypoint": {
        C + ".entrypoint": (None, "python /app/main.py"),
    },
    "commands": {
        C + ".commands": (None, ["--batch-size", "64"]),
    },
    "environment": {
        S + ".environment.variables.MODEL": (None, "x"),
    },
    "secret_environment": {
        S + ".environment.secretVariables.BATCH_JOB_KEY": (
            None,
            "projects/robotoff/secrets/key/versions/latest",
        ),
    },
    "labels": {
        "job.labels.team": ("robotoff", "data"),
        "job.allocationPolicy.labels.team": ("robotoff", "data"),
    },
    "service_account_email": {
        "job.allocationPolicy.serviceAccount.email": (
            "robotoff-batch-jobs@robotoff.iam.gserviceaccount.com",
            "batch@robotoff.iam.gserviceaccount.com",
        ),
    },
}


def at(data: Any, path: str) -> Any:
    """The value at a dotted path (list indexes as numbers); None when absent."""
    for part in path.split("."):
        if isinstance(data, list):
            data = data[int(part)] if int(part) < len(data) else None
        elif isinstance(data, dict):
            data = data.get(part)
        if data is None:
            return None
    return data


def test_every_resources_field_has_its_json_paths() -> None:
    assert set(JSON_PATHS) == set(MUTATIONS)


@pytest.mark.parametrize("field", sorted(JSON_PATHS))
def test_each_field_has_its_value_at_its_json_path(field: str) -> None:
    before = json.loads(request_to_json(build(SPELLCHECK.resources)))
    after = json.loads(request_to_json(build(mutated(MUTATIONS[field]))))
    for path, (base, changed) in JSON_PATHS[field].items():
        assert at(before, path) == base, f"{field}: {path} of the spellcheck request"
        assert at(after, path) == changed, f"{field} mutated: {path}"


def test_spellcheck_request_carries_gpu_parallelism_retries_disk_and_labels() -> None:
    request = build(SPELLCHECK.resources)
    job = request.job
    instance = job.allocation_policy.instances[0]
    assert [(a.type_, a.count) for a in instance.policy.accelerators] == [("nvidia-l4", 1)]
    assert instance.install_gpu_drivers is True
    assert instance.policy.machine_type == "g2-standard-8"
    group = job.task_groups[0]
    assert (group.task_count, group.parallelism) == (1, 1)
    assert group.task_spec.max_retry_count == 1
    assert group.task_spec.max_run_duration.total_seconds() == 86400
    # The VM's boot disk is set exactly; boot_disk_mib would be an *extra* disk per task.
    assert group.task_spec.compute_resource.boot_disk_mib == 0
    boot = instance.policy.boot_disk
    assert (boot.image, boot.size_gb, boot.type_) == ("batch-debian", 100, "pd-balanced")
    assert group.task_spec.compute_resource.memory_mib == 32_000
    assert job.labels["job-type"] == "ingredients-spellcheck"
    assert job.labels["app"] == "robotoff-batch"
    assert job.labels["dagster-run-id"] == "0f9c-run"  # coerced to a valid label value
    assert job.logs_policy.destination == batch_v1.LogsPolicy.Destination.CLOUD_LOGGING
    assert request.parent == "projects/robotoff/locations/europe-west4"
    assert list(job.allocation_policy.location.allowed_locations) == ["regions/europe-west4"]


def test_secrets_travel_as_secret_manager_references_only() -> None:
    ref = "projects/robotoff/secrets/batch-job-key/versions/latest"
    resources = mutated({"secret_environment": {"BATCH_JOB_KEY": ref}})
    env = build(resources).job.task_groups[0].task_spec.environment
    assert dict(env.secret_variables) == {"BATCH_JOB_KEY": ref}
    assert "BATCH_JOB_KEY" not in env.variables
    with pytest.raises(RequestError, match="both as plain and as secret"):
        build(resources, environment={"BATCH_JOB_KEY": "plain"})


def test_retries_fail_fast_only_on_the_containers_permanent_errors() -> None:
    """A RETRY_TASK policy would fail every unlisted code at once (max_retry_count unused):
    the one policy is FAIL_TASK on the container's permanent errors, for SPOT and STANDARD."""
    for model in ("SPOT", "STANDARD"):
        spec = build(mutated({"provisioning_model": model})).job.task_groups[0].task_spec
        (policy,) = spec.lifecycle_policies
        assert policy.action == batch_v1.LifecyclePolicy.Action.FAIL_TASK
        # ...and a task that ran past max_run_duration (50005) is not retried either
        assert list(policy.action_condition.exit_codes) == [2, 50005]
        assert spec.max_retry_count == 1
    no_retry = build(mutated({"max_retry_count": 0})).job.task_groups[0].task_spec
    assert not no_retry.lifecycle_policies
    timeouts = build(mutated({"fail_fast_exit_codes": []})).job.task_groups[0].task_spec
    assert list(timeouts.lifecycle_policies[0].action_condition.exit_codes) == [50005]
    everything = build(mutated({"fail_fast_exit_codes": [], "retry_timeouts": True}))
    assert not everything.job.task_groups[0].task_spec.lifecycle_policies
    asked = build(mutated({"retry_timeouts": True})).job.task_groups[0].task_spec
    assert list(asked.lifecycle_policies[0].action_condition.exit_codes) == [2]


@pytest.mark.parametrize(("retry_timeouts", "attempts"), [(False, 1), (True, 2)])
def test_a_timeout_is_retried_only_when_the_config_asks(
    tmp_path: Path, retry_timeouts: bool, attempts: int
) -> None:
    """The built request on the local runner (Batch's lifecycle semantics): a task killed at
    max_run_duration (50005) fails at once, unless retry_timeouts."""
    from google.protobuf import duration_pb2

    fixtures = Path(__file__).parent / "fixtures"
    image = SPELLCHECK.resources.container_image_uri
    out = tmp_path / "out"
    out.mkdir()
    engine = LocalBatchEngine(
        state_dir=tmp_path / "local-batch",
        commands_by_image={image: [sys.executable, str(fixtures / "task_sleep_forever.py")]},
        poll_interval_s=0.05,
    )
    try:
        request = build(
            mutated({"retry_timeouts": retry_timeouts}),
            job_id="too-long",
            environment={"OUT_DIR": str(out)},
        )
        spec = request.job.task_groups[0].task_spec
        spec.max_run_duration = duration_pb2.Duration(seconds=1)  # the config's minimum is 1m
        engine.submit(request=request)
        status = _wait_terminal(engine, "too-long")
        assert status.state is JobState.FAILED
        assert [(t.exit_code, t.attempts) for t in status.tasks] == [(50005, attempts)]
    finally:
        engine.close()


def test_gpu_reaches_the_container() -> None:
    """dsub/Nextflow: --gpus all and the driver's directories; a CPU job gets neither."""
    container = build(SPELLCHECK.resources).job.task_groups[0].task_spec.runnables[0].container
    assert container.options == "--gpus all"
    assert list(container.volumes) == [
        "/var/lib/nvidia/lib64:/usr/local/nvidia/lib64",
        "/var/lib/nvidia/bin:/usr/local/nvidia/bin",
    ]
    cpu = mutated(MUTATIONS["install_gpu_drivers"])
    cpu_container = build(cpu).job.task_groups[0].task_spec.runnables[0].container
    assert (cpu_container.options, list(cpu_container.volumes)) == ("", [])


def test_service_account_and_network_reach_the_allocation_policy() -> None:
    policy = build(SPELLCHECK.resources).job.allocation_policy
    assert policy.service_account.email == SPELLCHECK.resources.service_account_email
    (interface,) = policy.network.network_interfaces
    assert interface.network == "projects/robotoff/global/networks/default"
    assert interface.subnetwork == "projects/robotoff/regions/europe-west4/subnetworks/default"
    assert interface.no_external_ip_address is False


def test_labels_reach_the_vms_disks_and_gpus() -> None:
    job = build(SPELLCHECK.resources).job
    assert dict(job.allocation_policy.labels) == dict(job.labels)
    assert job.allocation_policy.labels["team"] == "robotoff"
    assert job.allocation_policy.labels["dagster-run-id"] == "0f9c-run"


@pytest.mark.parametrize("key", ["goog-billing", "google-x"])
def test_reserved_label_keys_are_refused(key: str) -> None:
    with pytest.raises(RequestError, match="Google's"):
        build(SPELLCHECK.resources, labels={key: "x"})
    with pytest.raises(RequestError, match="does not match"):
        build(SPELLCHECK.resources, labels={"Bad Key": "x"})


def test_the_builder_is_pure() -> None:
    assert request_to_json(build(SPELLCHECK.resources)) == request_to_json(
        build(SPELLCHECK.resources)
    )


def test_app_and_job_type_labels_cannot_be_overridden() -> None:
    labels = build(SPELLCHECK.resources, labels={"app": "x", "job-type": "y"}).job.labels
    assert (labels["app"], labels["job-type"]) == ("robotoff-batch", "ingredients-spellcheck")


def test_invalid_job_id_is_refused() -> None:
    with pytest.raises(RequestError):
        build(SPELLCHECK.resources, job_id="Bad_Id")


def test_job_ids_are_valid_sortable_and_unique_within_a_second() -> None:
    now = datetime(2026, 11, 24, 10, 15, 0, tzinfo=UTC)
    ids = {make_job_id("ingredients-spellcheck", launched_at=now) for _ in range(200)}
    assert len(ids) == 200
    for job_id in ids:
        assert JOB_ID_PATTERN.match(job_id)
        assert job_id.startswith("ingredients-spellcheck-20261124-101500-")
    assert make_job_id("a", launched_at=now, nonce="run-1") == make_job_id(
        "a", launched_at=now, nonce="run-1"
    )
    assert make_job_id("a", launched_at=now, nonce="run-1") != make_job_id(
        "a", launched_at=now, nonce="run-2"
    )
    long_id = make_job_id("x" * 80, launched_at=now)
    assert len(long_id) <= 63 and JOB_ID_PATTERN.match(long_id)


def test_cli_show_request_is_a_dry_run_with_the_gpu() -> None:
    result = CliRunner().invoke(app, ["config", "show", "ingredients-spellcheck", "--request"])
    assert result.exit_code == 0, result.output
    payload = json.loads(result.output[result.output.index('{\n  "job"') :])
    policy = payload["job"]["allocationPolicy"]["instances"][0]["policy"]
    assert policy["accelerators"] == [{"count": "1", "type": "nvidia-l4"}]
    group = payload["job"]["taskGroups"][0]
    assert (group["parallelism"], group["taskCount"]) == ("1", "1")
    assert group["taskSpec"]["maxRetryCount"] == 1
    assert group["taskSpec"]["maxRunDuration"] == "86400s"
    assert "worst-case cost" in result.output


def test_cli_show_unknown_job_type() -> None:
    result = CliRunner().invoke(app, ["config", "show", "nope"])
    assert result.exit_code == 1
    assert "unknown job type 'nope'" in result.output


@pytest.mark.parametrize("model", ["SPOT", "STANDARD"])
def test_a_crash_is_retried_up_to_max_retry_count(tmp_path: Path, model: str) -> None:
    """The built request, run by the local runner (Batch's lifecycle semantics): a container
    that crashes once (exit 7) succeeds on its retry; exit 2 (bad input) is not retried."""
    fixtures = Path(__file__).parent / "fixtures"
    image = SPELLCHECK.resources.container_image_uri
    out = tmp_path / "out"
    out.mkdir()
    engine = LocalBatchEngine(
        state_dir=tmp_path / "local-batch",
        commands_by_image={image: [sys.executable, str(fixtures / "task_flaky.py")]},
        poll_interval_s=0.05,
    )
    try:
        resources = mutated({"provisioning_model": model})
        env = {"OUT_DIR": str(out), "FAIL_TIMES": "1"}
        engine.submit(request=build(resources, job_id=f"flaky-{model.lower()}", environment=env))
        status = _wait_terminal(engine, f"flaky-{model.lower()}")
        assert status.state is JobState.SUCCEEDED, status.failure_summary
        assert (out / "count-0").read_text() == "2"

        bad = tmp_path / "bad"
        bad.mkdir()
        engine.commands_by_image[image] = [sys.executable, "-c", "import sys; sys.exit(2)"]
        engine.submit(request=build(resources, job_id=f"bad-{model.lower()}", environment={}))
        failed = _wait_terminal(engine, f"bad-{model.lower()}")
        assert failed.state is JobState.FAILED
        assert [(t.exit_code, t.attempts) for t in failed.tasks] == [(2, 1)]
    finally:
        engine.close()


def _wait_terminal(engine: LocalBatchEngine, job_id: str) -> JobStatus:
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        status = engine.get_job(job_id=job_id)
        if status.state.is_terminal:
            return status
        time.sleep(0.05)
    raise AssertionError(f"{job_id} did not finish")
