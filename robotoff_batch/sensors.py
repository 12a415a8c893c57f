"""The sensor that follows every batch job of every job type: one engine listing per tick."""

from __future__ import annotations

import os
from collections.abc import Sequence
from dataclasses import replace
from typing import Any

import dagster as dg

from robotoff_batch.follow import DagsterFollowStorage, FollowCache, FollowSettings, follow
from robotoff_batch.follow.progress import StagingProgress
from robotoff_batch.follow.settle import MAX_FINISH_RUNS_IN_PROGRESS
from robotoff_batch.job_types import RegisteredJobType
from robotoff_batch.resources import (
    BatchEngineResource,
    PredictionStoreResource,
    StagingResource,
)

#: Seconds between the sensor's ticks by engine kind, when ``ROBOTOFF_BATCH_SENSOR_INTERVAL_S``
#: is not set. Dagster's daemon evaluates sensors in a loop of 5 s at least, and a tick is due
#: when this many seconds have passed since the last one started, so that N s means a tick every
#: 5 x ceil(N / 5) s or so (10 s ticked every 15 s): 1 s is every loop of the daemon.
#: - ``local``: the local runner's listing reads a directory on this machine, so it is followed
#:   at every loop: a job's finish run (its import) is requested 2.5 s after it ends on average.
#: - ``cloud-batch``: each tick is one ``ListJobs`` call to Cloud Batch (and a ``GetJob`` for a
#:   job missing from it), whatever the jobs in flight; a job there takes minutes (a VM to
#:   provision, an image to pull) to hours, so 30 s (35 s in practice) adds ~17 s to a job's
#:   import and keeps the API calls at ~2,500 a day, idle or not.
DEFAULT_INTERVAL_S = {"local": 1, "cloud-batch": 30}
FALLBACK_INTERVAL_S = 30  # another engine kind: the polite one


def sensor_interval_s(engine_kind: str = "local") -> int:
    """``ROBOTOFF_BATCH_SENSOR_INTERVAL_S``, default by engine kind (:data:`DEFAULT_INTERVAL_S`)."""
    value = os.environ.get("ROBOTOFF_BATCH_SENSOR_INTERVAL_S")
    if value is None:
        return DEFAULT_INTERVAL_S.get(engine_kind, FALLBACK_INTERVAL_S)
    try:
        seconds = int(value)
    except ValueError:
        seconds = 0
    if seconds < 1:
        raise ValueError(
            "ROBOTOFF_BATCH_SENSOR_INTERVAL_S must be a whole number of seconds >= 1, "
            f"not {value!r}"
        )
    return seconds


def finish_runs_cap(instance: dg.DagsterInstance) -> int | None:
    """How many finish runs the sensor lets be in progress at once: any number when the
    instance has a run queue (its limits hold a burst: docs/production.md), else
    :data:`~robotoff_batch.follow.settle.MAX_FINISH_RUNS_IN_PROGRESS` (the embedded instance
    launches each run as it is requested)."""
    from dagster._core.run_coordinator import QueuedRunCoordinator

    if isinstance(instance.run_coordinator, QueuedRunCoordinator):
        return None
    return MAX_FINISH_RUNS_IN_PROGRESS


def build_batch_job_sensor(
    registry: Sequence[RegisteredJobType],
    finish_jobs: Sequence[Any],
    *,
    engine_kind: str = "local",
) -> dg.SensorDefinition:
    """One sensor for all job types: registers jobs, records states, requests finish runs;
    ticking as often as :func:`sensor_interval_s` says for the code location's engine."""

    @dg.sensor(
        name="batch_job_sensor",
        minimum_interval_seconds=sensor_interval_s(engine_kind),
        jobs=list(finish_jobs),
        default_status=dg.DefaultSensorStatus.RUNNING,
        description="Follows every batch job (one engine listing per tick): registers its "
        "partition, records QUEUED -> SCHEDULED -> RUNNING and, once a minute, a running job's "
        "progress (tasks, products done, ETA, cost so far), cancels a job whose launch run was "
        "cancelled, and when the job ends requests its finish run (outcome + import), again "
        "until the import is in the ledger.",
    )
    def batch_job_sensor(
        context: dg.SensorEvaluationContext,
        batch_engine: BatchEngineResource,
        prediction_store: PredictionStoreResource,
        staging: StagingResource,
    ) -> dg.SensorResult:
        cache, problem = FollowCache.decode(context.cursor)
        if problem:
            context.log.warning(f"{problem}; nothing is lost, the jobs are re-read")
        # A SUCCEEDED job of a type that imports is imported by its finish run, into Robotoff's
        # database or handed to Robotoff's importer (the prediction store's target); no task
        # calls a webhook. A job type without an import has its outcome recorded only.
        engine = batch_engine.get_engine()
        plan = follow(
            engine=engine,
            cache=cache,
            storage=DagsterFollowStorage(context.instance, prediction_store),
            settings=replace(
                FollowSettings.from_registry(registry),
                max_finish_runs_in_progress=finish_runs_cap(context.instance),
            ),
            # a RUNNING job's progress, once a minute: its manifests in the staging
            progress=StagingProgress(engine, staging.get_staging(), context.instance),
        )
        for level, message in plan.messages:
            context.log.log(level, message)
        return plan.sensor_result()

    return batch_job_sensor
