"""Cloud Batch messages -> engine-neutral values: label filters, states, status events, task
attempts, request ids (pure functions of ``batch_v1`` messages)."""

from __future__ import annotations

import re
import uuid
from collections.abc import Mapping, Sequence
from dataclasses import replace
from datetime import datetime
from typing import Any

from google.cloud import batch_v1

from robotoff_batch.batch.engine import JobState, StatusEvent, TaskAttempt, TaskStatus

# request_id of CancelJob / DeleteJob: a uuid5 of the job name, so that a retried call (ours,
# or one whose response was lost) is recognised by Batch as the same request.
_REQUEST_ID_NAMESPACE = uuid.UUID("5b0f8a3e-2f4c-5d7e-9a61-0c3b7e2d4f18")
_NEW_STATE_RE = re.compile(r"\bfrom\s+([A-Z_]+)\s+to\s+([A-Z_]+)")
_PLAIN_LABEL_KEY = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")


def _quote(value: str) -> str:
    return '"' + value.replace("\\", "\\\\").replace('"', '\\"') + '"'


def labels_filter(labels: Mapping[str, str]) -> str:
    """The ``ListJobs`` filter matching every label: ``labels.app="x" AND labels."job-type"="y"``.

    Keys that are not plain identifiers (``job-type``, ``dagster-run-id``) are quoted, as the
    AIP-160 filter grammar requires for a field name containing ``-``.
    """
    clauses = []
    for key, value in sorted(labels.items()):
        field = key if _PLAIN_LABEL_KEY.match(key) else _quote(key)
        clauses.append(f"labels.{field}={_quote(value)}")
    return " AND ".join(clauses)


def _job_state(name: str) -> JobState:
    try:
        return JobState(name)
    except ValueError:
        return JobState.STATE_UNSPECIFIED


def _time(message: Any, field: str) -> datetime | None:
    """A proto-plus timestamp field, or None when unset."""
    if field not in message:
        return None
    value = getattr(message, field)
    return value if isinstance(value, datetime) and value.timestamp() > 0 else None


def _status_event(event: batch_v1.StatusEvent) -> StatusEvent:
    new_state: JobState | None = None
    match = _NEW_STATE_RE.search(event.description or "")
    if match and event.type_.upper().startswith("STATUS_CHANGED"):
        new_state = _job_state(match.group(2))
    exit_code = event.task_execution.exit_code if "task_execution" in event else None
    return StatusEvent(
        time=_time(event, "event_time") or datetime.fromtimestamp(0).astimezone(),
        type=event.type_,
        description=event.description,
        new_state=new_state,
        task_exit_code=exit_code,
    )


_TASK_NEW_STATE_RE = re.compile(r"\bto\s+([A-Z_]+)")
# Task states in which a VM is busy with the task.
_TASK_BUSY = frozenset({"ASSIGNED", "RUNNING"})


def _task_state_of(event: batch_v1.StatusEvent) -> str | None:
    """The task state an event moved the task to: its ``task_state``, else its description
    ("Task state is updated from ASSIGNED to RUNNING on zones/..."); None when neither says."""
    if "task_state" in event:
        name = batch_v1.TaskStatus.State(event.task_state).name
        if name != "STATE_UNSPECIFIED":
            return name
    match = _TASK_NEW_STATE_RE.search(event.description or "")
    return match.group(1) if match else None


def _event_timestamp(event: batch_v1.StatusEvent) -> float:
    when = _time(event, "event_time")
    return when.timestamp() if when is not None else 0.0


def task_attempts(events: Sequence[batch_v1.StatusEvent]) -> list[TaskAttempt]:
    """A task's attempts from its status events, oldest first. An attempt starts when a VM
    takes the task (ASSIGNED, which includes pulling the image; RUNNING when no ASSIGNED was
    reported) and ends at the next event that moves the task elsewhere (SUCCEEDED, FAILED, or
    PENDING for a retry), which carries the exit code: the time its VM was busy with it.

    An end seen without a start (events lost or trimmed) is an attempt with an unknown start;
    an attempt not ended has no end (still running, or its end was not reported). A second
    end of the same attempt (another event with its exit code) is not another attempt."""
    attempts: list[TaskAttempt] = []
    start: datetime | None = None
    running = False
    ended = False  # an attempt ended and no new one started since
    for event in sorted(events, key=_event_timestamp):
        when = _time(event, "event_time")
        state = _task_state_of(event)
        exit_code = event.task_execution.exit_code if "task_execution" in event else None
        if state in _TASK_BUSY:
            if not running:
                start, running, ended = when, True, False
            continue
        if running and (state is not None or exit_code is not None):
            attempts.append(TaskAttempt(len(attempts) + 1, start, when, exit_code))
            start, running, ended = None, False, True
        elif exit_code is not None and ended and attempts[-1].exit_code is None:
            attempts[-1] = replace(attempts[-1], exit_code=exit_code)
        elif exit_code is not None and not ended:
            attempts.append(TaskAttempt(len(attempts) + 1, None, when, exit_code))
            ended = True
    if running:
        attempts.append(TaskAttempt(len(attempts) + 1, start, None))
    return attempts


def _job_id_of(name: str) -> str:
    return name.rsplit("/", 1)[-1]


def location_of(name: str) -> str | None:
    """``projects/P/locations/L/jobs/J`` -> ``L``; None for a name without a location."""
    parts = name.split("/")
    return parts[3] if len(parts) > 3 and parts[2] == "locations" else None


def request_id(action: str, job_name: str) -> str:
    """The deterministic ``request_id`` of ``action`` ("cancel", "delete") on ``job_name``."""
    return str(uuid.uuid5(_REQUEST_ID_NAMESPACE, f"{action}:{job_name}"))


def task_status(task: batch_v1.Task, position: int) -> TaskStatus:
    """One task of ``ListTasks``: its state, last exit code and attempts (``position`` is its
    index when the name does not end with one)."""
    executions = [
        e.task_execution.exit_code for e in task.status.status_events if "task_execution" in e
    ]
    index_text = _job_id_of(task.name)
    runs = tuple(task_attempts(task.status.status_events))
    return TaskStatus(
        index=int(index_text) if index_text.isdigit() else position,
        state=task.status.state.name,
        exit_code=executions[-1] if executions else None,
        attempts=len(runs) or len(executions),
        runs=runs,
    )
