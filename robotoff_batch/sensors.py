"""The sensor that follows every batch job of every job type, one engine listing per tick."""

from __future__ import annotations

import os
from collections.abc import Sequence

import dagster as dg

from robotoff_batch.job_types import RegisteredJobType
from robotoff_batch.resources import BatchEngineResource, LaunchSettingsResource
from robotoff_batch.tracking import (
    decode_cursor,
    encode_cursor,
    import_job_name,
    partitions_def_name,
    poll_jobs,
    predictions_asset_key,
)

DEFAULT_INTERVAL_S = 30


def sensor_interval_s() -> int:
    """``ROBOTOFF_BATCH_SENSOR_INTERVAL_S``, default 30 s."""
    return int(os.environ.get("ROBOTOFF_BATCH_SENSOR_INTERVAL_S", DEFAULT_INTERVAL_S))


def build_batch_job_sensor(
    registry: Sequence[RegisteredJobType], import_jobs: Sequence[dg.UnresolvedAssetJobDefinition]
) -> dg.SensorDefinition:
    """One sensor for all job types: registers new jobs, records states, requests imports."""
    job_types = [r.name for r in registry]

    @dg.sensor(
        name="batch_job_sensor",
        minimum_interval_seconds=sensor_interval_s(),
        jobs=list(import_jobs),
        default_status=dg.DefaultSensorStatus.RUNNING,
        description="Polls the batch engine once per tick for every in-flight job: records "
        "QUEUED -> SCHEDULED -> RUNNING -> SUCCEEDED/FAILED on the job's partition, requests "
        "the import of a SUCCEEDED job (run_key = job id), records a FAILED one's events.",
    )
    def batch_job_sensor(
        context: dg.SensorEvaluationContext,
        batch_engine: BatchEngineResource,
        launch_settings: LaunchSettingsResource,
    ) -> dg.SensorResult:
        known = {
            jt: context.instance.get_dynamic_partitions(partitions_def_name(jt)) for jt in job_types
        }

        def owner_cancelled(run_id: str) -> bool:
            run = context.instance.get_run_by_id(run_id)
            return run is not None and run.status in (
                dg.DagsterRunStatus.CANCELED,
                dg.DagsterRunStatus.CANCELING,
            )

        result = poll_jobs(
            engine=batch_engine.get_engine(),
            tracked=decode_cursor(context.cursor),
            known_partitions=known,
            owner_cancelled=owner_cancelled,
        )
        run_requests = []
        if not launch_settings.webhook_url:  # otherwise Robotoff imports through its webhook
            for status in result.succeeded:
                job_type = status.labels.get("job-type", "")
                run_requests.append(
                    dg.RunRequest(
                        run_key=f"import-{status.job_id}",
                        job_name=import_job_name(job_type),
                        partition_key=status.job_id,
                        asset_selection=[predictions_asset_key(job_type)],
                        tags={"batch_job_id": status.job_id},
                    )
                )
        return dg.SensorResult(
            run_requests=run_requests,
            dynamic_partitions_requests=[
                dg.AddDynamicPartitionsRequest(partitions_def_name(jt), ids)
                for jt, ids in result.new_partitions.items()
            ],
            asset_events=result.asset_events,
            cursor=encode_cursor(result.tracked),
        )

    return batch_job_sensor
