"""The sensor that follows every batch job of every job type: one engine listing per tick."""

from __future__ import annotations

import os
from collections.abc import Sequence
from typing import Any

import dagster as dg

from robotoff_batch.follow import DagsterFollowStorage, FollowCache, FollowSettings, follow
from robotoff_batch.follow.progress import StagingProgress
from robotoff_batch.job_types import RegisteredJobType
from robotoff_batch.resources import (
    BatchEngineResource,
    PredictionStoreResource,
    StagingResource,
)

DEFAULT_INTERVAL_S = 10


def sensor_interval_s() -> int:
    """``ROBOTOFF_BATCH_SENSOR_INTERVAL_S``, default 10 s."""
    return int(os.environ.get("ROBOTOFF_BATCH_SENSOR_INTERVAL_S", DEFAULT_INTERVAL_S))


def build_batch_job_sensor(
    registry: Sequence[RegisteredJobType], finish_jobs: Sequence[Any]
) -> dg.SensorDefinition:
    """One sensor for all job types: registers jobs, records states, requests finish runs."""

    @dg.sensor(
        name="batch_job_sensor",
        minimum_interval_seconds=sensor_interval_s(),
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
            settings=FollowSettings.from_registry(registry),
            # a RUNNING job's progress, once a minute: its manifests in the staging
            progress=StagingProgress(engine, staging.get_staging(), context.instance),
        )
        for level, message in plan.messages:
            context.log.log(level, message)
        return plan.sensor_result()

    return batch_job_sensor
