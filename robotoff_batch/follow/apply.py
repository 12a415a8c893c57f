"""Applying the follower's plan in this process, as the Dagster daemon applies a sensor's result.

The CLI follows a job itself when no daemon runs the sensor: it applies the very
``SensorResult`` the sensor would return (:meth:`FollowPlan.sensor_result`), so the same
partitions, observations and runs (finish and fallback runs, with the same tags and asset
selections) happen either way.
"""

from __future__ import annotations

from typing import Any

import dagster as dg

#: The tag Dagster sets on a run a sensor requested with a run key.
RUN_KEY_TAG = "dagster/run_key"


def execute_run_request(
    definitions: dg.Definitions,
    instance: dg.DagsterInstance,
    request: dg.RunRequest,
    run_config: Any = None,
) -> dg.ExecuteInProcessResult:
    """Run ``request`` in this process, as the daemon would launch it: its job, partition,
    asset selection, tags and run key."""
    job = definitions.resolve_job_def(request.job_name or "")
    tags = dict(request.tags)
    if request.run_key:
        tags[RUN_KEY_TAG] = request.run_key
    return job.execute_in_process(
        instance=instance,
        partition_key=request.partition_key,
        asset_selection=list(request.asset_selection) if request.asset_selection else None,
        tags=tags,
        run_config=run_config,
        raise_on_error=False,
    )


def apply_in_process(
    result: dg.SensorResult,
    *,
    definitions: dg.Definitions,
    instance: dg.DagsterInstance,
    run_config: Any = None,
) -> list[dg.ExecuteInProcessResult]:
    """What the daemon does with a sensor's result: new partitions, then the observations,
    then each requested run (here, one after the other in this process)."""
    for request in result.dynamic_partitions_requests or []:
        if isinstance(request, dg.AddDynamicPartitionsRequest):
            name = request.partitions_def_name
            new = [k for k in request.partition_keys if not instance.has_dynamic_partition(name, k)]
            if new:
                instance.add_dynamic_partitions(name, new)
    for event in result.asset_events or []:
        instance.report_runless_asset_event(event)
    return [
        execute_run_request(definitions, instance, request, run_config)
        for request in result.run_requests or []
    ]
