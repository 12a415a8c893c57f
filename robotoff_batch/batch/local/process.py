"""Process control of the local runner (psutil): telling our processes from recycled pids,
killing a task's process group, and settling a job whose processes are gone."""

from __future__ import annotations

import contextlib
import logging
import os
import signal
import subprocess
import time
from collections.abc import Callable, Mapping, Sequence
from datetime import UTC, datetime
from pathlib import Path

import psutil

from robotoff_batch.batch.engine import JobState
from robotoff_batch.batch.local.state import (
    JOB_CANCELLED,
    SUPERVISOR_DIED,
    SUPERVISOR_LOG,
    TASK_FAILED,
    TASK_PENDING,
    TASK_RUNNING,
    TASK_STATE_CHANGED,
    TASK_UNEXECUTED,
    LocalJobState,
    ProcessRecord,
    now,
    updating,
)

logger = logging.getLogger(__name__)

# A job whose supervisor was never recorded this long after submission is declared dead.
SUPERVISOR_START_TIMEOUT_S = 60.0

_GONE = (psutil.STATUS_ZOMBIE, psutil.STATUS_DEAD)
_CLOCK_TICKS = os.sysconf("SC_CLK_TCK")
_PACKAGE_ROOT = Path(__file__).resolve().parents[3]


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


def signal_process(pid: int, sig: int) -> None:
    """Send ``sig`` to ``pid``; a process already gone (or not ours) is ignored."""
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.kill(pid, sig)


def terminate(
    pid: int, start_ticks: int | None, *, what: str, grace_s: float, poll: Callable[[], None]
) -> None:
    """SIGTERM the process recorded as (pid, start ticks), SIGKILL it if it still runs after
    ``grace_s``; ``poll`` is called while waiting. ``what`` names it in the log."""
    signal_process(pid, signal.SIGTERM)
    deadline = time.monotonic() + grace_s
    while time.monotonic() < deadline and is_same_process_alive(pid, start_ticks):
        poll()
        time.sleep(0.05)
    if is_same_process_alive(pid, start_ticks):
        logger.warning("%s ignored SIGTERM: killing it", what)
        signal_process(pid, signal.SIGKILL)


def wait_gone(pids: Sequence[int], timeout_s: float) -> None:
    """Wait (at most ``timeout_s``) until none of ``pids`` runs."""
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline and any(process_start_ticks(p) is not None for p in pids):
        time.sleep(0.05)


def spawn_detached(
    argv: Sequence[str], *, log_path: Path, cwd: Path, env: Mapping[str, str]
) -> subprocess.Popen[bytes]:
    """Start ``argv`` in its own session (it survives our exit and signals, and its group
    can be killed), stdout and stderr appended to ``log_path``."""
    with open(log_path, "ab") as log:
        return subprocess.Popen(
            list(argv),
            stdin=subprocess.DEVNULL,
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
            env=dict(env),
            cwd=cwd,
        )


def start_supervisor(job_dir: Path, *, python: str) -> subprocess.Popen[bytes] | None:
    """Start the detached supervisor of the job in ``job_dir`` (own session, so it survives
    our exit and signals) and record its pid; None when it cannot start (the job FAILED)."""
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join(
        p for p in (str(_PACKAGE_ROOT), env.get("PYTHONPATH", "")) if p
    )
    argv = [python, "-m", "robotoff_batch.batch.local", "supervise", str(job_dir)]
    job_id = job_dir.name
    try:
        process = spawn_detached(argv, log_path=job_dir / SUPERVISOR_LOG, cwd=job_dir, env=env)
    except OSError as error:
        logger.error("cannot start the supervisor of job %s: %s", job_id, error)
        with updating(job_dir) as state:
            state.add_event(SUPERVISOR_DIED, f"local supervisor could not start: {error}")
            state.set_state(JobState.FAILED)
        return None
    ticks = process_start_ticks(process.pid)
    with updating(job_dir) as state:
        if not state.supervisor.pid:
            state.supervisor = ProcessRecord(pid=process.pid, start_ticks=ticks)
    logger.info("job %s: supervisor pid %d", job_id, process.pid)
    return process


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
# Settling a job whose processes are gone


def stop_orphaned_tasks(state: LocalJobState) -> None:
    """Kill the process groups of tasks still marked RUNNING (their supervisor is gone)."""
    for task in state.tasks:
        if task.state == TASK_RUNNING:
            kill_task_group(task.pid, task.start_ticks)
            task.state = TASK_FAILED
            task.pid = None
            task.start_ticks = None
            if task.history and task.history[-1].end_time is None:
                task.history[-1].end_time = now()
            state.add_event(
                TASK_STATE_CHANGED,
                f"Task {task.index} was killed on attempt {task.attempts}.",
                task_index=task.index,
            )
        elif task.state == TASK_PENDING:
            task.state = TASK_UNEXECUTED


def settle_stopping(state: LocalJobState) -> None:
    """End a job that is being stopped: CANCELLATION_IN_PROGRESS -> CANCELLED, with an event
    saying a cancel request did it (DELETION_IN_PROGRESS, left by older versions -> DELETED).

    Its tasks still marked running are killed. Does nothing to a job in any other state.
    """
    current = state.state
    if not current.is_stopping:
        return
    stop_orphaned_tasks(state)
    if current is JobState.CANCELLATION_IN_PROGRESS:
        state.add_event(JOB_CANCELLED, f"Job {state.name} was cancelled by a cancel request.")
        state.set_state(JobState.CANCELLED)
    else:
        state.set_state(JobState.DELETED)


def settle_orphaned(state: LocalJobState, reason: str) -> None:
    """End a job left by its supervisor: CANCELLED when it was being cancelled, else FAILED
    with a SUPERVISOR_DIED event giving ``reason``. A finished job is left as it is."""
    if state.state.is_stopping:
        settle_stopping(state)
    elif not state.state.is_terminal:
        stop_orphaned_tasks(state)
        state.add_event(SUPERVISOR_DIED, reason)
        state.set_state(JobState.FAILED)


def kill_recorded_tasks(job_dir: Path) -> list[int]:
    """Kill whatever tasks are still recorded as running and, unless the supervisor did,
    end the job CANCELLED. Returns the pids of the tasks it found running."""
    with updating(job_dir) as state:
        task_pids = [t.pid for t in state.tasks if t.pid]
        for task in state.tasks:
            kill_task_group(task.pid, task.start_ticks)
        settle_stopping(state)
    return task_pids


def supervisor_lost(state: LocalJobState) -> bool:
    """Whether the job is unfinished and its supervisor is gone (or never started)."""
    if state.state.is_terminal:
        return False
    if not state.supervisor.pid:
        age = (datetime.now(UTC) - state.create_time).total_seconds()
        return age > SUPERVISOR_START_TIMEOUT_S
    return not is_same_process_alive(state.supervisor.pid, state.supervisor.start_ticks)


def check_alive(job_dir: Path, state: LocalJobState) -> LocalJobState:
    """Settle a job whose supervisor is gone without ending it (crash, kill -9, reboot)."""
    if not supervisor_lost(state):
        return state
    with updating(job_dir) as fresh:
        if not supervisor_lost(fresh):
            return fresh
        pid = fresh.supervisor.pid
        reason = (
            f"local supervisor died (pid {pid}); see {SUPERVISOR_LOG}"
            if pid
            else "local supervisor never started"
        )
        if not fresh.state.is_stopping:
            logger.error("job %s: %s", fresh.job_id, reason)
        settle_orphaned(fresh, reason)
        return fresh
