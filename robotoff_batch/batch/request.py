"""Build the Cloud Batch ``CreateJobRequest`` of a job, and its id.

One pure function: the same validated config, job id, environment and labels always give the
same request. Every engine (Cloud Batch, the local runner, the fake in tests) receives this
object, so what the dry run shows (``robotoff-batch config show --request``) is what runs.

Robotoff built an accelerator and never attached it to the allocation policy, and never set
``parallelism``; here both are set, and a test walks every config field to prove it reaches
the request. What the first real run needs, beyond the config's own fields:

- the VMs run as the config's service account, on its network;
- a GPU reaches the container: Batch installs the driver on the VM (``install_gpu_drivers``),
  the container gets ``--gpus all`` and the driver's directories (as dsub and Nextflow do), and
  the VM boots a pinned image (``batch-debian`` by default) whose boot disk size is set exactly
  (``policy.boot_disk``; ``compute_resource.boot_disk_mib`` is Batch's *extra* per-task disk);
- labels reach the VMs, disks and GPUs (``AllocationPolicy.labels``), so billing sees them;
- retries: every failure is retried up to ``max_retry_count`` except the container's
  permanent errors (a FAIL_TASK lifecycle policy on ``fail_fast_exit_codes``) and, unless
  ``retry_timeouts``, a task that ran past ``max_run_duration`` (Batch's 50005). A RETRY_TASK
  policy would do the opposite: Batch then fails at once every exit code it does not list.
"""

from __future__ import annotations

import hashlib
import re
import secrets
from collections.abc import Mapping
from datetime import UTC, datetime

from google.cloud import batch_v1
from google.protobuf import duration_pb2

from robotoff_batch.batch.engine import MachineSpec
from robotoff_batch.config.models import (
    LABEL_KEY_PATTERN,
    LABEL_VALUE_PATTERN,
    RESERVED_LABEL_PREFIXES,
    BatchResources,
)
from robotoff_batch.names import APP_LABEL, JOB_TYPE_LABEL

