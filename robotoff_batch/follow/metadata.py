"""What a person reads about a batch job in the UI: timeline, tasks, state (metadata tables)."""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from datetime import UTC
from typing import Any

import dagster as dg

from robotoff_batch.batch.engine import JobStatus
from robotoff_batch.names import OWNER_LABEL

# -- metadata a person reads --------------------------------------------------------------------


def short_description(description: str) -> str:
    """A status event's text without the job's resource path (it repeats in every row)."""
    text = description.replace("\n", " ")
    for marker in (" for job projects/", " of job projects/"):
        head, sep, tail = text.partition(marker)
        if sep:
            rest = tail.split(" ", 1)
            text = head + ("." if not rest[1:] else ". " + rest[1])
    return text.strip()


def metadata_table(
    columns: Sequence[tuple[str, str]], rows: Iterable[Mapping[str, Any]]
) -> dg.MetadataValue:
    """A table for the UI from (name, type) columns and rows keyed by those names."""
    return dg.MetadataValue.table(
        records=[dg.TableRecord({name: row[name] for name, _ in columns}) for row in rows],
        schema=dg.TableSchema(columns=[dg.TableColumn(name, kind) for name, kind in columns]),
    )


TIMELINE_COLUMNS = (("time (UTC)", "string"), ("event", "string"), ("description", "string"))
TASK_COLUMNS = (
    ("task", "int"),
    ("state", "string"),
    ("exit code", "string"),
    ("attempts", "int"),
    ("reason", "string"),
)


def timeline_table(status: JobStatus) -> dg.MetadataValue:
    return metadata_table(
        TIMELINE_COLUMNS,
        (
            {
                "time (UTC)": e.time.astimezone(UTC).strftime("%Y-%m-%d %H:%M:%S"),
                "event": e.type,
                "description": short_description(e.description),
            }
            for e in status.status_events
        ),
    )


def tasks_table(status: JobStatus) -> dg.MetadataValue:
    return metadata_table(
        TASK_COLUMNS,
        (
            {
                "task": t.index,
                "state": t.state,
                "exit code": "" if t.exit_code is None else str(t.exit_code),
                "attempts": t.attempts,
                "reason": t.exit_reason or "",
            }
            for t in status.tasks
        ),
    )


def job_metadata(status: JobStatus) -> dict[str, dg.MetadataValue]:
    """What a person reads about a job, in flight or ended: state, timeline, tasks, duration,
    the launch run and the logs."""
    meta: dict[str, dg.MetadataValue] = {
        "state": dg.MetadataValue.text(status.state.value),
        "timeline": timeline_table(status),
    }
    if status.tasks:
        meta["tasks"] = tasks_table(status)
    duration = status.run_duration_s
    if duration is not None:
        meta["run_duration_s"] = dg.MetadataValue.float(round(duration, 1))
    owner = status.labels.get(OWNER_LABEL)
    if owner:
        meta["launch_run"] = dg.MetadataValue.dagster_run(owner)
    if status.log_uri:
        meta["logs"] = dg.MetadataValue.url(status.log_uri)
    return meta


def state_metadata(status: JobStatus, previous: str | None) -> dict[str, dg.MetadataValue]:
    """What a state observation of a job in flight shows."""
    return {
        "previous_state": dg.MetadataValue.text(previous or "(first seen)"),
        **job_metadata(status),
    }
