"""What the local runner runs: a request checked against what it honours, the job's spec as
the supervisor reads it back from job.json, and a task's environment.

Honoured from the request: task_count, parallelism, max_retry_count, max_run_duration (a task
over it is killed and gets Batch's exit code 50005), lifecycle policies (RETRY_TASK /
FAIL_TASK on exit codes), environment variables, secret variables
(``projects/*/secrets/NAME/versions/*`` is read from the environment variable NAME of the
submitting process; the value only ever reaches the task's environment) and labels. Ignored:
the allocation policy (machine type, accelerators, location), the logs policy (logs always go
to ``<job_dir>/logs/``) and a container ``entrypoint`` override (the mapped command plays the
image's entrypoint).
"""

from __future__ import annotations

import logging
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import timedelta

from google.cloud import batch_v1

from robotoff_batch.batch.engine import BatchEngineError
from robotoff_batch.batch.local.state import TASK_FAILED, TASK_PENDING, TASK_SUCCEEDED, TaskState

logger = logging.getLogger(__name__)


class SecretResolutionError(RuntimeError):
    """A Secret Manager reference cannot be resolved from the local environment."""


@dataclass(frozen=True)
class RetryPolicy:
    """max_retry_count plus the lifecycle policies (RETRY_TASK / FAIL_TASK on exit codes)."""

    max_retry_count: int
    retry_on: frozenset[int] | None  # None: any failure is retried
    fail_on: frozenset[int]

    def should_retry(self, exit_code: int, attempts: int) -> bool:
        """Whether a task that exited with ``exit_code`` after ``attempts`` gets another try."""
        if attempts > self.max_retry_count or exit_code in self.fail_on:
            return False
        return self.retry_on is None or exit_code in self.retry_on

    def attempt_end(self, index: int, attempt: int, exit_code: int) -> tuple[TaskState, str]:
        """What an attempt's exit code makes of its task (SUCCEEDED, PENDING for a retry,
        FAILED), with the status event's description in Cloud Batch's words."""
        if exit_code == 0:
            return TASK_SUCCEEDED, f"Task {index} succeeded on attempt {attempt}."
        failed = f"Task {index} failed with exit code {exit_code} on attempt {attempt}; "
        if self.should_retry(exit_code, attempt):
            return TASK_PENDING, f"{failed}retrying (max_retry_count {self.max_retry_count})."
        return TASK_FAILED, f"{failed}no retry left."

    @classmethod
    def from_task_spec(cls, spec: batch_v1.TaskSpec) -> RetryPolicy:
        """Cloud Batch semantics: a RETRY_TASK policy restricts retries to its exit codes."""
        retry_on: set[int] | None = None
        fail_on: set[int] = set()
        for policy in spec.lifecycle_policies:
            codes = set(policy.action_condition.exit_codes)
            if policy.action == batch_v1.LifecyclePolicy.Action.RETRY_TASK:
                retry_on = (retry_on or set()) | codes
            elif policy.action == batch_v1.LifecyclePolicy.Action.FAIL_TASK:
                fail_on |= codes
        return cls(
            max_retry_count=int(spec.max_retry_count),
            retry_on=frozenset(retry_on) if retry_on is not None else None,
            fail_on=frozenset(fail_on),
        )


@dataclass(frozen=True)
class JobSpec:
    """What the supervisor needs from the job: the command, env, counts and limits."""

    job_id: str
    argv: tuple[str, ...]
    task_count: int
    parallelism: int
    retry: RetryPolicy
    max_run_duration_s: float | None
    variables: Mapping[str, str]
    secret_variables: Mapping[str, str]

    @classmethod
    def from_job(cls, job_id: str, job: batch_v1.Job, argv: tuple[str, ...]) -> JobSpec:
        """Read the first task group of a Cloud Batch ``Job`` (defaults as Batch applies them)."""
        group = job.task_groups[0]
        spec = group.task_spec
        task_count = int(group.task_count) or 1
        parallelism = int(group.parallelism) or task_count
        duration: timedelta | None = spec.max_run_duration if "max_run_duration" in spec else None
        seconds = duration.total_seconds() if duration else None
        return cls(
            job_id=job_id,
            argv=argv,
            task_count=task_count,
            parallelism=max(1, min(parallelism, task_count)),
            retry=RetryPolicy.from_task_spec(spec),
            max_run_duration_s=seconds if seconds and seconds > 0 else None,
            variables=dict(spec.environment.variables),
            secret_variables=dict(spec.environment.secret_variables),
        )

    def task_environment(
        self, index: int, attempt: int, secrets: Mapping[str, str], environ: Mapping[str, str]
    ) -> dict[str, str]:
        """The environment of one attempt (1-based) of task ``index``, as on Cloud Batch."""
        return {
            **task_base_environment(environ),
            **self.variables,
            **secrets,
            "BATCH_TASK_INDEX": str(index),
            "BATCH_TASK_COUNT": str(self.task_count),
            "BATCH_JOB_ID": self.job_id,
            "BATCH_TASK_RETRY_ATTEMPT": str(attempt - 1),
        }


