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
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime

import dagster as dg

from robotoff_batch.batch.engine import (
    BatchEngine,
    JobNotFoundError,
    JobState,
    JobStatus,
    cancel_once,
    gone_status,
)
from robotoff_batch.follow.fallback import plan_fallbacks, supersessions
from robotoff_batch.follow.metadata import (
    job_metadata,
    state_metadata,
)
from robotoff_batch.follow.plan import (
    FollowPlan,
    PendingLimit,
    StateChange,
)
from robotoff_batch.follow.progress import PROGRESS_INTERVAL_S, ProgressSource
from robotoff_batch.follow.settings import FollowSettings
from robotoff_batch.follow.settle import settle
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
    settings: FollowSettings,
    only: Collection[str] | None = None,
    now: float | None = None,
    progress: ProgressSource | None = None,
) -> FollowPlan:
    """One reconciliation of the engine's jobs with Dagster and the ledger.

    ``settings`` says, per job type, whether its SUCCEEDED jobs are imported by a finish run,
    how long a job may wait QUEUED/SCHEDULED before it is reported stuck (once, with the events
    that say why; cancelled where the job type asks), and its capacity fallbacks. ``only``
    restricts the work to some job ids (the CLI following its own job and its fallbacks).
    ``progress`` reads a RUNNING job's progress (tasks, products done, ETA, cost so far), at
    most once per :data:`~robotoff_batch.follow.progress.PROGRESS_INTERVAL_S` per job, recorded
    in the job's one observation of the call. Raises only when the engine cannot list jobs at
    all (then nothing is known, and the cache is kept as it was).
    """
    tick = _Tick(engine, storage, settings, FollowPlan(cache=cache.copy()), only)
    tick.list_jobs()
    tick.confirm_unlisted()
    tick.settle_orphans()
    tick.register_new()
    _cancel_for_cancelled_owners(engine, tick.plan, storage, tick.statuses)
    finished = tick.record_states()
    at = time.time() if now is None else now
    tick.record_progress(progress, at)
    _report_stuck(engine, tick.plan, tick.statuses, tick.job_type_of, settings.pending_limits, at)
    plan_fallbacks(
        tick.plan,
        tick.statuses,
        tick.job_type_of,
        settings.fallbacks,
        at,
        get_job=lambda job_id: engine.get_job(job_id=job_id),
    )
    replaced = supersessions(tick.statuses)
    _cancel_superseded(engine, tick.plan, tick.statuses, replaced)
    settle(
        tick.plan,
        storage,
        finished,
        settings.imports,
        tick.job_type_of,
        at,
        settings.retry_delay_s,
        replaced,
        settings.max_finish_runs_in_progress,
    )
    tick.forget_the_unknown()
    return tick.plan


