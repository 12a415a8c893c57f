"""Names the follower, the assets and the sensor share: labels, run tags, asset keys, job
names, and the status of a job the engine no longer has."""

from __future__ import annotations

from datetime import UTC, datetime

import dagster as dg

from robotoff_batch.batch.engine import JobState, JobStatus, StatusEvent
from robotoff_batch.batch.request import JOB_TYPE_LABEL

#: Label of a batch job naming the Dagster run that launched it.
OWNER_LABEL = "dagster-run-id"
#: Run tags: the batch job a run is about, and what kind of run it is.
BATCH_JOB_ID_TAG = "batch_job_id"
RUN_KIND_TAG = "robotoff_batch/kind"
LAUNCH_KIND = "launch"
FINISH_KIND = "finish"
#: Set by a finish run on itself: the process running it, and an output it refused.
WORKER_TAG = "robotoff_batch/worker"
REFUSED_TAG = "robotoff_batch/import_refused"
#: On a run importing a FAILED job's complete chunks (``robotoff-batch import JOB --partial``).
PARTIAL_IMPORT_TAG = "robotoff_batch/partial_import"

DEFAULT_RETRY_DELAY_S = 30.0
MAX_RETRY_DELAY_S = 3600.0
CACHE_VERSION = 2
GONE_EVENT = "JOB_GONE"


# -- names ------------------------------------------------------------------------------------


def key_prefix(job_type: str) -> str:
    """Asset key prefix and name part of a job type: ``ingredients-spellcheck`` -> ``..._...``."""
    return job_type.replace("-", "_")


def partitions_def_name(job_type: str) -> str:
    """Name of the dynamic partitions (one per launched batch job) of a job type."""
    return f"{key_prefix(job_type)}_batch_jobs"


def batch_jobs_group(job_type: str) -> str:
    """Asset group of the per-job (partitioned) assets: ``batch_job`` and ``predictions``.

    Apart from the launch step's group, so that a group's "Materialize all" in the UI is either
    one launch or a choice of job partitions, never a mix of the two."""
    return partitions_def_name(job_type)


def batch_job_asset_key(job_type: str) -> dg.AssetKey:
    return dg.AssetKey([key_prefix(job_type), "batch_job"])


def predictions_asset_key(job_type: str) -> dg.AssetKey:
    return dg.AssetKey([key_prefix(job_type), "predictions"])


def launch_job_name(job_type: str) -> str:
    return f"launch_{key_prefix(job_type)}"


def finish_job_name(job_type: str) -> str:
    return f"finish_{key_prefix(job_type)}"


def cancel_job_name(job_type: str) -> str:
    return f"cancel_{key_prefix(job_type)}"


def finish_run_key(job_id: str, attempt: int) -> str:
    return f"finish-{job_id}" if attempt == 0 else f"finish-{job_id}-retry-{attempt}"


def gone_status(job_id: str, job_type: str | None, engine_name: str) -> JobStatus:
    """The status of a job the engine no longer has (deleted outside robotoff-batch)."""
    reason = (
        f"the batch job no longer exists in the {engine_name} engine: it was deleted outside "
        "robotoff-batch (console, gcloud, a cleanup), so its outcome is unknown"
    )
    return JobStatus(
        job_id=job_id,
        state=JobState.DELETED,
        labels={JOB_TYPE_LABEL: job_type} if job_type else {},
        status_events=(StatusEvent(time=datetime.now(UTC), type=GONE_EVENT, description=reason),),
    )