#: What a task inherits from the supervisor's environment: what a Cloud Batch VM gives its
#: container (a shell's basics) plus the local stand-ins of the VM's own identity and of the
#: storage emulator. Never the orchestrator's secrets (GOOGLE_CREDENTIALS, BATCH_JOB_KEY,
#: ROBOTOFF_DATABASE_URL...): a task gets only its job's variables and secret variables.
TASK_INHERITED_VARIABLES = (
    "PATH",
    "HOME",
    "LANG",
    "LC_ALL",
    "TZ",
    "TMPDIR",
    "PYTHONPATH",
    "VIRTUAL_ENV",
    "LOG_LEVEL",
    "STORAGE_EMULATOR_HOST",
    "GOOGLE_APPLICATION_CREDENTIALS",
)


#: What the images set themselves (containers/*/Dockerfile ENV) that the local command, which
#: plays the image without it, needs for the same logs: unbuffered output, in order.
IMAGE_ENVIRONMENT = {"PYTHONUNBUFFERED": "1"}


def task_base_environment(environ: Mapping[str, str]) -> dict[str, str]:
    """The part of ``environ`` a local task inherits (see TASK_INHERITED_VARIABLES), plus
    what the image itself would set (IMAGE_ENVIRONMENT)."""
    return {
        **IMAGE_ENVIRONMENT,
        **{k: environ[k] for k in TASK_INHERITED_VARIABLES if k in environ},
    }


def resolve_secrets(refs: Mapping[str, str], environ: Mapping[str, str]) -> dict[str, str]:
    """Resolve Secret Manager references locally: ``projects/*/secrets/NAME/versions/*``
    is read from the environment variable NAME. Raises SecretResolutionError (naming the
    variable and the reference, never a value) when one is missing."""
    resolved: dict[str, str] = {}
    for variable, ref in refs.items():
        parts = ref.split("/")
        if len(parts) != 6 or parts[0] != "projects" or parts[2] != "secrets":
            raise SecretResolutionError(
                f"secret variable {variable}: {ref!r} is not a Secret Manager reference "
                "projects/PROJECT/secrets/NAME/versions/VERSION"
            )
        name = parts[3]
        if name not in environ:
            raise SecretResolutionError(
                f"secret variable {variable}: {ref} cannot be resolved locally; set the "
                f"environment variable {name} in the process that submits the job"
            )
        resolved[variable] = environ[name]
    return resolved


def plan_request(
    request: batch_v1.CreateJobRequest, commands_by_image: Mapping[str, Sequence[str]]
) -> tuple[tuple[str, ...], int]:
    """Check the request can run on the local runner; the task argv and task count."""
    job = request.job
    if len(job.task_groups) != 1:
        raise BatchEngineError(
            f"the local runner runs exactly one task group, got {len(job.task_groups)}"
        )
    group = job.task_groups[0]
    runnables = group.task_spec.runnables
    if len(runnables) != 1 or "container" not in runnables[0]:
        raise BatchEngineError("the local runner runs exactly one container runnable per task")
    container = runnables[0].container
    image = container.image_uri
    if image not in commands_by_image:
        known = ", ".join(sorted(commands_by_image)) or "none"
        raise BatchEngineError(
            f"container image {image!r} has no local command; known images: {known}"
        )
    if container.entrypoint:
        logger.warning(
            "entrypoint override %r of %s is ignored: the local command plays the image",
            container.entrypoint,
            image,
        )
    if group.task_count < 0 or group.parallelism < 0:
        raise BatchEngineError("task_count and parallelism must not be negative")
    argv = (*commands_by_image[image], *container.commands)
    return argv, int(group.task_count) or 1
