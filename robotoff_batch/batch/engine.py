"""The interface every batch engine implements (local runner, Google Cloud Batch).

An engine takes the same ``google.cloud.batch_v1.CreateJobRequest`` whatever it is, so the
request built by :func:`robotoff_batch.batch.request.build_create_job_request` is exactly what
runs, locally or in the cloud.
"""

from __future__ import annotations

import enum
from collections.abc import Collection, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Protocol, runtime_checkable

from google.cloud import batch_v1

from robotoff_batch.names import JOB_TYPE_LABEL


class JobState(enum.StrEnum):
    """Cloud Batch job states (``batch_v1.JobStatus.State`` names)."""

    STATE_UNSPECIFIED = "STATE_UNSPECIFIED"
    QUEUED = "QUEUED"
    SCHEDULED = "SCHEDULED"
    RUNNING = "RUNNING"
    SUCCEEDED = "SUCCEEDED"
    FAILED = "FAILED"
    DELETION_IN_PROGRESS = "DELETION_IN_PROGRESS"
    CANCELLATION_IN_PROGRESS = "CANCELLATION_IN_PROGRESS"
    CANCELLED = "CANCELLED"
    # Not a Cloud Batch state: the job no longer exists (deleted, by us or behind our back).
    DELETED = "DELETED"

    @property
    def is_terminal(self) -> bool:
        """SUCCEEDED, FAILED, CANCELLED or DELETED: the job will not change any more."""
        return self in TERMINAL_STATES

    @property
    def is_stopping(self) -> bool:
        """Being cancelled or deleted: its tasks are stopping, it ends CANCELLED or DELETED."""
        return self in STOPPING_STATES


# No VM yet: a job waits here on GPU quota or capacity, sometimes for hours, and only its
# status events say why.
PENDING_STATES = frozenset({JobState.QUEUED, JobState.SCHEDULED})
TERMINAL_STATES = frozenset(
    {JobState.SUCCEEDED, JobState.FAILED, JobState.CANCELLED, JobState.DELETED}
)
STOPPING_STATES = frozenset({JobState.DELETION_IN_PROGRESS, JobState.CANCELLATION_IN_PROGRESS})