JOB_ID_PATTERN = re.compile(r"^[a-z]([a-z0-9-]{0,61}[a-z0-9])?$")
# What a container needs to see the VM's GPUs: Docker's GPU request (the NVIDIA container
# toolkit that batch-debian installs with the driver) and the driver's directories where
# batch-cos puts them (/var/lib/nvidia), mounted where CUDA images look (/usr/local/nvidia is
# on the nvidia/cuda images' PATH and LD_LIBRARY_PATH). dsub and Nextflow pass the same.
#: Batch's exit code for a task killed at max_run_duration.
MAX_RUN_DURATION_EXIT_CODE = 50005
GPU_CONTAINER_OPTIONS = "--gpus all"
GPU_CONTAINER_VOLUMES = (
    "/var/lib/nvidia/lib64:/usr/local/nvidia/lib64",
    "/var/lib/nvidia/bin:/usr/local/nvidia/bin",
)
BOOT_DISK_TYPE = "pd-balanced"


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
    """The labels every job carries: app and job type first, they cannot be overridden.

    Keys Google reserves (``goog-``, ``google-``) and invalid keys are refused.
    """
    for key in [*config_labels, *extra]:
        if key.startswith(RESERVED_LABEL_PREFIXES):
            raise RequestError(f"label key {key!r}: keys starting with 'goog' are Google's")
        if not re.match(LABEL_KEY_PATTERN, key):
            raise RequestError(f"label key {key!r} does not match {LABEL_KEY_PATTERN}")
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
    if resources.accelerators_type:
        container.options = GPU_CONTAINER_OPTIONS
        container.volumes = list(GPU_CONTAINER_VOLUMES)

    task_spec = batch_v1.TaskSpec(
        runnables=[batch_v1.Runnable(container=container)],
        # No boot_disk_mib: that is an *extra* disk per task; the boot disk is set exactly
        # on the instance policy below.
        compute_resource=batch_v1.ComputeResource(
            cpu_milli=resources.cpu_milli, memory_mib=resources.memory_mib
        ),
        max_retry_count=resources.max_retry_count,
        max_run_duration=duration_pb2.Duration(seconds=resources.max_run_duration_s),
        environment=batch_v1.Environment(
            variables={**resources.environment, **environment},
            secret_variables=dict(resources.secret_environment),
        ),
    )
    fail_fast = list(resources.fail_fast_exit_codes)
    if not resources.retry_timeouts and MAX_RUN_DURATION_EXIT_CODE not in fail_fast:
        fail_fast.append(MAX_RUN_DURATION_EXIT_CODE)
    if resources.max_retry_count and fail_fast:
        # FAIL_TASK on the container's permanent errors and (unless retry_timeouts) on a
        # task that ran past max_run_duration (50005); every other failure (a crash, an OOM,
        # Batch's 50001-50003/50006 for a lost or preempted VM) follows Batch's default
        # policy, a retry up to max_retry_count. Batch takes one lifecycle policy.
        task_spec.lifecycle_policies = [
            batch_v1.LifecyclePolicy(
                action=batch_v1.LifecyclePolicy.Action.FAIL_TASK,
                action_condition=batch_v1.LifecyclePolicy.ActionCondition(exit_codes=fail_fast),
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
    policy.boot_disk = batch_v1.AllocationPolicy.Disk(
        image=resources.boot_image, type_=BOOT_DISK_TYPE, size_gb=resources.boot_disk_gb or 0
    )
    all_labels = job_labels(job_type=job_type, config_labels=resources.labels, extra=labels)
    allocation = batch_v1.AllocationPolicy(
        location=batch_v1.AllocationPolicy.LocationPolicy(
            allowed_locations=[f"regions/{resources.location}"]
        ),
        instances=[
            batch_v1.AllocationPolicy.InstancePolicyOrTemplate(
                policy=policy, install_gpu_drivers=resources.install_gpu_drivers
            )
        ],
        # Job.labels label the job only; these label its VMs, disks and GPUs (billing).
        labels=all_labels,
    )
    if resources.service_account_email:
        allocation.service_account = batch_v1.ServiceAccount(email=resources.service_account_email)
    if resources.network:
        interface = batch_v1.AllocationPolicy.NetworkInterface(
            network=resources.network or "",
            subnetwork=resources.subnetwork or "",
            no_external_ip_address=resources.no_external_ip_address,
        )
        allocation.network = batch_v1.AllocationPolicy.NetworkPolicy(network_interfaces=[interface])

    job = batch_v1.Job(
        task_groups=[task_group],
        allocation_policy=allocation,
        labels=all_labels,
        logs_policy=batch_v1.LogsPolicy(destination=batch_v1.LogsPolicy.Destination.CLOUD_LOGGING),
    )
    return batch_v1.CreateJobRequest(
        parent=f"projects/{project}/locations/{resources.location}",
        job_id=job_id,
        job=job,
    )


def machine_of_job(job: batch_v1.Job) -> MachineSpec | None:
    """The machine a job's VMs are (its first instance policy), as built above; None when the
    job has no instance policy (an instance template, or a bare job in tests)."""
    if "allocation_policy" not in job or not job.allocation_policy.instances:
        return None
    instance = job.allocation_policy.instances[0]
    if "policy" not in instance or not instance.policy.machine_type:
        return None
    policy = instance.policy
    model = batch_v1.AllocationPolicy.ProvisioningModel(policy.provisioning_model).name
    accelerator = policy.accelerators[0] if policy.accelerators else None
    return MachineSpec(
        machine_type=policy.machine_type,
        provisioning_model="STANDARD" if model == "PROVISIONING_MODEL_UNSPECIFIED" else model,
        accelerators_type=accelerator.type_ if accelerator else None,
        accelerators_count=int(accelerator.count) if accelerator else 0,
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
