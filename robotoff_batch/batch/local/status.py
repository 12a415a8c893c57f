"""What the local runner reports from a job directory: the engine-neutral ``JobStatus`` of its
state and the end of a task's log."""

from __future__ import annotations

import os
from datetime import UTC, datetime
from pathlib import Path

from robotoff_batch.batch.engine import (
    JobStatus,
    StatusEvent,
    TaskAttempt,
    TaskStatus,
)
from robotoff_batch.batch.local.state import LOGS_DIR, LocalJobState, task_log

# log_tail reads at most this much of the end of a task log.
LOG_TAIL_MAX_BYTES = 64 * 1024
_EARLIEST = datetime.min.replace(tzinfo=UTC)


def to_job_status(job_dir: Path, state: LocalJobState) -> JobStatus:
    """The job's status as every engine reports it."""
    events = tuple(
        StatusEvent(
            time=e.time,
            type=e.type,
            description=e.description,
            new_state=e.new_state,
            task_exit_code=e.task_exit_code,
            task_index=e.task_index,
        )
        for e in state.status_events
    )
    tasks = tuple(
        TaskStatus(
            index=t.index,
            state=t.state,
            exit_code=t.exit_code,
            attempts=t.attempts,
            runs=tuple(
                TaskAttempt(
                    attempt=h.attempt, start=h.start_time, end=h.end_time, exit_code=h.exit_code
                )
                for h in t.history
            ),
        )
        for t in state.tasks
    )
    return JobStatus(
        job_id=state.job_id,
        state=state.state,
        labels=dict(state.labels),
        status_events=events,
        tasks=tasks,
        create_time=state.create_time,
        update_time=state.update_time,
        log_uri=(job_dir / LOGS_DIR).as_uri(),
        uid=state.uid,
    )


def tail_log_path(job_dir: Path, state: LocalJobState) -> Path | None:
    """The log ``log_tail`` reads: the failed task's last attempt, else the last one."""
    tasks = sorted(state.tasks, key=lambda t: t.index)
    failed = next((t for t in tasks if t.exit_code not in (None, 0) and t.attempts), None)
    if failed is not None:
        index, attempt = failed.index, failed.attempts
    else:
        runs = [(h.start_time or _EARLIEST, t.index, h.attempt) for t in tasks for h in t.history]
        if not runs:
            return None
        _, index, attempt = max(runs)
    path = job_dir / task_log(index, attempt)
    return path if path.is_file() else None


def read_tail(path: Path, lines: int) -> str | None:
    """The last ``lines`` lines of ``path``, reading at most its last 64 KiB (undecodable
    bytes replaced); None when it is gone."""
    try:
        with open(path, "rb") as handle:
            size = handle.seek(0, os.SEEK_END)
            start = max(0, size - LOG_TAIL_MAX_BYTES)
            handle.seek(start)
            data = handle.read(LOG_TAIL_MAX_BYTES)
    except FileNotFoundError:
        return None
    text_lines = data.decode("utf-8", errors="replace").splitlines()
    if start > 0 and text_lines:
        text_lines = text_lines[1:]  # the first line was cut by the seek
    return "\n".join(text_lines[-lines:]) if lines > 0 else ""