@dataclass
class _Tick:
    """One call of :func:`follow`: the jobs it sees, step by step (see the module doc)."""

    engine: BatchEngine
    storage: FollowStorage
    settings: FollowSettings
    plan: FollowPlan
    only: Collection[str] | None
    statuses: dict[str, JobStatus] = field(default_factory=dict)
    listed_ids: set[str] = field(default_factory=set)
    registered: dict[str, set[str]] = field(default_factory=dict)

    def wanted(self, job_id: str) -> bool:
        return self.only is None or job_id in self.only

    def job_type_of(self, job_id: str, status: JobStatus) -> str:
        jt = status.labels.get(JOB_TYPE_LABEL)
        if jt:
            return jt
        if job_id in self.plan.cache.states:
            return self.plan.cache.states[job_id][0]
        return next(t for t, ids in self.registered.items() if job_id in ids)

    def list_jobs(self) -> None:
        """ONE listing of the engine's jobs, and the job partitions of each job type."""
        job_types = self.settings.imports
        for status in self.engine.list_jobs(labels=dict([APP_LABEL])):
            self.listed_ids.add(status.job_id)
            if status.labels.get(JOB_TYPE_LABEL) in job_types and self.wanted(status.job_id):
                self.statuses[status.job_id] = status
        self.plan.listed = len(self.statuses)
        self.registered = {jt: set(self.storage.registered(jt)) for jt in job_types}

    def confirm_unlisted(self) -> None:
        """Jobs being followed that the listing no longer shows: one get_job each."""
        states = self.plan.cache.states
        for job_id, (jt, _) in sorted(states.items()):
            if job_id in self.statuses or not self.wanted(job_id):
                continue
            if jt not in self.settings.imports:
                del states[job_id]
                continue
            _fetch(self.engine, self.plan, self.statuses, job_id, jt)

    def settle_orphans(self) -> None:
        """Partitions nobody follows any more and that are not settled (a lost cursor, or a job
        deleted while no follower ran): settled if a finish run or the ledger says so, else
        looked up in the engine."""
        c, plan, storage = self.plan.cache, self.plan, self.storage
        orphans = {
            job_id: jt
            for jt, ids in self.registered.items()
            for job_id in ids
            if job_id not in self.statuses and job_id not in c.settled and self.wanted(job_id)
        }
        if not orphans:
            return
        runs = plan.read("read finish runs", lambda: storage.finish_runs(orphans), {})
        imported = plan.read("read the import ledger", lambda: storage.imported(orphans), None)
        for job_id, jt in sorted(orphans.items()):
            job_runs = runs.get(job_id, [])
            if any(r.finished for r in job_runs) or (imported and job_id in imported):
                c.settled.add(job_id)
            elif not job_runs and imported is not None:
                _fetch(self.engine, plan, self.statuses, job_id, jt)

    def register_new(self) -> None:
        """A partition for each job launched from anywhere (UI, CLI, schedule, elsewhere)."""
        for job_id, status in sorted(self.statuses.items()):
            jt = self.job_type_of(job_id, status)
            if job_id not in self.registered[jt] and job_id in self.listed_ids:
                self.plan.new_partitions.setdefault(jt, []).append(job_id)
                self.plan.log(logging.INFO, f"{job_id}: registered as a {jt} batch job partition")

    def record_states(self) -> dict[str, JobStatus]:
        """Each state change once (an observation for a job in flight); returns the finished
        jobs not yet settled, kept in the cursor until they are."""
        c = self.plan.cache
        finished: dict[str, JobStatus] = {}
        for job_id, status in sorted(self.statuses.items()):
            jt = self.job_type_of(job_id, status)
            previous = c.states.get(job_id, (jt, None))[1]
            if status.state.is_terminal:
                c.cancel_sent.discard(job_id)
                if job_id in c.settled:
                    c.states.pop(job_id, None)
                    continue
                finished[job_id] = status
            c.states[job_id] = (jt, status.state.value)
            if previous != status.state.value:
                self._changed(job_id, jt, previous, status)
        return finished

    def record_progress(self, source: ProgressSource | None, now: float) -> None:
        """For each RUNNING job not read for a minute: one progress reading, in the job's
        observation of this call (its state change's, else a new one). Jobs in any other
        state are not read at all, and forgotten."""
        c = self.plan.cache
        running = {j for j, s in self.statuses.items() if s.state is JobState.RUNNING}
        for job_id in set(c.progressed) - running:
            if job_id in self.statuses or job_id not in c.states:
                del c.progressed[job_id]
        if source is None:
            return
        at = datetime.fromtimestamp(now, UTC)
        for job_id in sorted(running):
            if now - c.progressed.get(job_id, float("-inf")) < PROGRESS_INTERVAL_S:
                continue
            status = self.statuses[job_id]
            c.progressed[job_id] = now  # a failed reading too: tried again in a minute
            try:
                reading = source.read(status, at)
            except Exception as exc:
                self.plan.log(
                    logging.WARNING,
                    f"{job_id}: progress not read ({type(exc).__name__}: {exc}); in a minute",
                )
                continue
            meta = reading.metadata()
            mine = [o for o in self.plan.observations if o.partition == job_id]
            if mine:
                index = self.plan.observations.index(mine[-1])
                merged = {**mine[-1].metadata, **meta}
                self.plan.observations[index] = dg.AssetObservation(
                    asset_key=mine[-1].asset_key, partition=job_id, metadata=merged
                )
                continue
            jt = self.job_type_of(job_id, status)
            self.plan.observations.append(
                dg.AssetObservation(
                    asset_key=batch_job_asset_key(jt),
                    partition=job_id,
                    metadata={**job_metadata(reading.status or status), **meta},
                )
            )

    def _changed(self, job_id: str, jt: str, previous: str | None, status: JobStatus) -> None:
        new = status.state.value
        self.plan.changes.append(StateChange(job_id, jt, previous, new))
        failed = status.state.is_terminal and status.state != JobState.SUCCEEDED
        level = logging.WARNING if failed else logging.INFO
        self.plan.log(level, f"{job_id}: {previous or '(new)'} -> {new}")
        if status.state.is_terminal:
            return  # its finish run records the outcome
        self.plan.observations.append(
            dg.AssetObservation(
                asset_key=batch_job_asset_key(jt),
                partition=job_id,
                metadata=state_metadata(status, previous),
            )
        )

    def forget_the_unknown(self) -> None:
        """Forget what neither the engine nor Dagster knows any more."""
        c = self.plan.cache
        known = self.listed_ids | {i for ids in self.registered.values() for i in ids}
        c.settled &= known
        c.cancel_sent &= known
        c.stuck &= set(c.states)
        c.fallen_back &= set(c.states)
        self.plan.statuses = self.statuses


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
    owners: dict[str, str] = {}
    for job_id, status in statuses.items():
        owner = status.labels.get(OWNER_LABEL)
        if owner and not (status.state.is_terminal or status.state.is_stopping):
            owners[owner] = job_id
    if not owners:
        return
    cancelled = plan.read("read run statuses", lambda: storage.cancelled_runs(owners), set())
    for run_id in sorted(cancelled):
        job_id = owners[run_id]
        if _send_cancel(engine, plan, statuses[job_id], "cancel failed"):
            plan.log(
                logging.WARNING, f"{job_id}: cancelled, its Dagster run {run_id} was cancelled"
            )


def _send_cancel(engine: BatchEngine, plan: FollowPlan, status: JobStatus, failure: str) -> bool:
    """:func:`cancel_once`, the cancels sent recorded in the cursor so that each is sent once:
    True when sent; False when not needed or when the call failed (logged, tried next tick)."""
    job_id = status.job_id
    try:
        outcome = cancel_once(engine, job_id, status=status, already_sent=plan.cache.cancel_sent)
    except Exception as exc:
        plan.error(job_id, f"{failure} ({type(exc).__name__}: {exc}); retried next tick")
        return False
    if outcome.sent:
        plan.cache.cancel_sent.add(job_id)
        plan.cancelled.append(job_id)
    return outcome.sent


def _cancel_superseded(
    engine: BatchEngine,
    plan: FollowPlan,
    statuses: Mapping[str, JobStatus],
    replaced: Mapping[str, str],
) -> None:
    """Cancel, once, a job a capacity fallback replaced that still waits or runs (the fallback
    run's own cancel failed, or came before the job was listed): the chain runs one job."""
    for job_id, by in sorted(replaced.items()):
        if _send_cancel(engine, plan, statuses[job_id], "cancel failed"):
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
            if not _send_cancel(engine, plan, status, "stuck, cancel failed"):
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
