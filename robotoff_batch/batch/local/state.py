"""The local runner's on-disk job state: a Pydantic model persisted atomically.

One job is one directory ``<state_dir>/<job_id>/``:

    job.json         the Cloud Batch ``Job`` of the request (``batch_v1.Job.to_json``); secret
                     variables appear only as Secret Manager references, never as values
    state.json       the job's live state (:class:`LocalJobState`), replaced atomically
    lock             ``flock`` taken by every read-modify-write of state.json
    supervisor.log   the supervisor's own stdout/stderr
    logs/task-<i>-attempt-<n>.log   stdout+stderr of task ``i``'s attempt ``n`` (1-based)

The supervisor (:mod:`robotoff_batch.batch.local.supervisor`) is the only process that starts
tasks. Anyone else (the engine's ``cancel``, the dead-supervisor check of ``get_job``) changes
state.json under the same lock (:func:`updating`), and the supervisor re-reads it on every
update, so a job marked CANCELLATION_IN_PROGRESS or FAILED by someone else stops.

A state.json of another ``format`` than :data:`STATE_FORMAT_VERSION` (or not valid) does not
load: :func:`read_state` raises a ``ValueError`` (pydantic's ``ValidationError``), and
``list_jobs`` skips that job.
"""

from __future__ import annotations

import contextlib
import fcntl
import os
import tempfile
import uuid
from collections.abc import Iterator, Mapping
from datetime import UTC, datetime
from pathlib import Path
from typing import Annotated, Final, Literal

from pydantic import AfterValidator, BaseModel, ConfigDict, Field

from robotoff_batch.batch.engine import JobState

STATE_FILE = "state.json"
JOB_FILE = "job.json"
LOCK_FILE = "lock"
LOGS_DIR = "logs"
SUPERVISOR_LOG = "supervisor.log"
STATE_FORMAT_VERSION: Final = 1

MAX_RUN_DURATION_EXIT_CODE = 50005
STATUS_CHANGED = "STATUS_CHANGED"
TASK_STATE_CHANGED = "TASK_STATE_CHANGED"
MAX_RUN_DURATION_EXCEEDED = "MAX_RUN_DURATION_EXCEEDED"
SECRET_UNRESOLVED = "SECRET_UNRESOLVED"
SUPERVISOR_DIED = "SUPERVISOR_DIED"
JOB_CANCELLED = "JOB_CANCELLED"

# Task states, as Cloud Batch names them (batch_v1.TaskStatus.State).
TASK_PENDING: Final = "PENDING"
TASK_RUNNING: Final = "RUNNING"
TASK_SUCCEEDED: Final = "SUCCEEDED"
TASK_FAILED: Final = "FAILED"
TASK_UNEXECUTED: Final = "UNEXECUTED"
TaskState = Literal["PENDING", "RUNNING", "SUCCEEDED", "FAILED", "UNEXECUTED"]


def now() -> datetime:
    """The current time, as stored in state.json (UTC)."""
    return datetime.now(UTC)


def task_log(index: int, attempt: int) -> str:
    """The path of one attempt's log, relative to the job directory."""
    return f"{LOGS_DIR}/task-{index}-attempt-{attempt}.log"


Time = Annotated[datetime, AfterValidator(lambda value: value.astimezone(UTC))]


class _Record(BaseModel):
    model_config = ConfigDict(extra="forbid")


class EventRecord(_Record):
    """One status event (the fields of ``engine.StatusEvent``)."""

    time: Time = Field(default_factory=now)
    type: str
    description: str
    new_state: JobState | None = None
    task_index: int | None = None
    task_exit_code: int | None = None


class AttemptRecord(_Record):
    """One attempt (1-based) of one task."""

    attempt: int
    pid: int | None = None
    start_time: Time | None = None
    end_time: Time | None = None
    exit_code: int | None = None
    log: str


class TaskRecord(_Record):
    """One task: its current state, running process and attempts so far."""

    index: int
    state: TaskState = TASK_PENDING
    exit_code: int | None = None
    attempts: int = 0
    pid: int | None = None
    start_ticks: int | None = None
    history: list[AttemptRecord] = Field(default_factory=list)

    def start_attempt(self, attempt: int, pid: int, start_ticks: int | None) -> None:
        """Record that attempt ``attempt`` started as process ``pid``."""
        self.state = TASK_RUNNING
        self.attempts = attempt
        self.pid = pid
        self.start_ticks = start_ticks
        self.exit_code = None
        self.history.append(
            AttemptRecord(
                attempt=attempt, pid=pid, start_time=now(), log=task_log(self.index, attempt)
            )
        )

    def end_attempt(self, state: TaskState, exit_code: int) -> None:
        """Record that the current attempt exited with ``exit_code``, leaving the task ``state``."""
        self.state = state
        self.exit_code = exit_code
        self.pid = None
        self.start_ticks = None
        self.history[-1].end_time = now()
        self.history[-1].exit_code = exit_code


