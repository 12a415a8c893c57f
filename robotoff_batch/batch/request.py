"""Build the Cloud Batch ``CreateJobRequest`` of a job, and its id.

One pure function: the same validated config, job id, environment and labels always give the
same request. Every engine (Cloud Batch, the local runner, the fake in tests) receives this
object, so what the dry run shows (``robotoff-batch config show --request``) is what runs.

Robotoff built an accelerator and never attached it to the allocation policy, and never set
``parallelism``; here both are set, and a test walks every config field to prove it reaches
the request.
"""

from __future__ import annotations

import hashlib
import re
import secrets
from collections.abc import Mapping
from datetime import UTC, datetime

from google.cloud import batch_v1
from google.protobuf import duration_pb2

from robotoff_batch.config.models import (
    LABEL_VALUE_PATTERN,
    SPOT_PREEMPTION_EXIT_CODE,
    BatchResources,
    ProvisioningModel,
)

JOB_ID_PATTERN = re.compile(r"^[a-z]([a-z0-9-]{0,61}[a-z0-9])?$")
APP_LABEL = ("app", "robotoff-batch")
JOB_TYPE_LABEL = "job-type"


class RequestError(ValueError):
    """The request cannot be built from these inputs (bad job id, clashing variable...)."""


def make_job_id(job_type: str, *, launched_at: datetime, nonce: str | None = None) -> str:
    """``<job-type>-<YYYYMMDD>-<HHMMSS>-<suffix>``: sortable, valid, unique per launch.

    The suffix is derived from ``nonce`` (e.g. the Dagster run id, so that a retried step of
    the same run gets the same id and re-attaches); without one it is random, so two launches
    in the same second differ.
    """
    seed = nonce if nonce is not None else secrets.token_hex(16)
    suffix = hashlib.sha256(seed.encode()).hexdigest()[:6]
    stamp = launched_at.astimezone(UTC).strftime("%Y%m%d-%H%M%S")
    tail = f"-{stamp}-{suffix}"
    head = re.sub(r"[^a-z0-9-]", "-", job_type.lower()).strip("-")[: 63 - len(tail)]
    job_id = f"{head}{tail}"
    if not head or not JOB_ID_PATTERN.match(job_id):
        raise RequestError(f"cannot make a valid job id from job type {job_type!r}")
    return job_id


def label_value(value: str) -> str:
    """Coerce a string into a valid GCP label value (lowercase, [a-z0-9_-], <= 63 chars)."""
    cleaned = re.sub(r"[^a-z0-9_-]", "-", value.lower())[:63]
    assert re.match(LABEL_VALUE_PATTERN, cleaned)
    return cleaned


def job_labels(
    *, job_type: str, config_labels: Mapping[str, str], extra: Mapping[str, str]
) -> dict[str, str]:
    """The labels every job carries: app and job type first, they cannot be overridden."""
    labels = {**config_labels, **{k: label_value(v) for k, v in extra.items()}}
    labels[APP_LABEL[0]] = APP_LABEL[1]
    labels[JOB_TYPE_LABEL] = label_value(job_type)
    return labels


def build_create_job_request(
    resources: BatchResources,
    *,
    job_type: str,
    job_id: str,
    project: str,
    environment: Mapping[str, str],
    labels: Mapping[str, str],
) -> batch_v1.CreateJobRequest:
    """Turn a validated config and one launch's values into the Cloud Batch request.

    ``environment`` holds the launch's non-secret variables (input/output URIs, webhook URL);
    they are merged over the config's ``environment``. Secrets only ever travel as Secret
    Manager references from ``resources.secret_environment``.
    """
    if not JOB_ID_PATTERN.match(job_id):
        raise RequestError(f"job id {job_id!r} does not match {JOB_ID_PATTERN.pattern}")
    clash = set(environment) & set(resources.secret_environment)
    if clash:
        raise RequestError(f"variables set both as plain and as secret: {sorted(clash)}")

    container = batch_v1.Runnable.Container(
        image_uri=resources.container_image_uri,
        commands=list(resources.commands),
    )
    if resources.entrypoint is not None:
        container.entrypoint = resources.entrypoint

    task_spec = batch_v1.TaskSpec(
        runnables=[batch_v1.Runnable(container=container)],
        compute_resource=batch_v1.ComputeResource(
            cpu_milli=resources.cpu_milli,
            memory_mib=resources.memory_mib,
            boot_disk_mib=resources.boot_disk_mib or 0,
        ),
        max_retry_count=resources.max_retry_count,
        max_run_duration=duration_pb2.Duration(seconds=resources.max_run_duration_s),
        environment=batch_v1.Environment(
            variables={**resources.environment, **environment},
            secret_variables=dict(resources.secret_environment),
        ),
    )
    if resources.provisioning_model is ProvisioningModel.SPOT:
        # A preempted Spot VM is not the container's fault: retry the task, count nothing else.
        task_spec.lifecycle_policies = [
            batch_v1.LifecyclePolicy(
                action=batch_v1.LifecyclePolicy.Action.RETRY_TASK,
                action_condition=batch_v1.LifecyclePolicy.ActionCondition(
                    exit_codes=[SPOT_PREEMPTION_EXIT_CODE]
                ),
            )
        ]

    task_group = batch_v1.TaskGroup(
        task_count=resources.task_count,
        parallelism=resources.parallelism,
        task_spec=task_spec,
    )

    policy = batch_v1.AllocationPolicy.InstancePolicy(
        machine_type=resources.machine_type,
        provisioning_model=getattr(
            batch_v1.AllocationPolicy.ProvisioningModel, resources.provisioning_model.value
        ),
    )
    if resources.accelerators_type:
        policy.accelerators = [
            batch_v1.AllocationPolicy.Accelerator(
                type_=resources.accelerators_type, count=resources.accelerators_count
            )
        ]
    allocation = batch_v1.AllocationPolicy(
        location=batch_v1.AllocationPolicy.LocationPolicy(
            allowed_locations=[f"regions/{resources.location}"]
        ),
        instances=[
            batch_v1.AllocationPolicy.InstancePolicyOrTemplate(
                policy=policy, install_gpu_drivers=resources.install_gpu_drivers
            )
        ],
    )
    if resources.service_account_email:
        allocation.service_account = batch_v1.ServiceAccount(email=resources.service_account_email)

    job = batch_v1.Job(
        task_groups=[task_group],
        allocation_policy=allocation,
        labels=job_labels(job_type=job_type, config_labels=resources.labels, extra=labels),
        logs_policy=batch_v1.LogsPolicy(destination=batch_v1.LogsPolicy.Destination.CLOUD_LOGGING),
    )
    return batch_v1.CreateJobRequest(
        parent=f"projects/{project}/locations/{resources.location}",
        job_id=job_id,
        job=job,
    )


def request_to_json(request: batch_v1.CreateJobRequest) -> str:
    """The request as Cloud Batch's JSON (camelCase), for dry runs and metadata."""
    return batch_v1.CreateJobRequest.to_json(
        request,
        indent=2,
        sort_keys=True,
        use_integers_for_enums=False,
        always_print_fields_with_no_presence=False,
    )
