"""Following batch jobs to an outcome: the one function the sensor and the CLI share.

:func:`follow` reconciles three sources of truth on every call:

- the batch engine: ONE ``list_jobs`` call, filtered by our ``app`` label, is the list of jobs;
- Dagster: the job partitions and the *finish runs* (one per attempt at recording a finished
  job's outcome and importing its output), read in a constant number of storage queries;
- Robotoff's database: the import ledger says which jobs are imported.

It decides what to do and returns it as a :class:`FollowPlan` (partitions to register, state
observations to record, finish runs to request, owner cancellations it sent); it never writes
to Dagster itself, so a sensor returns the plan as a ``SensorResult`` and the CLI applies it.

The cursor (:class:`FollowCache`) is only a cache: lost, reset or unreadable, the next call
rebuilds it from the listing, the partitions, the finish runs and the ledger, and nothing is
lost (at worst a state is observed twice). Jobs are followed whether or not they are in the
cache or already a partition; a finished job is *settled* once its outcome is recorded and,
for a SUCCEEDED job that imports, once the ledger holds it. An import that did not finish (its
run failed, died with the daemon, or was never started) is requested again with a new run key
per attempt, with exponential backoff, until the ledger says the job is imported; an import
that refused the job's output is not retried. One job's error never stops the others.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Collection, Mapping
from dataclasses import replace
from datetime import UTC, datetime

import dagster as dg

from robotoff_batch.batch.engine import (
    BatchEngine,
    JobNotFoundError,
    JobState,
    JobStatus,
    gone_status,
)
from robotoff_batch.follow.fallback import FallbackPolicy, plan_fallbacks, supersessions
from robotoff_batch.follow.metadata import (
    job_metadata,
    state_metadata,
)
from robotoff_batch.follow.plan import (
    FollowPlan,
    PendingLimit,
    StateChange,
)
from robotoff_batch.follow.settle import DEFAULT_RETRY_DELAY_S, settle
from robotoff_batch.follow.storage import (
    FollowCache,
    FollowStorage,
)
from robotoff_batch.names import (
    APP_LABEL,
    JOB_TYPE_LABEL,
    OWNER_LABEL,
    batch_job_asset_key,
)


def follow(
    *,
    engine: BatchEngine,
    cache: FollowCache,
    storage: FollowStorage,
    job_types: Mapping[str, bool],
    only: Collection[str] | None = None,
    now: float | None = None,
    retry_delay_s: float = DEFAULT_RETRY_DELAY_S,
    pending_limits: Mapping[str, PendingLimit] | None = None,
    fallbacks: Mapping[str, FallbackPolicy] | None = None,
) -> FollowPlan:
    """One reconciliation of the engine's jobs with Dagster and the ledger.

    ``job_types`` maps each known job type to whether its SUCCEEDED jobs are imported by a
    finish run (False: the outcome is recorded, nothing is imported). ``only`` restricts the
    work to some job ids (the CLI following its own job). ``pending_limits`` (per job type)
    reports, once, a job stuck QUEUED/SCHEDULED too long, with the events that say why, and
    cancels it where the job type asks. Raises only when the engine cannot list jobs at all
    (then nothing is known, and the cache is kept as it was).
    """
    now = time.time() if now is None else now
    plan = FollowPlan(cache=cache.copy())
    c = plan.cache

    def wanted(job_id: str) -> bool:
        return only is None or job_id in only

    statuses: dict[str, JobStatus] = {}
    listed_ids: set[str] = set()
    for status in engine.list_jobs(labels=dict([APP_LABEL])):
        listed_ids.add(status.job_id)
        if status.labels.get(JOB_TYPE_LABEL) in job_types and wanted(status.job_id):
            statuses[status.job_id] = status
    plan.listed = len(statuses)
    registered = {jt: storage.registered(jt) for jt in job_types}

    def job_type_of(job_id: str, status: JobStatus) -> str:
        jt = status.labels.get(JOB_TYPE_LABEL)
        if jt:
            return jt
        if job_id in c.states:
            return c.states[job_id][0]
        return next(t for t, ids in registered.items() if job_id in ids)

    # Jobs being followed that the listing no longer shows: confirm each with one get_job.
    for job_id, (jt, _) in sorted(c.states.items()):
        if job_id in statuses or not wanted(job_id):
            continue
        if jt not in job_types:
            del c.states[job_id]
            continue
        _fetch(engine, plan, statuses, job_id, jt)

    # Partitions nobody follows any more and that are not settled (a lost cursor, or a job
    # deleted while no follower ran): settled if a finish run or the ledger says so, else
    # looked up in the engine.
    orphans = {
        job_id: jt
        for jt, ids in registered.items()
        for job_id in ids
        if job_id not in statuses and job_id not in c.settled and wanted(job_id)
    }
    if orphans:
        runs = plan.read("read finish runs", lambda: storage.finish_runs(orphans), {})
        imported = plan.read("read the import ledger", lambda: storage.imported(orphans), None)
        for job_id, jt in sorted(orphans.items()):
            job_runs = runs.get(job_id, [])
            if any(r.finished for r in job_runs) or (imported and job_id in imported):
                c.settled.add(job_id)
            elif not job_runs and imported is not None:
                _fetch(engine, plan, statuses, job_id, jt)

    # Registration of jobs launched from anywhere (UI, CLI, schedule, another deployment).
    for job_id, status in sorted(statuses.items()):
        jt = job_type_of(job_id, status)
        if job_id not in registered[jt] and job_id in listed_ids:
            plan.new_partitions.setdefault(jt, []).append(job_id)
            plan.log(logging.INFO, f"{job_id}: registered as a {jt} batch job partition")

    _cancel_for_cancelled_owners(engine, plan, storage, statuses)

    # State changes of jobs in flight.
    finished: dict[str, JobStatus] = {}
    for job_id, status in sorted(statuses.items()):
        jt = job_type_of(job_id, status)
        previous = c.states.get(job_id, (jt, None))[1]
        if status.state.is_terminal:
            c.cancel_sent.discard(job_id)
            if job_id in c.settled:
                c.states.pop(job_id, None)
                continue
            # kept until settled: the ticks before its finish run ends log no change again
            c.states[job_id] = (jt, status.state.value)
            finished[job_id] = status
            if previous != status.state.value:
                plan.changes.append(StateChange(job_id, jt, previous, status.state.value))
                plan.log(
                    logging.WARNING if status.state != JobState.SUCCEEDED else logging.INFO,
                    f"{job_id}: {previous or '(new)'} -> {status.state.value}",
                )
            continue
        c.states[job_id] = (jt, status.state.value)
        if previous == status.state.value:
            continue
        plan.changes.append(StateChange(job_id, jt, previous, status.state.value))
        plan.log(logging.INFO, f"{job_id}: {previous or '(new)'} -> {status.state.value}")
        plan.observations.append(
            dg.AssetObservation(
                asset_key=batch_job_asset_key(jt),
                partition=job_id,
                metadata=state_metadata(status, previous),
            )
        )

    _report_stuck(engine, plan, statuses, job_type_of, pending_limits or {}, now)
    plan_fallbacks(plan, statuses, job_type_of, fallbacks or {}, now)
    replaced = supersessions(statuses)
    _cancel_superseded(engine, plan, statuses, replaced)
    settle(plan, storage, finished, job_types, job_type_of, now, retry_delay_s, replaced)

    # Forget what neither the engine nor Dagster knows any more.
    known = listed_ids | {i for ids in registered.values() for i in ids}
    c.settled &= known
    c.cancel_sent &= known
    c.stuck &= set(c.states)
    c.fallen_back &= set(c.states)
    plan.statuses = statuses
    return plan


def _fetch(
    engine: BatchEngine, plan: FollowPlan, statuses: dict[str, JobStatus], job_id: str, jt: str
) -> None:
    try:
        status = engine.get_job(job_id=job_id)
    except JobNotFoundError:
        status = gone_status(job_id, jt, engine.name)
        plan.log(logging.WARNING, f"{job_id}: {status.status_events[0].description}")
    except Exception as exc:
        plan.error(job_id, f"status unavailable ({type(exc).__name__}: {exc})")
        return
    if not status.labels.get(JOB_TYPE_LABEL):
        status = replace(status, labels={**status.labels, JOB_TYPE_LABEL: jt})
    statuses[job_id] = status


def _cancel_for_cancelled_owners(
    engine: BatchEngine, plan: FollowPlan, storage: FollowStorage, statuses: Mapping[str, JobStatus]
) -> None:
    """Cancel, once, the jobs whose launching Dagster run was cancelled."""
    c = plan.cache
    owners: dict[str, str] = {}
    for job_id, status in statuses.items():
        owner = status.labels.get(OWNER_LABEL)
        if (
            owner
            and not status.state.is_terminal
            and not status.state.is_stopping
            and job_id not in c.cancel_sent
        ):
            owners[owner] = job_id
    if not owners:
        return
    cancelled = plan.read("read run statuses", lambda: storage.cancelled_runs(owners), set())
    for run_id in sorted(cancelled):
        job_id = owners[run_id]
        if not _send_cancel(engine, plan, job_id, "cancel failed"):
            continue
        plan.log(logging.WARNING, f"{job_id}: cancelled, its Dagster run {run_id} was cancelled")


def _send_cancel(engine: BatchEngine, plan: FollowPlan, job_id: str, failure: str) -> bool:
    """Cancel ``job_id``, recorded in the cursor so it is sent once; False (logged, tried
    again next tick) when the call failed."""
    try:
        engine.cancel(job_id=job_id)
    except Exception as exc:
        plan.error(job_id, f"{failure} ({type(exc).__name__}: {exc}); retried next tick")
        return False
    plan.cache.cancel_sent.add(job_id)
    plan.cancelled.append(job_id)
    return True


def _cancel_superseded(
    engine: BatchEngine,
    plan: FollowPlan,
    statuses: Mapping[str, JobStatus],
    replaced: Mapping[str, str],
) -> None:
    """Cancel, once, a job a capacity fallback replaced that still waits or runs (the fallback
    run's own cancel failed, or came before the job was listed): the chain runs one job."""
    c = plan.cache
    for job_id, by in sorted(replaced.items()):
        status = statuses[job_id]
        if status.state.is_terminal or status.state.is_stopping or job_id in c.cancel_sent:
            continue
        if _send_cancel(engine, plan, job_id, "cancel failed"):
            plan.log(logging.WARNING, f"{job_id}: cancelled, superseded by {by}")


def _report_stuck(
    engine: BatchEngine,
    plan: FollowPlan,
    statuses: Mapping[str, JobStatus],
    job_type_of,  # type: ignore[no-untyped-def]
    limits: Mapping[str, PendingLimit],
    now: float,
) -> None:
    """Report each job waiting QUEUED/SCHEDULED past its type's limit, once: a warning in the
    log and an observation of its partition with the reason; cancel it where asked."""
    c = plan.cache
    at = datetime.fromtimestamp(now, UTC)
    for job_id, status in sorted(statuses.items()):
        if status.state not in (JobState.QUEUED, JobState.SCHEDULED) or job_id in c.stuck:
            continue
        jt = job_type_of(job_id, status)
        limit = limits.get(jt)
        reason = limit and status.stuck_reason(now=at, max_pending_s=limit.max_pending_s)
        if not limit or not reason:
            continue
        c.stuck.add(job_id)
        plan.stuck[job_id] = reason
        action = "left waiting (cancel_when_stuck: false)"
        if limit.cancel and job_id not in c.cancel_sent:
            if not _send_cancel(engine, plan, job_id, "stuck, cancel failed"):
                c.stuck.discard(job_id)  # reported and cancelled again next tick
                continue
            action = "cancelled (cancel_when_stuck: true)"
        plan.log(logging.WARNING, f"{job_id}: stuck, {action}: {reason}")
        plan.observations.append(
            dg.AssetObservation(
                asset_key=batch_job_asset_key(jt),
                partition=job_id,
                metadata={
                    "stuck": dg.MetadataValue.text(reason),
                    "action": dg.MetadataValue.text(action),
                    **job_metadata(status),
                },
            )
        )