class ProcessRecord(_Record):
    """A process as (pid, start ticks), so that a recycled pid is never taken for it."""

    pid: int | None = None
    start_ticks: int | None = None


class RunnerRecord(_Record):
    """What the supervisor runs each task with."""

    argv: list[str]
    poll_interval_s: float = 0.2


class LocalJobState(_Record):
    """state.json: the job's live state."""

    format: Literal[1] = STATE_FORMAT_VERSION
    job_id: str
    name: str
    uid: str
    labels: dict[str, str] = Field(default_factory=dict)
    state: JobState = JobState.QUEUED
    create_time: Time
    update_time: Time
    supervisor: ProcessRecord = Field(default_factory=ProcessRecord)
    status_events: list[EventRecord] = Field(default_factory=list)
    tasks: list[TaskRecord] = Field(default_factory=list)
    runner: RunnerRecord | None = None

    def add_event(
        self,
        type_: str,
        description: str,
        *,
        new_state: JobState | None = None,
        task_index: int | None = None,
        task_exit_code: int | None = None,
    ) -> None:
        """Append one status event, stamped now."""
        self.status_events.append(
            EventRecord(
                type=type_,
                description=description,
                new_state=new_state,
                task_index=task_index,
                task_exit_code=task_exit_code,
            )
        )

    def set_state(self, new: JobState, extra: str = "") -> None:
        """Move the job to ``new``, recording Cloud Batch's STATUS_CHANGED event."""
        old = self.state
        if old == new:
            return
        description = f"Job state is set from {old} to {new} for job {self.name}."
        if extra:
            description = f"{description} {extra}"
        self.state = new
        self.add_event(STATUS_CHANGED, description, new_state=new)


def job_name(parent: str, job_id: str) -> str:
    """The Cloud Batch resource name of the job (``projects/.../locations/.../jobs/<id>``)."""
    return f"{parent or 'projects/local/locations/local'}/jobs/{job_id}"


def new_state(
    *, job_id: str, parent: str, labels: Mapping[str, str], task_count: int, runner: RunnerRecord
) -> LocalJobState:
    """The state of a freshly submitted (QUEUED) job."""
    created = now()
    name = job_name(parent, job_id)
    return LocalJobState(
        job_id=job_id,
        name=name,
        uid=f"local-{uuid.uuid4()}",
        labels=dict(labels),
        create_time=created,
        update_time=created,
        status_events=[
            EventRecord(
                time=created,
                type=STATUS_CHANGED,
                description=f"Job state is set to QUEUED for job {name}.",
                new_state=JobState.QUEUED,
            )
        ],
        tasks=[TaskRecord(index=i) for i in range(task_count)],
        runner=runner,
    )


def set_job_state(state: LocalJobState, new: JobState, extra: str = "") -> None:
    """Move the job to ``new``, recording Cloud Batch's STATUS_CHANGED event."""
    state.set_state(new, extra)


# ---------------------------------------------------------------------------------------------
# Persistence


def atomic_write_text(path: Path, text: str) -> None:
    """Write ``text`` to ``path`` so that readers see the old or the new file, never half."""
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as handle:
            handle.write(text)
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)
        raise


def read_state(job_dir: Path) -> LocalJobState:
    """The job's state.json (complete, thanks to atomic writes). Raises OSError when it is
    missing, ValueError when it is not a state of this format."""
    text = (job_dir / STATE_FILE).read_text(encoding="utf-8")
    return LocalJobState.model_validate_json(text)


def write_state(job_dir: Path, state: LocalJobState) -> None:
    """Replace the job's state.json atomically, stamping ``update_time``."""
    state.update_time = now()
    atomic_write_text(job_dir / STATE_FILE, state.model_dump_json(indent=2))


@contextlib.contextmanager
def locked(job_dir: Path) -> Iterator[None]:
    """Hold the job's lock (``flock``; released by the kernel if the holder dies)."""
    with open(job_dir / LOCK_FILE, "a+b") as handle:
        fcntl.flock(handle.fileno(), fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(handle.fileno(), fcntl.LOCK_UN)


@contextlib.contextmanager
def updating(job_dir: Path) -> Iterator[LocalJobState]:
    """Read-modify-write state.json under the lock: mutate the yielded state in place."""
    with locked(job_dir):
        state = read_state(job_dir)
        yield state
        write_state(job_dir, state)
