"""What a person reads about a batch job in the UI: timeline, tasks, state (metadata tables),
and how an ended job ended (:func:`job_outcome`: the check, the partition and ``status JOB``)."""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC
from typing import Any

import dagster as dg

from robotoff_batch.batch.engine import BatchEngine, JobState, JobStatus
from robotoff_batch.names import OWNER_LABEL

LOG_TAIL_LINES = 30

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


# -- how an ended job ended -------------------------------------------------------------------


def failure_reason(status: JobStatus) -> str:
    """One paragraph: the state, the failed tasks' exit codes and reasons, the last events."""
    lines = [f"batch job {status.job_id} ended {status.state.value}"]
    failed = [t for t in status.tasks if t.exit_code not in (None, 0)]
    for task in failed:
        lines.append(f"task {task.index}: exit code {task.exit_code}: {task.exit_reason}")
    if not failed:
        codes = [e.task_exit_code for e in status.status_events if e.task_exit_code]
        if codes:
            lines.append(f"exit code {codes[-1]}")
    events = [e for e in status.status_events if e.description][-3:]
    lines += [f"{e.type}: {short_description(e.description)}" for e in events]
    return "\n".join(lines)


CANCELLED_WHY = (
    "cancelled on request (robotoff-batch cancel, the UI's cancel job, its launch run's "
    "cancellation, cancel_when_stuck or a capacity fallback), not a failure of its tasks"
)


@dataclass(frozen=True)
class JobOutcome:
    """How a job that did not succeed ended, as the check, the partition and ``status JOB``
    tell it: a CANCELLED job reads as cancelled, not as failed."""

    status: JobStatus
    reason: str
    exit_codes: Mapping[int, int] = field(default_factory=dict)
    tail: str | None = None

    @property
    def cancelled(self) -> bool:
        return self.status.state is JobState.CANCELLED

    @property
    def last_log_line(self) -> str:
        lines = (self.tail or "").strip().splitlines()
        return lines[-1] if lines else ""

    @property
    def headline(self) -> str:
        """One line: ``FAILED (exit code 3): <last log line>`` / ``CANCELLED: ...``."""
        if self.cancelled:
            text = f"CANCELLED: batch job {self.status.job_id} was {CANCELLED_WHY}"
            return text + "; nothing is imported"
        text = self.reason.splitlines()[0]
        if self.exit_codes:
            text += " (exit code " + ", ".join(str(c) for c in self.exit_codes.values()) + ")"
        if self.last_log_line:
            text += f": {self.last_log_line[:200]}"
        return text

    @property
    def exit_codes_text(self) -> str:
        codes = ", ".join(f"task {i}: {c}" for i, c in sorted(self.exit_codes.items()))
        return codes or "none"

    def metadata(self) -> dict[str, Any]:
        """State, outcome, reason, exit codes, the log's last line and tail (text, not
        markdown or JSON, where the UI shows text inline and the others behind a button)."""
        meta: dict[str, Any] = {
            "state": dg.MetadataValue.text(self.status.state.value),
            "outcome": dg.MetadataValue.text(self.headline),
            "reason": dg.MetadataValue.text(" | ".join(self.reason.splitlines())),
            "exit_codes": dg.MetadataValue.text(self.exit_codes_text),
        }
        if self.tail:
            meta["last_log_line"] = dg.MetadataValue.text(self.last_log_line[:300])
            meta["log_tail"] = dg.MetadataValue.md(f"```\n{self.tail}\n```")
        if self.status.log_uri:
            meta["logs"] = dg.MetadataValue.url(self.status.log_uri)
        return meta

    def lines(self) -> list[str]:
        """What ``status JOB`` prints about it."""
        out = [f"outcome: {self.headline}", f"exit codes: {self.exit_codes_text}"]
        if self.tail:
            out += ["last lines of the task's log:", self.tail]
        return out


def job_outcome(engine: BatchEngine, status: JobStatus, lines: int = LOG_TAIL_LINES) -> JobOutcome:
    """The outcome of an ended job that did not succeed, with the end of its failed task's log
    (read from the engine: the local runner's files, Cloud Logging)."""
    exit_codes = {t.index: t.exit_code for t in status.tasks if t.exit_code is not None}
    failed = {i: c for i, c in exit_codes.items() if c != 0}
    tail = engine.log_tail(job_id=status.job_id, lines=lines)
    return JobOutcome(status=status, reason=failure_reason(status), exit_codes=failed, tail=tail)
