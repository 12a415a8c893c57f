"""The detached supervisor that runs one local job's tasks, recording everything in state.json
(format and locking in :mod:`robotoff_batch.batch.local.state`).

Started by the engine as ``python -m robotoff_batch.batch.local supervise <job_dir>``; it
re-reads state.json on every update, so a job marked CANCELLATION_IN_PROGRESS or FAILED by
another process stops (a cancelled job ends CANCELLED; see
:func:`~robotoff_batch.batch.local.process.settle_stopping`).
"""

from __future__ import annotations

import contextlib
import functools
import logging
import os
import signal
import subprocess
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from robotoff_batch.batch.engine import JobState
from robotoff_batch.batch.local.process import (
    kill_task_group,
    process_start_ticks,
    settle_orphaned,
    spawn_detached,
)
from robotoff_batch.batch.local.spec import (
    JobSpec,
    SecretResolutionError,
    resolve_secrets,
)
from robotoff_batch.batch.local.state import (
    MAX_RUN_DURATION_EXCEEDED,
    MAX_RUN_DURATION_EXIT_CODE,
    SECRET_UNRESOLVED,
    TASK_FAILED,
    TASK_PENDING,
    TASK_STATE_CHANGED,
    TASK_UNEXECUTED,
    EventRecord,
    LocalJobState,
    ProcessRecord,
    read_state,
    task_log,
    updating,
)

logger = logging.getLogger(__name__)

KILL_GRACE_S = 2.0
_ACTIVE = (JobState.SCHEDULED, JobState.RUNNING)

Change = Callable[[LocalJobState], None]


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
            if state.state is not JobState.QUEUED:
                logger.warning(
                    "job %s is %s, not QUEUED: not starting", self.spec.job_id, state.state
                )
                return state.state
            state.supervisor = ProcessRecord(pid=me, start_ticks=process_start_ticks(me))
            state.set_state(JobState.SCHEDULED)
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
            state.add_event(SECRET_UNRESOLVED, reason)
            for task in state.tasks:
                task.state = TASK_FAILED
            state.set_state(JobState.FAILED)
        return JobState.FAILED

    def _loop(self) -> JobState:
        """Tick until every task has ended: reap, enforce deadlines, record, start more."""
        while True:
            if self.stop_requested:
                return self._stop("the supervisor was told to stop (signal or cancel)")
            changes: list[Change] = []
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

    def _apply(self, changes: list[Change]) -> bool:
        """Apply state changes under the lock; False (nothing applied) when another process
        has moved the job out of SCHEDULED/RUNNING (cancelled, or marked FAILED)."""
        with updating(self.job_dir) as state:
            if state.state not in _ACTIVE:
                self.stop_requested = True
                return False
            for change in changes:
                change(state)
        return True

    def _still_wanted(self) -> bool:
        """Whether state.json still says SCHEDULED/RUNNING (no lock)."""
        try:
            current = read_state(self.job_dir).state
        except (OSError, ValueError):
            return True
        return current in _ACTIVE

    def _stop(self, reason: str) -> JobState:
        """Kill the tasks and settle the job: CANCELLED when it is being cancelled, else FAILED."""
        logger.warning("job %s: stopping, %s", self.spec.job_id, reason)
        self._kill_all()
        with updating(self.job_dir) as state:
            settle_orphaned(state, f"local supervisor died: {reason}")
            return state.state

    def _kill_all(self) -> None:
        """Kill every task still running (whole process groups) and reap them."""
        for run in self.running.values():
            kill_task_group(run.process.pid, run.start_ticks)
        for run in self.running.values():
            with contextlib.suppress(subprocess.TimeoutExpired):
                run.process.wait(timeout=KILL_GRACE_S)
        self.running.clear()

    # -- one tick --------------------------------------------------------------------------------

    def _reap(self, changes: list[Change]) -> None:
        for index, run in list(self.running.items()):
            code = run.process.poll()
            if code is None:
                continue
            del self.running[index]
            # Children of the task left in its group go with it, as they would with the VM.
            kill_task_group(run.process.pid, None)
            self._record_end(changes, run, code)

    def _enforce_deadlines(self, changes: list[Change]) -> None:
        limit = self.spec.max_run_duration_s
        if limit is None:
            return
        clock = time.monotonic()
        for index, run in list(self.running.items()):
            if clock - run.started <= limit:
                continue
            logger.warning("task %d exceeded max run duration %ss: killing", index, limit)
            kill_task_group(run.process.pid, run.start_ticks)
            with contextlib.suppress(subprocess.TimeoutExpired):
                run.process.wait(timeout=KILL_GRACE_S)
            del self.running[index]
            exceeded = EventRecord(
                type=MAX_RUN_DURATION_EXCEEDED,
                description=(
                    f"task {index} exceeded max run duration ({limit:g}s) on attempt "
                    f"{run.attempt} and was killed; exit code {MAX_RUN_DURATION_EXIT_CODE}"
                ),
                task_index=index,
                task_exit_code=MAX_RUN_DURATION_EXIT_CODE,
            )
            self._record_end(changes, run, MAX_RUN_DURATION_EXIT_CODE, first_event=exceeded)

    def _record_end(
        self,
        changes: list[Change],
        run: _Running,
        code: int,
        *,
        first_event: EventRecord | None = None,
    ) -> None:
        """Decide retry or final state for a finished attempt, and queue its state change."""
        new_task_state, description = self.spec.retry.attempt_end(run.index, run.attempt, code)
        if new_task_state == TASK_PENDING:
            self.pending.insert(0, run.index)
        elif new_task_state == TASK_FAILED:
            self.failed = True
        logger.info(
            "task %d attempt %d exited with code %d: %s",
            run.index,
            run.attempt,
            code,
            new_task_state,
        )

        def change(state: LocalJobState) -> None:
            if first_event is not None:
                state.status_events.append(first_event)
            state.tasks[run.index].end_attempt(new_task_state, code)
            state.add_event(
                TASK_STATE_CHANGED, description, task_index=run.index, task_exit_code=code
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
                if state.state not in _ACTIVE:
                    self.stop_requested = True
                    return started
                index = self.pending.pop(0)
                attempt = self.attempts.get(index, 0) + 1
                self.attempts[index] = attempt
                run = self._spawn(index, attempt)
                self.running[index] = run
                state.set_state(JobState.RUNNING)
                state.tasks[index].start_attempt(attempt, run.process.pid, run.start_ticks)
            started += 1
        return started

    def _spawn(self, index: int, attempt: int) -> _Running:
        """Start one attempt of one task in its own session (so its group can be killed)."""
        env = self.spec.task_environment(index, attempt, self.secrets, os.environ)
        log_path = self.job_dir / task_log(index, attempt)
        log_path.parent.mkdir(exist_ok=True)
        logger.info("starting task %d attempt %d: %s", index, attempt, list(self.spec.argv))
        process = spawn_detached(self.spec.argv, log_path=log_path, cwd=self.job_dir, env=env)
        return _Running(
            index=index,
            attempt=attempt,
            process=process,
            started=time.monotonic(),
            start_ticks=process_start_ticks(process.pid),
        )

    def _finish(self, state: LocalJobState, final: JobState) -> None:
        for task in state.tasks:
            if task.state == TASK_PENDING:
                task.state = TASK_UNEXECUTED
        state.set_state(final)
