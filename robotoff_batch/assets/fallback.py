"""``fallback_<type>``: relaunch a partition's batch job, waiting on capacity or quota, with the
next alternative of its config (requested by the sensor; see :mod:`robotoff_batch.follow.fallback`).

The new job gets the first job's environment as its launch run submitted it (the staged input:
no re-extraction), with its own output folder, and the launch run as owner. Its partition is
registered at once, and both partitions get an observation naming each other, with the chain.
"""

# No `from __future__ import annotations`: Dagster reads the context type from annotations.

from collections.abc import Mapping
from typing import Any

import dagster as dg

from robotoff_batch.assets.launch import submit_or_fail
from robotoff_batch.batch.engine import JobStatus
from robotoff_batch.config.loader import load_job_config
from robotoff_batch.follow.fallback import chain_metadata, fallback_job_id, relaunch
from robotoff_batch.follow.metadata import job_metadata
from robotoff_batch.job_types import RegisteredJobType
from robotoff_batch.names import (
    BATCH_JOB_SUBMISSION,
    FALLBACK_INDEX_TAG,
    FALLBACK_KIND,
    FALLBACK_OF_LABEL,
    OWNER_LABEL,
    RUN_KIND_TAG,
    batch_job_asset_key,
    fallback_job_name,
    partitions_def_name,
)
from robotoff_batch.resources import BatchEngineResource, StagingResource


def launch_environment(instance: dg.DagsterInstance, launch_run_id: str, job_id: str) -> dict:
    """The environment the launch run submitted ``job_id`` with (its ``request`` metadata)."""
    records = instance.get_records_for_run(
        run_id=launch_run_id, of_type=dg.DagsterEventType.ASSET_MATERIALIZATION, limit=100
    ).records
    for record in records:
        mat = record.event_log_entry.asset_materialization
        if mat is None or mat.asset_key.path[-1] != BATCH_JOB_SUBMISSION:
            continue
        meta = mat.metadata
        if meta.get("batch_job_id") and meta["batch_job_id"].value != job_id:
            continue
        request: Any = meta["request"].value
        spec = request["job"]["taskGroups"][0]["taskSpec"]
        return dict(spec.get("environment", {}).get("variables", {}))
    raise dg.Failure(
        description=f"the launch run {launch_run_id} of {job_id} recorded no submitted request: "
        "its input is unknown, so no fallback job is launched",
        allow_retries=False,
    )


def build_fallback_job(registered: RegisteredJobType, partitions: dg.PartitionsDefinition) -> Any:
    """The job the sensor requests on a partition whose batch job waits on capacity."""
    jt = registered.job_type

    @dg.op(name=f"fallback_{jt.key_prefix}_batch_job")
    def fallback_op(
        context: dg.OpExecutionContext,
        batch_engine: BatchEngineResource,
        staging: StagingResource,
    ) -> None:
        job_id = context.partition_key
        index = int(context.run.tags[FALLBACK_INDEX_TAG])
        config = load_job_config(registered.config_path).config  # the file as it is now
        if index > len(config.fallbacks):
            raise dg.Failure(f"{jt.name} has {len(config.fallbacks)} fallbacks, not {index}")
        resources = config.alternatives()[index - 1]
        engine = batch_engine.get_engine()
        area = staging.get_staging()

        def submit(new_id: str, labels: Mapping[str, str]) -> JobStatus:
            first = engine.get_job(job_id=labels[FALLBACK_OF_LABEL])
            owner = first.labels.get(OWNER_LABEL, "")
            env = launch_environment(context.instance, owner, first.job_id)
            env["OUTPUT_FILE_PATH"] = f"{area.job_uri(job_type=jt.name, job_id=new_id)}/output"
            # The jobs it replaces, latest first: their tasks' finished chunks are carried
            # (listed by the new tasks' manifests, not recomputed; docs/CONTRACTS.md).
            earlier = [first.job_id] + [fallback_job_id(first.job_id, i) for i in range(1, index)]
            env["CARRY_OUTPUT_URIS"] = ",".join(
                f"{area.job_uri(job_type=jt.name, job_id=j)}/output" for j in reversed(earlier)
            )
            where = {"engine": engine, "project": batch_engine.project, "resources": resources}
            labels = {OWNER_LABEL: owner, **labels}
            job = {"config": config, "job_type": jt.name, "job_id": new_id}
            status, _ = submit_or_fail(**where, **job, environment=env, labels=labels)
            return status

        done = relaunch(
            engine=engine,
            job_id=job_id,
            index=index,
            submit=submit,
            after_preemptions=config.fallback_after_preemptions,
        )
        context.log.warning(f"{job_id}: {done.note}")
        if done.new_job is None:
            return
        new_id = done.new_job.job_id
        context.instance.add_dynamic_partitions(partitions_def_name(jt.name), [new_id])
        for status in (engine.get_job(job_id=job_id), engine.get_job(job_id=new_id)):
            context.log_event(
                dg.AssetObservation(
                    asset_key=batch_job_asset_key(jt.name),
                    partition=status.job_id,
                    metadata={**job_metadata(status), **chain_metadata(engine, status)},
                )
            )

    @dg.job(
        name=fallback_job_name(jt.name),
        partitions_def=partitions,
        description=f"Relaunch a {jt.name} batch job waiting on capacity or quota with the next "
        "alternative of its config's fallbacks (same staged input); requested by the sensor.",
        tags={"job_type": jt.name, RUN_KIND_TAG: FALLBACK_KIND},
    )
    def fallback_job() -> None:
        fallback_op()

    return fallback_job
