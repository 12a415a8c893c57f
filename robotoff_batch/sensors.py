"""The sensor that follows every batch job of every job type: one engine listing per tick."""

from __future__ import annotations

import os
from collections.abc import Sequence
from typing import Any

import dagster as dg

from robotoff_batch.follow import (
    DagsterFollowStorage,
    FallbackPolicy,
    FallbackRequest,
    FinishRequest,
    FollowCache,
    PendingLimit,
    follow,
)
from robotoff_batch.job_types import RegisteredJobType
from robotoff_batch.names import (
    ATTEMPT_TAG,
    BATCH_JOB_ID_TAG,
    FALLBACK_INDEX_TAG,
    FALLBACK_KIND,
    FINISH_KIND,
    RUN_KIND_TAG,
    SUPERSEDED_TAG,
    batch_job_asset_key,
    fallback_job_name,
    finish_job_name,
    partitions_def_name,
    predictions_asset_key,
)
from robotoff_batch.resources import (
    BatchEngineResource,
    PredictionStoreResource,
)

DEFAULT_INTERVAL_S = 10


def sensor_interval_s() -> int:
    """``ROBOTOFF_BATCH_SENSOR_INTERVAL_S``, default 10 s."""
    return int(os.environ.get("ROBOTOFF_BATCH_SENSOR_INTERVAL_S", DEFAULT_INTERVAL_S))


def import_retry_delay_s() -> float:
    """``ROBOTOFF_BATCH_IMPORT_RETRY_DELAY_S``: first wait before a failed import is retried."""
    return float(os.environ.get("ROBOTOFF_BATCH_IMPORT_RETRY_DELAY_S", "30"))


def finish_run_request(request: FinishRequest) -> dg.RunRequest:
    """The run the follower asked for: the job's outcome, and its import when there is one."""
    selection = [batch_job_asset_key(request.job_type)]
    if request.with_import:
        selection.append(predictions_asset_key(request.job_type))
    return dg.RunRequest(
        run_key=request.run_key,
        job_name=finish_job_name(request.job_type),
        partition_key=request.job_id,
        asset_selection=selection,
        tags={
            BATCH_JOB_ID_TAG: request.job_id,
            RUN_KIND_TAG: FINISH_KIND,
            ATTEMPT_TAG: str(request.attempt + 1),
            **({SUPERSEDED_TAG: request.superseded_by} if request.superseded_by else {}),
        },
    )


def fallback_run_request(request: FallbackRequest) -> dg.RunRequest:
    """The run that relaunches a job waiting on capacity with its next alternative."""
    return dg.RunRequest(
        run_key=request.run_key,
        job_name=fallback_job_name(request.job_type),
        partition_key=request.job_id,
        tags={
            BATCH_JOB_ID_TAG: request.job_id,
            RUN_KIND_TAG: FALLBACK_KIND,
            FALLBACK_INDEX_TAG: str(request.index),
        },
    )


def build_batch_job_sensor(
    registry: Sequence[RegisteredJobType], finish_jobs: Sequence[Any]
) -> dg.SensorDefinition:
    """One sensor for all job types: registers jobs, records states, requests finish runs."""
    imports = {r.name: r.job_type.imports for r in registry}
    limits = {
        r.name: PendingLimit(r.config.max_pending_duration_s, cancel=r.config.cancel_when_stuck)
        for r in registry
    }
    fallbacks = {
        r.name: FallbackPolicy(r.config.fallback_after_s, len(r.config.fallbacks))
        for r in registry
        if r.config.fallbacks
    }

    @dg.sensor(
        name="batch_job_sensor",
        minimum_interval_seconds=sensor_interval_s(),
        jobs=list(finish_jobs),
        default_status=dg.DefaultSensorStatus.RUNNING,
        description="Follows every batch job (one engine listing per tick): registers its "
        "partition, records QUEUED -> SCHEDULED -> RUNNING, cancels a job whose launch run was "
        "cancelled, and when the job ends requests its finish run (outcome + import), again "
        "until the import is in the ledger.",
    )
    def batch_job_sensor(
        context: dg.SensorEvaluationContext,
        batch_engine: BatchEngineResource,
        prediction_store: PredictionStoreResource,
    ) -> dg.SensorResult:
        cache, problem = FollowCache.decode(context.cursor)
        if problem:
            context.log.warning(f"{problem}; nothing is lost, the jobs are re-read")
        # A SUCCEEDED job of a type that imports is imported by its finish run, into Robotoff's
        # database or handed to Robotoff's importer (the prediction store's target); no task
        # calls a webhook. A job type without an import has its outcome recorded only.
        plan = follow(
            engine=batch_engine.get_engine(),
            cache=cache,
            storage=DagsterFollowStorage(context.instance, prediction_store),
            job_types=imports,
            retry_delay_s=import_retry_delay_s(),
            pending_limits=limits,
            fallbacks=fallbacks,
        )
        for level, message in plan.messages:
            context.log.log(level, message)
        return dg.SensorResult(
            run_requests=[finish_run_request(r) for r in plan.finish_requests]
            + [fallback_run_request(r) for r in plan.fallback_requests],
            dynamic_partitions_requests=[
                dg.AddDynamicPartitionsRequest(partitions_def_name(jt), ids)
                for jt, ids in plan.new_partitions.items()
            ],
            asset_events=list(plan.observations),
            cursor=plan.cache.encode(),
        )

    return batch_job_sensor
