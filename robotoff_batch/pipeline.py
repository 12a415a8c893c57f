"""The steps of a batch job as plain functions: stage, submit, import.

Dagster assets call them; so could any other caller. Nothing here knows about Dagster.
"""

from __future__ import annotations

import logging
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pyarrow as pa

from robotoff_batch.batch.engine import BatchEngine, JobState, JobStatus
from robotoff_batch.batch.request import build_create_job_request
from robotoff_batch.config.models import JobConfig
from robotoff_batch.job_types.base import INPUT_FILE, JobType
from robotoff_batch.staging import ObjectExistsError, Staging, iter_output_uris

logger = logging.getLogger(__name__)


class PipelineError(RuntimeError):
    """A step cannot go on; the message says why and what was (not) done."""


def stage_files(
    *, staging: Staging, job_type: str, job_id: str, files: Mapping[str, Path]
) -> dict[str, str]:
    """Upload a job's input files, create-only; an identical object from a retry is kept."""
    from robotoff_batch.gcs_staging import IdenticalObjectExistsError

    staging.check_access()
    job_uri = staging.job_uri(job_type=job_type, job_id=job_id)
    uris: dict[str, str] = {}
    for name, path in files.items():
        uri = f"{job_uri}/{name}"
        try:
            staging.upload_file(local_path=str(path), uri=uri)
        except IdenticalObjectExistsError:
            logger.info("%s was already staged by an earlier attempt of this run", uri)
        except ObjectExistsError as exc:
            raise PipelineError(
                f"{uri} already exists with other content; staging never overwrites. "
                "Launch again (a new launch gets a new job id)."
            ) from exc
        uris[name] = uri
    return uris


def container_environment(
    *, job_uri: str, staged: Mapping[str, str], webhook_url: str | None
) -> dict[str, str]:
    """Robotoff's container contract: where to read, where to write, whom to call."""
    env = {
        "INPUT_FILE_PATH": staged[INPUT_FILE],
        "OUTPUT_FILE_PATH": f"{job_uri}/output",
    }
    for name, uri in staged.items():
        if name != INPUT_FILE:
            env[f"{Path(name).stem.upper()}_FILE_PATH"] = uri
    if job_uri.startswith("gs://"):
        env["BUCKET_NAME"] = job_uri.removeprefix("gs://").split("/", 1)[0]
    if webhook_url:
        env["WEBHOOK_URL"] = webhook_url
    return env


def submit_job(
    *,
    engine: BatchEngine,
    config: JobConfig,
    job_type: str,
    job_id: str,
    project: str,
    environment: Mapping[str, str],
    labels: Mapping[str, str],
) -> tuple[JobStatus, Any]:
    """Build the request from the validated config and submit it (idempotent by job id)."""
    engine_location = getattr(engine, "location", None)
    if engine_location and engine_location != config.resources.location:
        # The sensor lists one region: a job created elsewhere would never be followed.
        raise PipelineError(
            f"{job_type} runs in {config.resources.location} but the batch engine follows "
            f"{engine_location} (ROBOTOFF_BATCH_GCP_LOCATION): nothing was submitted"
        )
    request = build_create_job_request(
        config.resources,
        job_type=job_type,
        job_id=job_id,
        project=project,
        environment=environment,
        labels=labels,
    )
    status = engine.submit(request=request)
    return status, request


@dataclass(frozen=True)
class ImportOutcome:
    batch_job_id: str
    predictions: int
    already_imported: bool
    output_files: int
    source_rows: int
    skipped_rows: int
    duration_s: float


def _prediction_batches(
    *, staging: Staging, uris: list[str], job_type: JobType, job_id: str, stats: dict[str, int]
) -> Iterator[pa.RecordBatch]:
    for uri in uris:
        with staging.open_read(uri=uri) as stream:
            yield from job_type.to_predictions(
                source=stream, source_name=uri, batch_job_id=job_id, stats=stats
            )


def import_job_output(
    *, engine: BatchEngine, staging: Staging, store: Any, job_type: JobType, job_id: str
) -> ImportOutcome:
    """Import a SUCCEEDED job's output as predictions: all of it in one transaction, once."""
    status = engine.get_job(job_id=job_id)
    if status.state != JobState.SUCCEEDED:
        raise PipelineError(
            f"batch job {job_id} is {status.state.value}, not SUCCEEDED: nothing is imported"
        )
    job_uri = staging.job_uri(job_type=job_type.name, job_id=job_id)
    uris = list(iter_output_uris(staging, job_uri=job_uri))
    if not uris:
        raise PipelineError(f"batch job {job_id} SUCCEEDED but wrote no output in {job_uri}/output")
    stats: dict[str, int] = {}
    result = store.import_predictions(
        batch_job_id=job_id,
        job_type=job_type.name,
        batches=_prediction_batches(
            staging=staging, uris=uris, job_type=job_type, job_id=job_id, stats=stats
        ),
        source_stats=stats,
    )
    return ImportOutcome(
        batch_job_id=job_id,
        predictions=result.predictions,
        already_imported=result.already_imported,
        output_files=len(uris),
        source_rows=result.source_rows,
        skipped_rows=result.skipped_rows,
        duration_s=result.duration_s,
    )


def expected_predictions(*, staging: Staging, job_type: JobType, job_id: str) -> int:
    """How many predictions the job's output carries (re-read; for the import's check)."""
    job_uri = staging.job_uri(job_type=job_type.name, job_id=job_id)
    stats: dict[str, int] = {}
    uris = list(iter_output_uris(staging, job_uri=job_uri))
    for _ in _prediction_batches(
        staging=staging, uris=uris, job_type=job_type, job_id=job_id, stats=stats
    ):
        pass
    return stats.get("predictions", 0)