# Exit codes Cloud Batch itself sets on a task (not the container's own exit code).
# https://cloud.google.com/batch/docs/troubleshooting#reserved-exit-codes; 50000 is documented
# on ``batch_v1.TaskExecution.exit_code`` ("if the task failed but not due to the following
# reasons, the exit code will be 50000").
BATCH_RESERVED_EXIT_CODES: Mapping[int, str] = {
    50000: "the task failed for an unspecified Batch reason",
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
class TaskAttempt:
    """One attempt (1-based) of a task: when its container started and stopped running.

    ``start`` is None when the engine did not report it, ``end`` None while it runs or when
    the engine did not report it: the cost of such an attempt is unknown, never 0."""

    attempt: int
    start: datetime | None
    end: datetime | None = None
    exit_code: int | None = None

    def duration_s(self, now: datetime | None = None) -> float | None:
        """Seconds from start to end (to ``now`` for an attempt still running, when given)."""
        end = self.end if self.end is not None else now
        if self.start is None or end is None:
            return None
        return max(0.0, (end - self.start).total_seconds())


@dataclass(frozen=True)
class MachineSpec:
    """What a job's VMs are, from its allocation policy: what its run time is priced at."""

    machine_type: str
    provisioning_model: str = "STANDARD"  # STANDARD or SPOT
    accelerators_type: str | None = None
    accelerators_count: int = 0

    def describe(self) -> str:
        gpus = (
            f" + {self.accelerators_count} x {self.accelerators_type}"
            if self.accelerators_type
            else ""
        )
        return f"{self.machine_type}{gpus}, {self.provisioning_model}"


@dataclass(frozen=True)
class TaskStatus:
    index: int
    state: str
    exit_code: int | None = None
    attempts: int = 0
    # Each attempt's run times, retries included, oldest first; empty where the engine
    # reports none.
    runs: Sequence[TaskAttempt] = ()

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
    # The job's machine (allocation policy); None where the engine does not say.
    machine: MachineSpec | None = None
    # The region the job is in (Cloud Batch); None where the engine has none.
    location: str | None = None

    @property
    def failure_summary(self) -> str:
        """A human-readable reason for a FAILED job: status events and task exit codes."""
        lines = [f"{e.type}: {e.description}" for e in self.status_events if e.description]
        lines += [
            f"task {t.index}: {t.exit_reason}" for t in self.tasks if t.exit_code not in (None, 0)
        ]
        return "\n".join(lines) if lines else "no status events were reported"

    def pending_for_s(self, now: datetime) -> float | None:
        """Seconds the job has waited QUEUED/SCHEDULED (since ``create_time``); None in any
        other state or when the creation time is unknown."""
        if self.state not in PENDING_STATES or self.create_time is None:
            return None
        return max(0.0, (now - self.create_time).total_seconds())

    def stuck_reason(self, *, now: datetime, max_pending_s: float) -> str | None:
        """Why the job is stuck, when it has waited QUEUED/SCHEDULED longer than
        ``max_pending_s``: the wait, and the status events that carry the cause (quota,
        capacity); None when it is not stuck. What the follower shows as a warning (and, with
        ``cancel_when_stuck``, the reason it cancels the job)."""
        waited = self.pending_for_s(now)
        if waited is None or waited <= max_pending_s:
            return None
        events = [f"{e.type}: {e.description}" for e in self.status_events if e.description]
        cause = "; last events: " + " | ".join(events[-3:]) if events else "; no status event"
        return (
            f"job {self.job_id} has been {self.state.value} for {waited / 3600:.1f} h "
            f"(limit {max_pending_s / 3600:.1f} h, max_pending_duration){cause}"
        )

    @property
    def run_duration_s(self) -> float | None:
        """Seconds from the first RUNNING status event (else ``create_time``) to the event that
        ended the job (else ``update_time``); None while the job is not terminal, or when the
        times are unknown."""
        if not self.state.is_terminal:
            return None
        start = next(
            (e.time for e in self.status_events if e.new_state is JobState.RUNNING),
            self.create_time,
        )
        end = next(
            (
                e.time
                for e in reversed(self.status_events)
                if e.new_state is not None and e.new_state.is_terminal
            ),
            self.update_time,
        )
        if start is None or end is None:
            return None
        return max(0.0, (end - start).total_seconds())


def followed_locations(engine: object) -> tuple[str, ...]:
    """The regions an engine lists (``locations`` where it has several, else its one
    ``location``); empty for an engine without regions (the local runner)."""
    many = getattr(engine, "locations", None)
    if many:
        return tuple(many)
    one = getattr(engine, "location", None)
    return (one,) if one else ()


class BatchEngineError(RuntimeError):
    """An engine could not do what was asked (submission refused, API down, ...)."""


class JobNotFoundError(BatchEngineError):
    """The job does not exist (never created, or deleted behind our back)."""


@runtime_checkable
class BatchEngine(Protocol):
    """What the pipeline needs from a batch engine."""

    name: str

    @property
    def location(self) -> str | None:
        """The one region the engine creates and lists jobs in; None when it has none (the
        local runner runs a job wherever its config says)."""
        ...

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
        """Cancel the job: it goes CANCELLATION_IN_PROGRESS, then CANCELLED, and stays listed
        with its history. It may return before the job is CANCELLED (Cloud Batch does).
        Idempotent: a finished, already cancelling or deleting, or unknown job is not an error,
        and no second request is sent for it."""
        ...

    def logs_uri(self, *, job_id: str) -> str:
        """Where a person reads this job's logs (a file path or a Cloud Logging URL)."""
        ...

    def log_tail(self, *, job_id: str, lines: int = 30) -> str | None:
        """The last ``lines`` lines of the log of the job's failed task (or, when none failed,
        of its last task attempt); None when the engine cannot read logs (or has none)."""
        ...


#: The status event of a job the engine no longer has.
GONE_EVENT = "JOB_GONE"


def gone_status(job_id: str, job_type: str | None, engine_name: str) -> JobStatus:
    """The status of a job the engine no longer has (deleted outside robotoff-batch)."""
    reason = (
        f"the batch job no longer exists in the {engine_name} engine: it was deleted outside "
        "robotoff-batch (console, gcloud, a cleanup), so its outcome is unknown"
    )
    return JobStatus(
        job_id=job_id,
        state=JobState.DELETED,
        labels={JOB_TYPE_LABEL: job_type} if job_type else {},
        status_events=(StatusEvent(time=datetime.now(UTC), type=GONE_EVENT, description=reason),),
    )


@dataclass(frozen=True)
class CancelOutcome:
    """What :func:`cancel_once` did: ``state`` is the job's state before (None: no such job)."""

    job_id: str
    state: JobState | None
    sent: bool

    @property
    def message(self) -> str:
        if self.state is None:
            return f"no batch job {self.job_id!r}: nothing to cancel"
        if self.state.is_terminal:
            return f"{self.job_id} already ended {self.state.value}: nothing to cancel"
        if not self.sent:
            return f"{self.job_id} is already being cancelled ({self.state.value}): not sent again"
        return f"cancelled {self.job_id} (was {self.state.value})"


def cancel_once(
    engine: BatchEngine,
    job_id: str,
    *,
    status: JobStatus | None = None,
    already_sent: Collection[str] = (),
) -> CancelOutcome:
    """Cancel a job, once: not a job that ended, nor one already stopping (cancelling,
    deleting), nor one in ``already_sent`` (the follower's record of the cancels it sent, for
    a job that has not yet left its state). ``status``: the job's status when the caller has
    it (else one ``get_job``). The CLI, the UI's cancel job and the follower all cancel here."""
    if status is None:
        try:
            status = engine.get_job(job_id=job_id)
        except JobNotFoundError:
            return CancelOutcome(job_id, None, sent=False)
    state = status.state
    if state.is_terminal or state.is_stopping or job_id in already_sent:
        return CancelOutcome(job_id, state, sent=False)
    engine.cancel(job_id=job_id)
    return CancelOutcome(job_id, state, sent=True)
