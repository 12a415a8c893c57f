"""The interface every batch engine implements (local runner, Google Cloud Batch).

An engine takes the same ``google.cloud.batch_v1.CreateJobRequest`` whatever it is, so the
request built by :func:`robotoff_batch.batch.request.build_create_job_request` is exactly what
runs, locally or in the cloud.
"""

from __future__ import annotations

import enum
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import Protocol, runtime_checkable

from google.cloud import batch_v1


class JobState(enum.StrEnum):
    """Cloud Batch job states (``batch_v1.JobStatus.State`` names)."""

    STATE_UNSPECIFIED = "STATE_UNSPECIFIED"
    QUEUED = "QUEUED"
    SCHEDULED = "SCHEDULED"
    RUNNING = "RUNNING"
    SUCCEEDED = "SUCCEEDED"
    FAILED = "FAILED"
    DELETION_IN_PROGRESS = "DELETION_IN_PROGRESS"
    # Not a Cloud Batch state: the job vanished (deleted behind our back, or cancelled by us).
    DELETED = "DELETED"

    @property
    def is_terminal(self) -> bool:
        return self in TERMINAL_STATES


TERMINAL_STATES = frozenset({JobState.SUCCEEDED, JobState.FAILED, JobState.DELETED})

# Exit codes Cloud Batch itself sets on a task (not the container's own exit code).
# https://cloud.google.com/batch/docs/troubleshooting#reserved-exit-codes
BATCH_RESERVED_EXIT_CODES: Mapping[int, str] = {
    50001: "the VM was preempted (Spot VM) or otherwise lost",
    50002: "the VM stopped reporting to the Batch service (timeout)",
    50003: "the VM rebooted during the task",
    50004: "the task did not send a heartbeat in time (unresponsive)",
    50005: "the task exceeded its max run duration",
    50006: "the VM was recreated during the task",
}


@dataclass(frozen=True)
class StatusEvent:
    """One entry of a job's status history, as Cloud Batch reports it."""

    time: datetime
    type: str
    description: str
    new_state: JobState | None = None
    task_exit_code: int | None = None
    task_index: int | None = None


@dataclass(frozen=True)
class TaskStatus:
    index: int
    state: str
    exit_code: int | None = None
    attempts: int = 0

    @property
    def exit_reason(self) -> str | None:
        """Who ended the task: Batch's own reserved codes are told from the container's."""
        if self.exit_code in (None, 0):
            return None
        if self.exit_code in BATCH_RESERVED_EXIT_CODES:
            return f"Cloud Batch: {BATCH_RESERVED_EXIT_CODES[self.exit_code]}"
        return f"container exited with code {self.exit_code}"


@dataclass(frozen=True)
class JobStatus:
    """A snapshot of one batch job, engine-neutral."""

    job_id: str
    state: JobState
    labels: Mapping[str, str] = field(default_factory=dict)
    status_events: Sequence[StatusEvent] = ()
    tasks: Sequence[TaskStatus] = ()
    create_time: datetime | None = None
    update_time: datetime | None = None
    log_uri: str | None = None
    uid: str | None = None

    @property
    def failure_summary(self) -> str:
        """A human-readable reason for a FAILED job: status events and task exit codes."""
        lines = [f"{e.type}: {e.description}" for e in self.status_events if e.description]
        lines += [
            f"task {t.index}: {t.exit_reason}" for t in self.tasks if t.exit_code not in (None, 0)
        ]
        return "\n".join(lines) if lines else "no status events were reported"


class BatchEngineError(RuntimeError):
    """An engine could not do what was asked (submission refused, API down, ...)."""


class JobNotFoundError(BatchEngineError):
    """The job does not exist (never created, or deleted behind our back)."""


@runtime_checkable
class BatchEngine(Protocol):
    """What the pipeline needs from a batch engine."""

    name: str

    def submit(self, *, request: batch_v1.CreateJobRequest) -> JobStatus:
        """Create the job. Idempotent: a job that already exists with this id is re-attached."""
        ...

    def list_jobs(self, *, labels: Mapping[str, str]) -> list[JobStatus]:
        """Every job whose labels include ``labels``, in ONE backend call whatever their number."""
        ...

    def get_job(self, *, job_id: str) -> JobStatus:
        """One job with its full status events and per-task exit codes (for failures)."""
        ...

    def cancel(self, *, job_id: str) -> None:
        """Cancel (delete) the job; a job that is already gone is not an error."""
        ...

    def logs_uri(self, *, job_id: str) -> str:
        """Where a person reads this job's logs (a file path or a Cloud Logging URL)."""
        ...
