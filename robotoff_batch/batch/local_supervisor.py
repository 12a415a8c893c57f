"""The local runner's on-disk job state and the detached supervisor that runs a job's tasks.

One job is one directory ``<state_dir>/<job_id>/``:

    job.json         the Cloud Batch ``Job`` of the request (``batch_v1.Job.to_json``); secret
                     variables appear only as Secret Manager references, never as values
    state.json       the job's live state (see :func:`new_state`), replaced atomically
    lock             ``flock`` taken by every read-modify-write of state.json
    supervisor.log   the supervisor's own stdout/stderr
    logs/task-<i>-attempt-<n>.log   stdout+stderr of task ``i``'s attempt ``n`` (1-based)

The supervisor (``python -m robotoff_batch.batch.local_runner supervise <job_dir>``) is the
only process that starts tasks. Anyone else (the engine's ``cancel``, the dead-supervisor
check of ``get_job``) changes state.json under the same lock, and the supervisor re-reads it
on every update, so a job marked CANCELLATION_IN_PROGRESS or FAILED by someone else stops (a
cancelled job ends CANCELLED; see :func:`settle_stopping`).
"""

from __future__ import annotations

import contextlib
import fcntl
import functools
import json
import logging
import os
import signal
import subprocess
import sys
import tempfile
import time
import uuid
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import psutil
from google.cloud import batch_v1

from robotoff_batch.batch.engine import JobState

logger = logging.getLogger(__name__)

STATE_FILE = "state.json"
JOB_FILE = "job.json"
LOCK_FILE = "lock"
LOGS_DIR = "logs"
SUPERVISOR_LOG = "supervisor.log"
STATE_FORMAT_VERSION = 1

MAX_RUN_DURATION_EXIT_CODE = 50005
STATUS_CHANGED = "STATUS_CHANGED"
TASK_STATE_CHANGED = "TASK_STATE_CHANGED"
MAX_RUN_DURATION_EXCEEDED = "MAX_RUN_DURATION_EXCEEDED"
SECRET_UNRESOLVED = "SECRET_UNRESOLVED"
SUPERVISOR_DIED = "SUPERVISOR_DIED"
JOB_CANCELLED = "JOB_CANCELLED"

# Task states, as Cloud Batch names them (batch_v1.TaskStatus.State).
TASK_PENDING = "PENDING"
TASK_RUNNING = "RUNNING"
TASK_SUCCEEDED = "SUCCEEDED"
TASK_FAILED = "FAILED"
TASK_UNEXECUTED = "UNEXECUTED"

KILL_GRACE_S = 2.0


class SecretResolutionError(RuntimeError):
    """A Secret Manager reference cannot be resolved from the local environment."""


# ---------------------------------------------------------------------------------------------
# Small helpers


def now_iso() -> str:
    """The current time, as stored in state.json (ISO 8601, UTC)."""
    return datetime.now(UTC).isoformat()


def parse_time(value: str | None) -> datetime | None:
    """Read back a time written by :func:`now_iso`."""
    return datetime.fromisoformat(value) if value else None


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


def read_state(job_dir: Path) -> dict[str, Any]:
    """The job's state.json (complete, thanks to atomic writes)."""
    with open(job_dir / STATE_FILE, encoding="utf-8") as handle:
        state: dict[str, Any] = json.load(handle)
    return state


def write_state(job_dir: Path, state: Mapping[str, Any]) -> None:
    """Replace the job's state.json atomically, stamping ``update_time``."""
    state = {**state, "update_time": now_iso()}
    atomic_write_text(job_dir / STATE_FILE, json.dumps(state, indent=2, sort_keys=True))


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
def updating(job_dir: Path) -> Iterator[dict[str, Any]]:
    """Read-modify-write state.json under the lock: mutate the yielded dict in place."""
    with locked(job_dir):
        state = read_state(job_dir)
        yield state
        write_state(job_dir, state)


_GONE = (psutil.STATUS_ZOMBIE, psutil.STATUS_DEAD)
_CLOCK_TICKS = os.sysconf("SC_CLK_TCK")


def _live(process: psutil.Process) -> bool:
    try:
        return process.status() not in _GONE
    except psutil.Error:
        return False


def process_start_ticks(pid: int) -> int | None:
    """The start time of ``pid`` (clock ticks since boot), or None if it is gone or a zombie.

    Stored next to a pid so that a recycled pid is never taken for the process we started.
    """
    try:
        process = psutil.Process(pid)
        if not _live(process):
            return None
        since_boot = process.create_time() - psutil.boot_time()
    except psutil.Error:
        return None
    return round(since_boot * _CLOCK_TICKS)


