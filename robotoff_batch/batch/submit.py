"""The launch's steps as plain functions: stage the input files, build the container's
environment, submit the batch job. The launch asset calls them; nothing here knows about Dagster.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from robotoff_batch.batch.engine import BatchEngine, JobStatus, followed_locations
from robotoff_batch.batch.request import build_create_job_request
from robotoff_batch.config.models import BatchResources, JobConfig
from robotoff_batch.staging import IdenticalObjectExistsError, ObjectExistsError, Staging

logger = logging.getLogger(__name__)


class PipelineError(RuntimeError):
    """A step cannot go on; the message says why and what was (not) done."""


def stage_files(
    *, staging: Staging, job_type: str, job_id: str, files: Mapping[str, Path]
) -> dict[str, str]:
    """Upload a job's input files, create-only; an identical object from a retry is kept."""
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
    *, job_uri: str, staged: Mapping[str, str], input_file: str
) -> dict[str, str]:
    """Robotoff's container contract: where to read and where to write (no webhook, no key):
    ``INPUT_FILE_PATH`` (the job type's input), ``<STEM>_FILE_PATH`` for each other file."""
    env = {
        "INPUT_FILE_PATH": staged[input_file],
        "OUTPUT_FILE_PATH": f"{job_uri}/output",
    }
    for name, uri in staged.items():
        if name != input_file:
            env[f"{Path(name).stem.upper()}_FILE_PATH"] = uri
    if job_uri.startswith("gs://"):
        env["BUCKET_NAME"] = job_uri.removeprefix("gs://").split("/", 1)[0]
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
    resources: BatchResources | None = None,
) -> tuple[JobStatus, Any]:
    """Build the request from the validated config (or one of its alternatives' ``resources``)
    and submit it (idempotent by job id)."""
    resources = resources or config.resources
    followed = followed_locations(engine)
    if followed and resources.location not in followed:
        # The sensor lists these regions only: a job created elsewhere would never be followed.
        raise PipelineError(
            f"{job_type} runs in {resources.location} but the batch engine follows "
            f"{', '.join(followed)} (ROBOTOFF_BATCH_GCP_LOCATION and the job configs' "
            "locations): nothing was submitted"
        )
    request = build_create_job_request(
        resources,
        job_type=job_type,
        job_id=job_id,
        project=project,
        environment=environment,
        labels=labels,
    )
    status = engine.submit(request=request)
    return status, request
