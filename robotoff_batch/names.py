"""The project's vocabulary: batch job labels, run tags and kinds, asset keys, job names.

The engines, the follower, the assets, the sensor, the CLI and the prediction store all speak
these names; they live here, below all of them, so that none imports another for a string.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

if TYPE_CHECKING:
    import dagster as dg

# dagster is imported where an asset key is made, not here: the local runner's supervisor and
# the engines import these names, and a process of the supervisor starts 1.2 s sooner without
# it (benchmarks/click_to_imported.py, the ``job`` phase).

# -- labels of a batch job (set at submission, read back from the engine's listing) ------------

#: Every job robotoff-batch submits carries this label: the follower lists jobs by it.
APP_LABEL = ("app", "robotoff-batch")
JOB_TYPE_LABEL = "job-type"
#: A capacity fallback's job: the first job of its chain, and which alternative it runs.
FALLBACK_OF_LABEL = "fallback-of"
FALLBACK_INDEX_LABEL = "fallback-index"
#: A relaunched FAILED job (``robotoff-batch relaunch``): the job whose staged input it reads,
#: and which resources it runs on (0: the config's own, i: its i-th fallback alternative).
RELAUNCH_OF_LABEL = "relaunch-of"
RELAUNCH_ALTERNATIVE_LABEL = "relaunch-alternative"
#: Label of a batch job naming the Dagster run that launched it.
OWNER_LABEL = "dagster-run-id"

# -- run tags -----------------------------------------------------------------------------------

#: Run tags: the batch job a run is about, and what kind of run it is.
BATCH_JOB_ID_TAG = "batch_job_id"
RUN_KIND_TAG = "robotoff_batch/kind"
LAUNCH_KIND = "launch"
FINISH_KIND = "finish"
FALLBACK_KIND = "fallback"
#: Set by a finish run on itself: the process running it, and an output it refused.
WORKER_TAG = "robotoff_batch/worker"
REFUSED_TAG = "robotoff_batch/import_refused"
#: On a run importing a FAILED job's complete chunks (``robotoff-batch import JOB --partial``).
PARTIAL_IMPORT_TAG = "robotoff_batch/partial_import"
#: Which attempt at a job's finish a finish run is (1 for the first).
ATTEMPT_TAG = "robotoff_batch/attempt"
#: A finish run asked to import the held-back rows of an imported job again
#: (``robotoff-batch import JOB --retry-quarantined``).
RETRY_QUARANTINED_TAG = "robotoff_batch/retry_quarantined"
#: A fallback run: which alternative it launches; a finish run of a job a fallback replaced.
FALLBACK_INDEX_TAG = "robotoff_batch/fallback_index"
SUPERSEDED_TAG = "robotoff_batch/superseded_by"

# -- asset keys ---------------------------------------------------------------------------------

#: The launch step's assets, in order, and the per-job (partitioned) ones.
PRODUCTS = "products"
STAGED_INPUT = "staged_input"
BATCH_JOB_SUBMISSION = "batch_job_submission"
BATCH_JOB = "batch_job"
PREDICTIONS = "predictions"


def key_prefix(job_type: str) -> str:
    """Asset key prefix and name part of a job type: ``ingredients-spellcheck`` -> ``..._...``."""
    return job_type.replace("-", "_")


def asset_key(job_type: str, name: str) -> dg.AssetKey:
    """``<type>/<name>``: one of the names above for one job type."""
    import dagster as dg

    return dg.AssetKey([key_prefix(job_type), name])


def batch_job_asset_key(job_type: str) -> dg.AssetKey:
    return asset_key(job_type, BATCH_JOB)


def predictions_asset_key(job_type: str) -> dg.AssetKey:
    return asset_key(job_type, PREDICTIONS)


def partitions_def_name(job_type: str) -> str:
    """Name of the dynamic partitions (one per launched batch job) of a job type."""
    return f"{key_prefix(job_type)}_batch_jobs"


def batch_jobs_group(job_type: str) -> str:
    """Asset group of the per-job (partitioned) assets: ``batch_job`` and ``predictions``.

    Apart from the launch step's group, so that a group's "Materialize all" in the UI is either
    one launch or a choice of job partitions, never a mix of the two."""
    return partitions_def_name(job_type)


# -- job names and run keys ---------------------------------------------------------------------


def launch_job_name(job_type: str) -> str:
    return f"launch_{key_prefix(job_type)}"


def finish_job_name(job_type: str) -> str:
    return f"finish_{key_prefix(job_type)}"


def cancel_job_name(job_type: str) -> str:
    return f"cancel_{key_prefix(job_type)}"


def fallback_job_name(job_type: str) -> str:
    return f"fallback_{key_prefix(job_type)}"


def finish_run_key(job_id: str, attempt: int) -> str:
    return f"finish-{job_id}" if attempt == 0 else f"finish-{job_id}-retry-{attempt}"