def is_same_process_alive(pid: int | None, start_ticks: int | None) -> bool:
    """Whether the process we recorded as (pid, start ticks) still runs."""
    if not pid:
        return False
    ticks = process_start_ticks(pid)
    return ticks is not None and (start_ticks is None or ticks == start_ticks)


def kill_task_group(pid: int | None, start_ticks: int | None, sig: int = signal.SIGKILL) -> None:
    """Signal the process group of a task we started (each task leads its own group).

    Skipped when the leader's pid now belongs to another process; when the leader is gone
    the group may still hold its children, so the group is signalled anyway.
    """
    if not pid:
        return
    ticks = process_start_ticks(pid)
    if ticks is not None and start_ticks is not None and ticks != start_ticks:
        return
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(pid, sig)


def group_alive(pid: int | None) -> bool:
    """Whether any process of the group led by ``pid`` still exists."""
    if not pid:
        return False
    try:
        os.killpg(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    # A zombie leader keeps the group "alive" for killpg: look for a live member.
    for process in psutil.process_iter():
        with contextlib.suppress(OSError, psutil.Error):
            if os.getpgid(process.pid) == pid and _live(process):
                return True
    return False


# ---------------------------------------------------------------------------------------------
# State


def job_name(parent: str, job_id: str) -> str:
    """The Cloud Batch resource name of the job (``projects/.../locations/.../jobs/<id>``)."""
    return f"{parent or 'projects/local/locations/local'}/jobs/{job_id}"


def event(
    type_: str,
    description: str,
    *,
    new_state: str | None = None,
    task_index: int | None = None,
    task_exit_code: int | None = None,
) -> dict[str, Any]:
    """One status event as stored in state.json (the fields of ``engine.StatusEvent``)."""
    return {
        "time": now_iso(),
        "type": type_,
        "description": description,
        "new_state": new_state,
        "task_index": task_index,
        "task_exit_code": task_exit_code,
    }


def new_state(
    *, job_id: str, parent: str, labels: Mapping[str, str], task_count: int
) -> dict[str, Any]:
    """The state.json of a freshly submitted (QUEUED) job."""
    created = now_iso()
    name = job_name(parent, job_id)
    return {
        "format": STATE_FORMAT_VERSION,
        "job_id": job_id,
        "name": name,
        "uid": f"local-{uuid.uuid4()}",
        "labels": dict(labels),
        "state": JobState.QUEUED.value,
        "create_time": created,
        "update_time": created,
        "supervisor": {"pid": None, "start_ticks": None},
        "status_events": [
            {
                **event(
                    STATUS_CHANGED,
                    f"Job state is set to QUEUED for job {name}.",
                    new_state=JobState.QUEUED.value,
                ),
                "time": created,
            }
        ],
        "tasks": [
            {
                "index": i,
                "state": TASK_PENDING,
                "exit_code": None,
                "attempts": 0,
                "pid": None,
                "start_ticks": None,
                "history": [],
            }
            for i in range(task_count)
        ],
    }


def set_job_state(state: dict[str, Any], new: JobState, extra: str = "") -> None:
    """Move the job to ``new``, recording Cloud Batch's STATUS_CHANGED event."""
    old = state["state"]
    if old == new.value:
        return
    description = f"Job state is set from {old} to {new.value} for job {state['name']}."
    if extra:
        description = f"{description} {extra}"
    state["state"] = new.value
    state["status_events"].append(event(STATUS_CHANGED, description, new_state=new.value))


def settle_stopping(state: dict[str, Any]) -> None:
    """End a job that is being stopped: CANCELLATION_IN_PROGRESS -> CANCELLED, with an event
    saying a cancel request did it (DELETION_IN_PROGRESS, left by older versions -> DELETED).

    Its tasks still marked running are killed. Does nothing to a job in any other state.
    """
    current = JobState(state["state"])
    if not current.is_stopping:
        return
    stop_orphaned_tasks(state)
    if current is JobState.CANCELLATION_IN_PROGRESS:
        state["status_events"].append(
            event(JOB_CANCELLED, f"Job {state['name']} was cancelled by a cancel request.")
        )
        set_job_state(state, JobState.CANCELLED)
    else:
        set_job_state(state, JobState.DELETED)


def stop_orphaned_tasks(state: dict[str, Any]) -> None:
    """Kill the process groups of tasks still marked RUNNING (their supervisor is gone)."""
    for task in state["tasks"]:
        if task["state"] == TASK_RUNNING:
            kill_task_group(task.get("pid"), task.get("start_ticks"))
            task["state"] = TASK_FAILED
            task["pid"] = None
            task["start_ticks"] = None
            if task["history"] and task["history"][-1]["end_time"] is None:
                task["history"][-1]["end_time"] = now_iso()
            state["status_events"].append(
                event(
                    TASK_STATE_CHANGED,
                    f"Task {task['index']} was killed on attempt {task['attempts']}.",
                    task_index=task["index"],
                )
            )
        elif task["state"] == TASK_PENDING:
            task["state"] = TASK_UNEXECUTED


# ---------------------------------------------------------------------------------------------
# The job's spec, as the supervisor reads it back from job.json


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


# ---------------------------------------------------------------------------------------------
# The supervisor


@dataclass
class _Running:
    index: int
    attempt: int
    process: subprocess.Popen[bytes]
    started: float
    start_ticks: int | None


class Supervisor:
    """Runs one job's tasks as local processes, recording everything in state.json."""

    def __init__(self, job_dir: Path, spec: JobSpec, *, poll_interval_s: float = 0.2) -> None:
        self.job_dir = job_dir
        self.spec = spec
        self.poll_interval_s = poll_interval_s
        self.running: dict[int, _Running] = {}
        self.pending: list[int] = list(range(spec.task_count))
        self.failed = False
        self.stop_requested = False
        self.secrets: dict[str, str] = {}
        self.attempts: dict[int, int] = {}

    # -- lifecycle -----------------------------------------------------------------------------

    def run(self) -> JobState:
        """Run the job to its end; returns the final state (as written to state.json)."""
        signal.signal(signal.SIGTERM, self._on_sigterm)
        signal.signal(signal.SIGINT, self._on_sigterm)
        me = os.getpid()
        with updating(self.job_dir) as state:
            if state["state"] != JobState.QUEUED.value:
                logger.warning(
                    "job %s is %s, not QUEUED: not starting", self.spec.job_id, state["state"]
                )
                return JobState(state["state"])
            state["supervisor"] = {"pid": me, "start_ticks": process_start_ticks(me)}
            set_job_state(state, JobState.SCHEDULED)
        try:
            self.secrets = resolve_secrets(self.spec.secret_variables, os.environ)
        except SecretResolutionError as error:
            return self._fail_without_running(str(error))
        try:
            return self._loop()
        finally:
            self._kill_all()

    def _on_sigterm(self, signum: int, frame: object) -> None:
        """Cancellation: the main loop kills the tasks and exits at its next turn."""
        self.stop_requested = True

    def _fail_without_running(self, reason: str) -> JobState:
        """Fail every task before it starts (e.g. a secret cannot be resolved)."""
        logger.error("job %s: %s", self.spec.job_id, reason)
        with updating(self.job_dir) as state:
            state["status_events"].append(event(SECRET_UNRESOLVED, reason))
            for task in state["tasks"]:
                task["state"] = TASK_FAILED
            set_job_state(state, JobState.FAILED)
        return JobState.FAILED

    def _loop(self) -> JobState:
        """Tick until every task has ended: reap, enforce deadlines, record, start more."""
        while True:
            if self.stop_requested:
                return self._stop("the supervisor was told to stop (signal or cancel)")
            changes: list[Callable[[dict[str, Any]], None]] = []
            self._reap(changes)
            self._enforce_deadlines(changes)
            # Record the ends before starting retries, so an attempt's end never lands on
            # the next attempt's record.
            if changes and not self._apply(changes):
                return self._stop("the job was changed by another process")
            started = self._start_tasks()
            if self.stop_requested:
                continue
            if not self.running and (self.failed or not self.pending):
                final = JobState.FAILED if self.failed else JobState.SUCCEEDED
                if not self._apply([functools.partial(self._finish, final=final)]):
                    return self._stop("the job was changed by another process")
                return final
            if not changes and not started and not self._still_wanted():
                return self._stop("the job was changed by another process")
            time.sleep(self.poll_interval_s)

    def _apply(self, changes: list[Callable[[dict[str, Any]], None]]) -> bool:
        """Apply state changes under the lock; False (nothing applied) when another process
        has moved the job out of SCHEDULED/RUNNING (cancelled, or marked FAILED)."""
        with updating(self.job_dir) as state:
            if state["state"] not in (JobState.SCHEDULED.value, JobState.RUNNING.value):
                self.stop_requested = True
                return False
            for change in changes:
                change(state)
        return True

    def _still_wanted(self) -> bool:
        """Whether state.json still says SCHEDULED/RUNNING (cheap read, no lock)."""
        try:
            current = read_state(self.job_dir)["state"]
        except (OSError, ValueError):
            return True
        return current in (JobState.SCHEDULED.value, JobState.RUNNING.value)

    def _stop(self, reason: str) -> JobState:
        """Kill the tasks and settle the job: CANCELLED when it is being cancelled, else FAILED."""
        logger.warning("job %s: stopping, %s", self.spec.job_id, reason)
        self._kill_all()
        with updating(self.job_dir) as state:
            current = JobState(state["state"])
            if current.is_stopping:
                settle_stopping(state)
            elif not current.is_terminal:
                stop_orphaned_tasks(state)
                state["status_events"].append(
                    event(SUPERVISOR_DIED, f"local supervisor died: {reason}")
                )
                set_job_state(state, JobState.FAILED)
            return JobState(state["state"])

    def _kill_all(self) -> None:
        """Kill every task still running (whole process groups) and reap them."""
        for run in self.running.values():
            kill_task_group(run.process.pid, run.start_ticks)
        for run in self.running.values():
            with contextlib.suppress(subprocess.TimeoutExpired):
                run.process.wait(timeout=KILL_GRACE_S)
        self.running.clear()

    # -- one tick --------------------------------------------------------------------------------

    def _reap(self, changes: list[Callable[[dict[str, Any]], None]]) -> None:
        for index, run in list(self.running.items()):
            code = run.process.poll()
            if code is None:
                continue
            del self.running[index]
            # Children of the task left in its group go with it, as they would with the VM.
            kill_task_group(run.process.pid, None)
            self._record_end(changes, run, code)

    def _enforce_deadlines(self, changes: list[Callable[[dict[str, Any]], None]]) -> None:
        limit = self.spec.max_run_duration_s
        if limit is None:
            return
        now = time.monotonic()
        for index, run in list(self.running.items()):
            if now - run.started <= limit:
                continue
            logger.warning("task %d exceeded max run duration %ss: killing", index, limit)
            kill_task_group(run.process.pid, run.start_ticks)
            with contextlib.suppress(subprocess.TimeoutExpired):
                run.process.wait(timeout=KILL_GRACE_S)
            del self.running[index]
            description = (
                f"task {index} exceeded max run duration ({limit:g}s) on attempt {run.attempt} "
                f"and was killed; exit code {MAX_RUN_DURATION_EXIT_CODE}"
            )
            exceeded = event(
                MAX_RUN_DURATION_EXCEEDED,
                description,
                task_index=index,
                task_exit_code=MAX_RUN_DURATION_EXIT_CODE,
            )
            self._record_end(changes, run, MAX_RUN_DURATION_EXIT_CODE, first_event=exceeded)

    def _record_end(
        self,
        changes: list[Callable[[dict[str, Any]], None]],
        run: _Running,
        code: int,
        *,
        first_event: dict[str, Any] | None = None,
    ) -> None:
        """Decide retry or final state for a finished attempt, and queue its state change."""
        if code == 0:
            new_task_state = TASK_SUCCEEDED
        elif self.spec.retry.should_retry(code, run.attempt):
            new_task_state = TASK_PENDING
            self.pending.insert(0, run.index)
        else:
            new_task_state = TASK_FAILED
            self.failed = True
        logger.info(
            "task %d attempt %d exited with code %d: %s",
            run.index,
            run.attempt,
            code,
            new_task_state,
        )

        def change(state: dict[str, Any]) -> None:
            if first_event is not None:
                state["status_events"].append(first_event)
            task = state["tasks"][run.index]
            task["state"] = new_task_state
            task["exit_code"] = code
            task["pid"] = None
            task["start_ticks"] = None
            task["history"][-1].update(end_time=now_iso(), exit_code=code)
            if code == 0:
                description = f"Task {run.index} succeeded on attempt {run.attempt}."
            elif new_task_state == TASK_PENDING:
                description = (
                    f"Task {run.index} failed with exit code {code} on attempt {run.attempt}; "
                    f"retrying (max_retry_count {self.spec.retry.max_retry_count})."
                )
            else:
                description = (
                    f"Task {run.index} failed with exit code {code} on attempt {run.attempt}; "
                    "no retry left."
                )
            state["status_events"].append(
                event(
                    TASK_STATE_CHANGED,
                    description,
                    task_index=run.index,
                    task_exit_code=code,
                )
            )

        changes.append(change)

    def _start_tasks(self) -> int:
        """Start pending tasks up to ``parallelism``; none once a task has failed for good.

        Returns how many were started."""
        started = 0
        while (
            self.pending
            and not self.failed
            and not self.stop_requested
            and len(self.running) < self.spec.parallelism
        ):
            # Spawn under the lock and record the pid at once: a cancel from another process
            # then either comes first (and nothing starts) or sees the pid (and kills it).
            with updating(self.job_dir) as state:
                if state["state"] not in (JobState.SCHEDULED.value, JobState.RUNNING.value):
                    self.stop_requested = True
                    return started
                index = self.pending.pop(0)
                attempt = self.attempts.get(index, 0) + 1
                self.attempts[index] = attempt
                run = self._spawn(index, attempt)
                self.running[index] = run
                set_job_state(state, JobState.RUNNING)
                task = state["tasks"][index]
                task.update(
                    state=TASK_RUNNING,
                    attempts=attempt,
                    pid=run.process.pid,
                    start_ticks=run.start_ticks,
                    exit_code=None,
                )
                task["history"].append(
                    {
                        "attempt": attempt,
                        "pid": run.process.pid,
                        "start_time": now_iso(),
                        "end_time": None,
                        "exit_code": None,
                        "log": f"{LOGS_DIR}/task-{index}-attempt-{attempt}.log",
                    }
                )
            started += 1
        return started

    def _spawn(self, index: int, attempt: int) -> _Running:
        """Start one attempt of one task in its own session (so its group can be killed)."""
        env = {
            **task_base_environment(os.environ),
            **self.spec.variables,
            **self.secrets,
            "BATCH_TASK_INDEX": str(index),
            "BATCH_TASK_COUNT": str(self.spec.task_count),
            "BATCH_JOB_ID": self.spec.job_id,
            "BATCH_TASK_RETRY_ATTEMPT": str(attempt - 1),
        }
        log_path = self.job_dir / LOGS_DIR / f"task-{index}-attempt-{attempt}.log"
        log_path.parent.mkdir(exist_ok=True)
        logger.info("starting task %d attempt %d: %s", index, attempt, list(self.spec.argv))
        with open(log_path, "ab") as log:
            process = subprocess.Popen(
                list(self.spec.argv),
                env=env,
                cwd=self.job_dir,
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )
        return _Running(
            index=index,
            attempt=attempt,
            process=process,
            started=time.monotonic(),
            start_ticks=process_start_ticks(process.pid),
        )

    def _finish(self, state: dict[str, Any], final: JobState) -> None:
        for task in state["tasks"]:
            if task["state"] == TASK_PENDING:
                task["state"] = TASK_UNEXECUTED
        set_job_state(state, final)


def supervise(job_dir: Path, argv: tuple[str, ...], *, poll_interval_s: float) -> JobState:
    """Entry point of the detached supervisor process: run the job in ``job_dir``."""
    job_json = (job_dir / JOB_FILE).read_text(encoding="utf-8")
    job = batch_v1.Job.from_json(job_json)
    state = read_state(job_dir)
    spec = JobSpec.from_job(state["job_id"], job, argv)
    logger.info(
        "supervising job %s: %d task(s), parallelism %d, argv %s",
        spec.job_id,
        spec.task_count,
        spec.parallelism,
        list(argv),
    )
    final = Supervisor(job_dir, spec, poll_interval_s=poll_interval_s).run()
    logger.info("job %s ended %s", spec.job_id, final)
    return final


def main_supervise(job_dir: str) -> int:
    """``supervise <job_dir>``: the argv and poll interval come from state.json."""
    logging.basicConfig(
        level=logging.INFO,
        stream=sys.stderr,
        format="%(asctime)s %(process)d %(levelname)s %(name)s: %(message)s",
    )
    path = Path(job_dir).resolve()
    state = read_state(path)
    runner = state.get("runner", {})
    try:
        supervise(
            path,
            tuple(runner["argv"]),
            poll_interval_s=float(runner.get("poll_interval_s", 0.2)),
        )
    except Exception:
        logger.exception("the supervisor of %s failed", path)
        with contextlib.suppress(Exception), updating(path) as failed:
            if JobState(failed["state"]).is_stopping:
                settle_stopping(failed)
            elif not JobState(failed["state"]).is_terminal:
                stop_orphaned_tasks(failed)
                failed["status_events"].append(
                    event(SUPERVISOR_DIED, "local supervisor died: see supervisor.log")
                )
                set_job_state(failed, JobState.FAILED)
        return 1
    return 0
