"""A launched batch job's partition: its outcome, recorded by a finish run, and its cancellation.

``<type>/batch_job`` has one dynamic partition per batch job (registered by the sensor). While
the job runs, the sensor records each state as an observation of the partition. When the job
ends, the sensor requests one *finish run* of the partition (``finish_<type>``): its first step
materializes ``batch_job`` when the job SUCCEEDED, and fails it, with the reason, the exit
codes and the end of the failed task's log, when the job FAILED, was CANCELLED or vanished, so
the partition reads as failed in the catalog and the run is red in the run list; the check
``batch_job_succeeded`` carries the same facts. The run's second step imports the output
(``<type>/predictions``, skipped when the job did not succeed).
"""

# No `from __future__ import annotations`: Dagster reads the context type from annotations.

from typing import Any

import dagster as dg

from robotoff_batch.batch.engine import (
    BatchEngine,
    JobNotFoundError,
    JobState,
    JobStatus,
    cancel_once,
    gone_status,
)
from robotoff_batch.cost.actual import actual_cost
from robotoff_batch.cost.facts import cost_metadata, job_facts
from robotoff_batch.cost.summary import JobCost, job_type_summary
from robotoff_batch.follow.fallback import chain_metadata
from robotoff_batch.follow.metadata import (
    LOG_TAIL_LINES,
    failure_reason,
    job_metadata,
    job_outcome,
)
from robotoff_batch.follow.storage import worker_id
from robotoff_batch.job_types import RegisteredJobType
from robotoff_batch.names import (
    BATCH_JOB_ID_TAG,
    BATCH_JOB_SUBMISSION,
    FALLBACK_OF_LABEL,
    SUPERSEDED_TAG,
    WORKER_TAG,
    batch_job_asset_key,
    batch_jobs_group,
    cancel_job_name,
)
from robotoff_batch.resources import BatchEngineResource

CHECK_NAME = "batch_job_succeeded"
__all__ = ["CHECK_NAME", "LOG_TAIL_LINES", "build_batch_job", "build_cancel_job", "failure_reason"]


def final_status(engine: BatchEngine, job_id: str, job_type: str) -> JobStatus:
    try:
        return engine.get_job(job_id=job_id)
    except JobNotFoundError:
        return gone_status(job_id, job_type, engine.name)


def outcome_metadata(
    status: JobStatus,
    *,
    engine: str,
    instance: dg.DagsterInstance,
    job_type: str,
    log: Any = None,
) -> dict[str, Any]:
    """The job's outcome with its cost beside its ceiling (the launch run's products count and
    worst case; the config's as it is now when the launch run is not in this instance), and
    the job type's cost per month, this job included. The cost never stops the outcome from
    being recorded: when it cannot be worked out, it says so."""
    meta: dict[str, Any] = {"batch_job_id": status.job_id, **job_metadata(status)}
    try:
        facts = job_facts(instance, status)
        cost = actual_cost(status, engine=engine)
        this_job = JobCost.of(status, cost, job_type, facts.products)
        summary = job_type_summary(instance, batch_job_asset_key(job_type), job_type, this_job)
    except Exception as exc:  # reading the launch run or the event log failed
        if log is not None:
            log.warning(f"cost of {status.job_id} not worked out: {type(exc).__name__}: {exc}")
        meta["actual_cost"] = dg.MetadataValue.text(
            f"unknown: it could not be worked out ({type(exc).__name__}: {exc})"
        )
        meta["production_worst_case_ceiling"] = dg.MetadataValue.text("unknown")
        return meta
    return {**meta, **cost_metadata(cost, facts), "cost_per_month": summary}


