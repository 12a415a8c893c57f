"""Following batch jobs: one engine listing per poll, state changes as Dagster asset events.

The sensor and the CLI (``launch --wait``, ``demo``) share this code, so a job followed from
either shows the same history in the UI.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime

import dagster as dg

from robotoff_batch.batch.engine import BatchEngine, JobNotFoundError, JobState, JobStatus
from robotoff_batch.batch.request import APP_LABEL, JOB_TYPE_LABEL

logger = logging.getLogger(__name__)

OWNER_LABEL = "dagster-run-id"


def partitions_def_name(job_type: str) -> str:
    """Name of the dynamic partitions (one per launched batch job) of a job type."""
    return f"{job_type.replace('-', '_')}_batch_jobs"


def batch_job_asset_key(job_type: str) -> dg.AssetKey:
    return dg.AssetKey([job_type.replace("-", "_"), "batch_job"])


def predictions_asset_key(job_type: str) -> dg.AssetKey:
    return dg.AssetKey([job_type.replace("-", "_"), "predictions"])


def import_job_name(job_type: str) -> str:
    return f"import_{job_type.replace('-', '_')}"


@dataclass
class PollResult:
    """What one poll found: asset events to record, jobs to import, the new tracked states."""

    tracked: dict[str, dict[str, str]]
    new_partitions: dict[str, list[str]] = field(default_factory=dict)
    asset_events: list[dg.AssetObservation | dg.AssetMaterialization] = field(default_factory=list)
    succeeded: list[JobStatus] = field(default_factory=list)
    failed: list[JobStatus] = field(default_factory=list)
    changes: list[tuple[str, str, str]] = field(default_factory=list)  # (job id, old, new)


def timeline_markdown(status: JobStatus) -> str:
    """The job's status events as a markdown table."""
    rows = ["| time (UTC) | event | description |", "|---|---|---|"]
    for event in status.status_events:
        when = event.time.astimezone(UTC).strftime("%Y-%m-%d %H:%M:%S")
        desc = event.description.replace("|", "\\|").replace("\n", " ")
        rows.append(f"| {when} | {event.type} | {desc} |")
    return "\n".join(rows)


def status_metadata(status: JobStatus, previous: str | None) -> dict[str, dg.MetadataValue]:
    meta: dict[str, dg.MetadataValue] = {
        "batch_job_id": dg.MetadataValue.text(status.job_id),
        "state": dg.MetadataValue.text(status.state.value),
        "previous_state": dg.MetadataValue.text(previous or "(new)"),
        "state_history": dg.MetadataValue.md(timeline_markdown(status)),
        "tasks": dg.MetadataValue.json(
            [
                {
                    "index": t.index,
                    "state": t.state,
                    "exit_code": t.exit_code,
                    "attempts": t.attempts,
                    "exit_reason": t.exit_reason,
                }
                for t in status.tasks
            ]
        ),
        "labels": dg.MetadataValue.json(dict(status.labels)),
    }
    if status.log_uri:
        meta["logs"] = dg.MetadataValue.url(status.log_uri)
    if status.state in (JobState.FAILED, JobState.DELETED):
        meta["failure"] = dg.MetadataValue.md(f"```\n{status.failure_summary}\n```")
    return meta


def poll_jobs(
    *,
    engine: BatchEngine,
    tracked: Mapping[str, Mapping[str, str]],
    known_partitions: Mapping[str, Iterable[str]],
    owner_cancelled: Callable[[str], bool] | None = None,
) -> PollResult:
    """Compare the engine's jobs with what we last saw; one ``list_jobs`` call in the usual case.

    ``tracked`` maps job id -> {"job_type", "state"} for jobs seen but not finished.
    ``known_partitions`` maps job type -> batch job ids already registered as partitions; a
    job of a known type that is neither tracked nor registered is new (launched from the UI,
    the CLI or a schedule) and gets registered. Extra ``get_job`` calls happen only for a job
    that failed (to fetch its events and exit codes) or vanished from the listing.
    """
    known = {jt: set(ids) for jt, ids in known_partitions.items()}
    listed = {s.job_id: s for s in engine.list_jobs(labels=dict([APP_LABEL]))}
    result = PollResult(tracked={k: dict(v) for k, v in tracked.items()})

    for status in listed.values():
        job_type = status.labels.get(JOB_TYPE_LABEL)
        if job_type not in known or status.job_id in result.tracked:
            continue
        if status.job_id not in known[job_type]:
            result.new_partitions.setdefault(job_type, []).append(status.job_id)
            result.tracked[status.job_id] = {"job_type": job_type, "state": "(new)"}

    for job_id, info in list(result.tracked.items()):
        job_type = info["job_type"]
        found = listed.get(job_id)
        if found is None:
            try:
                found = engine.get_job(job_id=job_id)
            except JobNotFoundError:
                found = JobStatus(job_id=job_id, state=JobState.DELETED, labels={})
        status = found
        if status.state == JobState.FAILED:
            status = engine.get_job(job_id=job_id)  # full events and per-task exit codes
        owner = status.labels.get(OWNER_LABEL)
        if not status.state.is_terminal and owner and owner_cancelled and owner_cancelled(owner):
            logger.warning("cancelling %s: its Dagster run %s was cancelled", job_id, owner)
            engine.cancel(job_id=job_id)
            try:
                status = engine.get_job(job_id=job_id)
            except JobNotFoundError:
                status = JobStatus(job_id=job_id, state=JobState.DELETED, labels=status.labels)
        previous = info["state"]
        if status.state.value == previous:
            continue
        result.changes.append((job_id, previous, status.state.value))
        logger.info("batch job %s: %s -> %s", job_id, previous, status.state.value)
        meta = status_metadata(status, previous if previous != "(new)" else None)
        key = batch_job_asset_key(job_type)
        if status.state == JobState.SUCCEEDED:
            result.asset_events.append(
                dg.AssetMaterialization(asset_key=key, partition=job_id, metadata=meta)
            )
            result.succeeded.append(status)
        else:
            result.asset_events.append(
                dg.AssetObservation(asset_key=key, partition=job_id, metadata=meta)
            )
            if status.state in (JobState.FAILED, JobState.DELETED):
                logger.warning(
                    "batch job %s %s:\n%s", job_id, status.state.value, status.failure_summary
                )
                result.failed.append(status)
        if status.state.is_terminal:
            del result.tracked[job_id]
        else:
            info["state"] = status.state.value
    return result


def encode_cursor(tracked: Mapping[str, Mapping[str, str]]) -> str:
    return json.dumps({"tracked": tracked, "at": datetime.now(UTC).isoformat()}, sort_keys=True)


def decode_cursor(cursor: str | None) -> dict[str, dict[str, str]]:
    if not cursor:
        return {}
    try:
        data = json.loads(cursor)
        return {str(k): dict(v) for k, v in data.get("tracked", {}).items()}
    except (ValueError, AttributeError):
        logger.warning("ignoring an unreadable sensor cursor")
        return {}