def build_batch_job(registered: RegisteredJobType, partitions: dg.PartitionsDefinition) -> Any:
    """The ``<type>/batch_job`` asset (the first step of a finish run) and its check."""
    jt = registered.job_type
    key = batch_job_asset_key(jt.name)
    check = dg.AssetCheckSpec(
        name=CHECK_NAME,
        asset=key,
        description="The batch job SUCCEEDED. When not: its state, exit codes, reason and the "
        f"last {LOG_TAIL_LINES} lines of the failed task's log.",
    )

    @dg.asset(
        key=key,
        deps=[dg.AssetKey([jt.key_prefix, BATCH_JOB_SUBMISSION])],
        group_name=batch_jobs_group(jt.name),
        partitions_def=partitions,
        check_specs=[check],
        description="One launched batch job per partition. The sensor records its states "
        "(QUEUED -> SCHEDULED -> RUNNING) as observations; its finish run materializes it "
        "when it SUCCEEDED and fails it, with the reason, when it FAILED or was cancelled.",
        kinds={"googlecloud"},
    )
    def batch_job(context: dg.AssetExecutionContext, batch_engine: BatchEngineResource) -> Any:
        job_id = context.partition_key
        # Lets a follower tell that this run died with its process (daemon killed mid-run).
        context.instance.add_run_tags(
            context.run_id, {WORKER_TAG: worker_id(), BATCH_JOB_ID_TAG: job_id}
        )
        engine = batch_engine.get_engine()
        status = final_status(engine, job_id, jt.name)
        if not status.state.is_terminal:
            raise dg.Failure(
                description=f"batch job {job_id} is still {status.state.value}: its outcome is "
                "recorded when it ends (the sensor requests this run then)",
                allow_retries=False,
            )
        meta = outcome_metadata(
            status,
            engine=engine.name,
            instance=context.instance,
            job_type=jt.name,
            log=context.log,
        )
        superseded = context.run.tags.get(SUPERSEDED_TAG)
        if superseded or FALLBACK_OF_LABEL in status.labels:
            meta.update(chain_metadata(engine, status))
        if superseded:
            note = f"batch job {job_id} ended {status.state.value}, superseded by {superseded}"
            context.log.warning(f"{note} (capacity fallback): not imported")
            yield dg.MaterializeResult(
                metadata={**meta, "superseded_by": dg.MetadataValue.text(superseded)},
                check_results=[
                    dg.AssetCheckResult(
                        check_name=CHECK_NAME,
                        passed=False,
                        severity=dg.AssetCheckSeverity.WARN,
                        description=f"{note}: the capacity fallback's job runs instead",
                        metadata={"state": status.state.value, "superseded_by": superseded},
                    )
                ],
            )
            return
        if status.state == JobState.SUCCEEDED:
            context.log.info(f"batch job {job_id} SUCCEEDED")
            yield dg.MaterializeResult(
                metadata=meta,
                check_results=[
                    dg.AssetCheckResult(
                        check_name=CHECK_NAME,
                        passed=True,
                        metadata={"state": status.state.value},
                    )
                ],
            )
            return
        # The outcome (state, reason, exit codes, the log's end) and its cost on the
        # partition, as its newest event: a failed step materializes nothing (the partition
        # stays Failed), so this observation is what the partition's Events tab shows.
        # (Dagster 1.13's Partitions tab shows a materialization's metadata only:
        # AssetPartitionDetail.tsx passes `latest: latestMaterialization`.)
        outcome = job_outcome(engine, status, LOG_TAIL_LINES)
        context.log_event(
            dg.AssetObservation(
                asset_key=key, partition=job_id, metadata={**meta, **outcome.metadata()}
            )
        )
        check_meta = outcome.metadata()
        for name in ("actual_cost", "production_worst_case_ceiling"):
            check_meta[name] = meta[name]
        yield dg.AssetCheckResult(
            check_name=CHECK_NAME,
            passed=False,
            # a cancel is asked for: it warns; a failure of the tasks is an error
            severity=dg.AssetCheckSeverity.WARN
            if outcome.cancelled
            else dg.AssetCheckSeverity.ERROR,
            description=outcome.headline,
            metadata=check_meta,
        )
        reason, tail = outcome.reason, outcome.tail
        (context.log.warning if outcome.cancelled else context.log.error)(
            outcome.headline
            + "\n"
            + reason
            + (f"\n--- last lines of the task's log ---\n{tail}" if tail else "")
        )
        description = f"{outcome.headline}\n{reason}" if outcome.cancelled else reason
        if tail:
            description += f"\n\nlast {LOG_TAIL_LINES} lines of the task's log:\n{tail}"
        raise dg.Failure(description=description, metadata=meta, allow_retries=False)

    return batch_job


def build_cancel_job(registered: RegisteredJobType, partitions: dg.PartitionsDefinition) -> Any:
    """``cancel_<type>``: cancel the batch job of a partition, from the UI or the CLI."""
    jt = registered.job_type

    @dg.op(name=f"cancel_{jt.key_prefix}_batch_job")
    def cancel_op(context: dg.OpExecutionContext, batch_engine: BatchEngineResource) -> None:
        done = cancel_once(batch_engine.get_engine(), context.partition_key)
        (context.log.warning if done.sent else context.log.info)(done.message)

    @dg.job(
        name=cancel_job_name(jt.name),
        partitions_def=partitions,
        description=f"Cancel the {jt.name} batch job of a partition (pick it in the launchpad). "
        "Once: a job already cancelling or ended is left alone. Its finish run then records "
        "it as CANCELLED.",
        tags={"job_type": jt.name},
    )
    def cancel_job() -> None:
        cancel_op()

    return cancel_job
