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

import json
import logging
import os
import socket
import time
from collections.abc import Collection, Iterable, Mapping, Sequence
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime
from typing import Any, Protocol

import dagster as dg
import psutil

from robotoff_batch.batch.engine import (
    BatchEngine,
    JobNotFoundError,
    JobState,
    JobStatus,
    StatusEvent,
)
from robotoff_batch.batch.request import APP_LABEL, JOB_TYPE_LABEL

#: Label of a batch job naming the Dagster run that launched it.
OWNER_LABEL = "dagster-run-id"
#: Run tags: the batch job a run is about, and what kind of run it is.
BATCH_JOB_ID_TAG = "batch_job_id"
RUN_KIND_TAG = "robotoff_batch/kind"
LAUNCH_KIND = "launch"
FINISH_KIND = "finish"
#: Set by a finish run on itself: the process running it, and an output it refused.
WORKER_TAG = "robotoff_batch/worker"
REFUSED_TAG = "robotoff_batch/import_refused"

DEFAULT_RETRY_DELAY_S = 30.0
MAX_RETRY_DELAY_S = 3600.0
CACHE_VERSION = 2
GONE_EVENT = "JOB_GONE"


# -- names ------------------------------------------------------------------------------------


def key_prefix(job_type: str) -> str:
    """Asset key prefix and name part of a job type: ``ingredients-spellcheck`` -> ``..._...``."""
    return job_type.replace("-", "_")


def partitions_def_name(job_type: str) -> str:
    """Name of the dynamic partitions (one per launched batch job) of a job type."""
    return f"{key_prefix(job_type)}_batch_jobs"


def batch_jobs_group(job_type: str) -> str:
    """Asset group of the per-job (partitioned) assets: ``batch_job`` and ``predictions``.

    Apart from the launch step's group, so that a group's "Materialize all" in the UI is either
    one launch or a choice of job partitions, never a mix of the two."""
    return partitions_def_name(job_type)


def batch_job_asset_key(job_type: str) -> dg.AssetKey:
    return dg.AssetKey([key_prefix(job_type), "batch_job"])


def predictions_asset_key(job_type: str) -> dg.AssetKey:
    return dg.AssetKey([key_prefix(job_type), "predictions"])


def launch_job_name(job_type: str) -> str:
    return f"launch_{key_prefix(job_type)}"


def finish_job_name(job_type: str) -> str:
    return f"finish_{key_prefix(job_type)}"


def cancel_job_name(job_type: str) -> str:
    return f"cancel_{key_prefix(job_type)}"


def finish_run_key(job_id: str, attempt: int) -> str:
    return f"finish-{job_id}" if attempt == 0 else f"finish-{job_id}-retry-{attempt}"


def gone_status(job_id: str, job_type: str | None, engine_name: str) -> JobStatus:
    """The status of a job the engine no longer has (deleted outside robotoff-batch)."""
    reason = (
        f"the batch job no longer exists in the {engine_name} engine: it was deleted outside "
        "robotoff-batch (console, gcloud, a cleanup), so its outcome is unknown"
    )
    return JobStatus(
        job_id=job_id,
        state=JobState.DELETED,
        labels={JOB_TYPE_LABEL: job_type} if job_type else {},
        status_events=(StatusEvent(time=datetime.now(UTC), type=GONE_EVENT, description=reason),),
    )


# -- the worker of a run ------------------------------------------------------------------------


def worker_id() -> str:
    """``host:pid:start time`` of this process, so a follower can tell if it died."""
    started = psutil.Process().create_time()
    return f"{socket.gethostname()}:{os.getpid()}:{started:.2f}"


def worker_gone(worker: str | None) -> bool:
    """True only when the worker ran on this host and its process is gone (or was replaced).

    A worker on another host (a run launcher in Kubernetes, say) is never declared gone here:
    Dagster's run monitoring covers those launchers.
    """
    if not worker:
        return False
    host, _, rest = worker.partition(":")
    pid_text, _, started_text = rest.partition(":")
    if host != socket.gethostname() or not pid_text.isdigit():
        return False
    try:
        started = psutil.Process(int(pid_text)).create_time()
    except (psutil.NoSuchProcess, psutil.ZombieProcess):
        return True
    except psutil.Error:
        return False
    return bool(started_text) and abs(started - float(started_text)) > 1.0


# -- what follow reads --------------------------------------------------------------------------


@dataclass(frozen=True)
class FinishRun:
    """One finish run of a batch job, as the follower needs it."""

    run_id: str
    batch_job_id: str
    status: str  # DagsterRunStatus name
    end_time: float | None = None
    worker: str | None = None
    refused: bool = False

    @property
    def finished(self) -> bool:
        return self.status in ("SUCCESS", "FAILURE", "CANCELED")

    @property
    def succeeded(self) -> bool:
        return self.status == "SUCCESS"


class FollowStorage(Protocol):
    """What :func:`follow` reads from Dagster and Robotoff's database; a constant number of
    queries per call, whatever the number of jobs."""

    def registered(self, job_type: str) -> set[str]:
        """Batch job ids registered as partitions of the job type."""
        ...

    def finish_runs(self, job_ids: Collection[str]) -> dict[str, list[FinishRun]]:
        """Finish runs of these jobs, newest first (one query)."""
        ...

    def imported(self, job_ids: Collection[str]) -> set[str]:
        """Which of these jobs the import ledger holds (one query)."""
        ...

    def cancelled_runs(self, run_ids: Collection[str]) -> set[str]:
        """Which of these Dagster runs are cancelled or being cancelled (one query)."""
        ...

    def mark_run_failed(self, run_id: str, message: str) -> None:
        """Record that a run's worker died (so a new attempt may be requested)."""
        ...


class DagsterFollowStorage:
    """:class:`FollowStorage` over a Dagster instance and (lazily) the prediction store."""

    def __init__(self, instance: dg.DagsterInstance, store: object | None = None) -> None:
        self.instance = instance
        self._store = store  # a PredictionStore or a PredictionStoreResource, used lazily

    def registered(self, job_type: str) -> set[str]:
        return set(self.instance.get_dynamic_partitions(partitions_def_name(job_type)))

    def finish_runs(self, job_ids: Collection[str]) -> dict[str, list[FinishRun]]:
        if not job_ids:
            return {}
        records = self.instance.get_run_records(
            filters=dg.RunsFilter(
                tags={RUN_KIND_TAG: FINISH_KIND, BATCH_JOB_ID_TAG: sorted(job_ids)}
            ),
            order_by="create_timestamp",
            ascending=False,
        )
        runs: dict[str, list[FinishRun]] = {}
        for record in records:
            run = record.dagster_run
            job_id = run.tags.get(BATCH_JOB_ID_TAG, "")
            end = record.end_time
            runs.setdefault(job_id, []).append(
                FinishRun(
                    run_id=run.run_id,
                    batch_job_id=job_id,
                    status=run.status.value,
                    end_time=float(end) if end else None,
                    worker=run.tags.get(WORKER_TAG),
                    refused=run.tags.get(REFUSED_TAG) == "true",
                )
            )
        return runs

    def imported(self, job_ids: Collection[str]) -> set[str]:
        if not job_ids or self._store is None:
            return set()
        store = self._store
        get_store = getattr(store, "get_store", None)
        if callable(get_store):
            store = get_store()
        return set(store.imported_jobs(job_ids))  # type: ignore[attr-defined]

    def cancelled_runs(self, run_ids: Collection[str]) -> set[str]:
        if not run_ids:
            return set()
        records = self.instance.get_run_records(
            filters=dg.RunsFilter(
                run_ids=sorted(run_ids),
                statuses=[dg.DagsterRunStatus.CANCELED, dg.DagsterRunStatus.CANCELING],
            )
        )
        return {r.dagster_run.run_id for r in records}

    def mark_run_failed(self, run_id: str, message: str) -> None:
        run = self.instance.get_run_by_id(run_id)
        if run is not None and not run.is_finished:
            self.instance.report_run_failed(run, message)


# -- the cache (the sensor's cursor) -------------------------------------------------------------


@dataclass
class FollowCache:
    """What the follower last recorded; rebuildable, so losing it loses nothing."""

    states: dict[str, tuple[str, str]] = field(default_factory=dict)  # id -> (job type, state)
    settled: set[str] = field(default_factory=set)
    cancel_sent: set[str] = field(default_factory=set)
    stuck: set[str] = field(default_factory=set)  # reported stuck (reported once)

    def copy(self) -> FollowCache:
        return FollowCache(
            dict(self.states), set(self.settled), set(self.cancel_sent), set(self.stuck)
        )

    def encode(self) -> str:
        return json.dumps(
            {
                "version": CACHE_VERSION,
                "states": {k: list(v) for k, v in sorted(self.states.items())},
                "settled": sorted(self.settled),
                "cancel_sent": sorted(self.cancel_sent),
                "stuck": sorted(self.stuck),
            },
            separators=(",", ":"),
        )

    @classmethod
    def decode(cls, text: str | None) -> tuple[FollowCache, str | None]:
        """The cache and, when the text could not be used, why (the cache is then empty)."""
        if not text:
            return cls(), None
        try:
            data = json.loads(text)
            if data.get("version") != CACHE_VERSION:
                return cls(), f"cursor of another format (version {data.get('version')!r})"
            states = {str(k): (str(v[0]), str(v[1])) for k, v in data["states"].items()}
            return (
                cls(
                    states,
                    {str(x) for x in data["settled"]},
                    {str(x) for x in data["cancel_sent"]},
                    {str(x) for x in data.get("stuck", ())},
                ),
                None,
            )
        except (ValueError, TypeError, KeyError, IndexError, AttributeError) as exc:
            return cls(), f"unreadable cursor ({type(exc).__name__}): rebuilt from the listing"


# -- what follow decides ------------------------------------------------------------------------


@dataclass(frozen=True)
class PendingLimit:
    """How long a job type's jobs may wait QUEUED/SCHEDULED (GPU quota, capacity) before they
    are reported stuck, and whether a stuck job is then cancelled (job config
    ``max_pending_duration``, ``cancel_when_stuck``)."""

    max_pending_s: float
    cancel: bool = False


@dataclass(frozen=True)
class FinishRequest:
    """Record a finished job's outcome (and import its output): one run, one attempt."""

    job_id: str
    job_type: str
    attempt: int
    with_import: bool

    @property
    def run_key(self) -> str:
        return finish_run_key(self.job_id, self.attempt)


@dataclass(frozen=True)
class StateChange:
    job_id: str
    job_type: str
    old: str | None
    new: str


@dataclass
class FollowPlan:
    cache: FollowCache
    listed: int = 0
    new_partitions: dict[str, list[str]] = field(default_factory=dict)
    observations: list[dg.AssetObservation] = field(default_factory=list)
    changes: list[StateChange] = field(default_factory=list)
    finish_requests: list[FinishRequest] = field(default_factory=list)
    cancelled: list[str] = field(default_factory=list)
    stuck: dict[str, str] = field(default_factory=dict)  # job id -> why, reported this call
    messages: list[tuple[int, str]] = field(default_factory=list)
    errors: dict[str, str] = field(default_factory=dict)
    statuses: dict[str, JobStatus] = field(default_factory=dict)

    def log(self, level: int, message: str) -> None:
        """Kept for the caller to show (the sensor's log, the CLI's output)."""
        self.messages.append((level, message))

    def error(self, job_id: str, message: str) -> None:
        self.errors[job_id] = message
        self.log(logging.ERROR, f"{job_id}: {message} (other jobs are followed as usual)")


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
        runs = _safe(plan, "read finish runs", lambda: storage.finish_runs(orphans), {})
        imported = _safe(plan, "read the import ledger", lambda: storage.imported(orphans), None)
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
            c.states.pop(job_id, None)
            c.cancel_sent.discard(job_id)
            if job_id in c.settled:
                continue
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
    _settle(plan, storage, finished, job_types, job_type_of, now, retry_delay_s)

    # Forget what neither the engine nor Dagster knows any more.
    known = listed_ids | {i for ids in registered.values() for i in ids}
    c.settled &= known
    c.cancel_sent &= known
    c.stuck &= set(c.states)
    plan.statuses = statuses
    return plan


def _safe(plan: FollowPlan, what: str, fn, default):  # type: ignore[no-untyped-def]
    try:
        return fn()
    except Exception as exc:  # one failing source must not stop the follower
        plan.log(logging.WARNING, f"could not {what} ({type(exc).__name__}: {exc}); next tick")
        return default


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
    cancelled = _safe(plan, "read run statuses", lambda: storage.cancelled_runs(owners), set())
    for run_id in sorted(cancelled):
        job_id = owners[run_id]
        try:
            engine.cancel(job_id=job_id)
        except Exception as exc:
            plan.error(job_id, f"cancel failed ({type(exc).__name__}: {exc}); retried next tick")
            continue
        c.cancel_sent.add(job_id)
        plan.cancelled.append(job_id)
        plan.log(logging.WARNING, f"{job_id}: cancelled, its Dagster run {run_id} was cancelled")


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
            try:
                engine.cancel(job_id=job_id)
            except Exception as exc:
                c.stuck.discard(job_id)  # reported and cancelled again next tick
                plan.error(job_id, f"stuck, cancel failed ({type(exc).__name__}: {exc})")
                continue
            c.cancel_sent.add(job_id)
            plan.cancelled.append(job_id)
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


def retry_delay(attempts: int, base_s: float) -> float:
    """Wait before attempt ``attempts + 1`` of a finish run: base, 2x base, 4x ... up to 1 h."""
    return float(min(base_s * 2 ** max(attempts - 1, 0), MAX_RETRY_DELAY_S))


def _settle(
    plan: FollowPlan,
    storage: FollowStorage,
    finished: Mapping[str, JobStatus],
    job_types: Mapping[str, bool],
    job_type_of,  # type: ignore[no-untyped-def]
    now: float,
    retry_delay_s: float,
) -> None:
    """For each finished job not yet settled: request its finish run, wait, retry or settle."""
    if not finished:
        return
    c = plan.cache
    runs = _safe(plan, "read finish runs", lambda: storage.finish_runs(finished), None)
    if runs is None:
        return
    to_import = {
        job_id
        for job_id, status in finished.items()
        if status.state == JobState.SUCCEEDED and job_types.get(job_type_of(job_id, status))
    }
    imported: set[str] | None = set()
    if to_import:
        imported = _safe(plan, "read the import ledger", lambda: storage.imported(to_import), None)
    for job_id, status in sorted(finished.items()):
        jt = job_type_of(job_id, status)
        job_runs = list(runs.get(job_id, []))
        for i, run in enumerate(job_runs):
            if not run.finished and worker_gone(run.worker):
                message = (
                    f"the process running this finish run ({run.worker}) is gone: the daemon or "
                    "`dagster dev` stopped mid-run; robotoff-batch requests a new attempt"
                )
                try:
                    storage.mark_run_failed(run.run_id, message)
                except Exception as exc:
                    plan.error(job_id, f"cannot mark run {run.run_id} failed: {exc}")
                    continue
                plan.log(logging.WARNING, f"{job_id}: finish run {run.run_id}: {message}")
                job_runs[i] = replace(run, status="FAILURE", end_time=None)  # retry at once
        if any(not r.finished for r in job_runs):
            continue  # an attempt is queued or running
        done = [r for r in job_runs if r.finished]
        if job_id not in to_import:
            if done:
                c.settled.add(job_id)
            else:
                plan.finish_requests.append(FinishRequest(job_id, jt, 0, with_import=False))
                plan.log(logging.INFO, f"{job_id}: {status.state.value}, recording its outcome")
            continue
        if imported is None:
            continue  # the ledger is unreadable: decide next tick
        if job_id in imported:
            if done:
                c.settled.add(job_id)
            else:  # imported by other means: still record the job's outcome (import is a no-op)
                plan.finish_requests.append(FinishRequest(job_id, jt, 0, with_import=True))
            continue
        if not done:
            plan.finish_requests.append(FinishRequest(job_id, jt, 0, with_import=True))
            plan.log(logging.INFO, f"{job_id}: SUCCEEDED, import requested")
            continue
        last = done[0]
        if last.refused:
            c.settled.add(job_id)
            plan.log(
                logging.ERROR,
                f"{job_id}: its output was refused by the import (run {last.run_id}); not "
                "retried: fix the output, then `robotoff-batch import " + job_id + "`",
            )
            continue
        if last.succeeded:
            c.settled.add(job_id)
            plan.log(
                logging.WARNING,
                f"{job_id}: finish run {last.run_id} succeeded but the ledger has no import "
                "(database reset?): `robotoff-batch import` imports it again",
            )
            continue
        failures = sum(1 for r in done if not r.succeeded)
        wait = retry_delay(failures, retry_delay_s)
        if last.end_time is not None and now - last.end_time < wait:
            continue
        plan.finish_requests.append(FinishRequest(job_id, jt, failures, with_import=True))
        plan.log(
            logging.WARNING,
            f"{job_id}: import not done after {failures} attempt(s) (last run {last.run_id} "
            f"{last.status}); attempt {failures + 1} requested",
        )


# -- metadata a person reads --------------------------------------------------------------------


def short_description(description: str) -> str:
    """A status event's text without the job's resource path (it repeats in every row)."""
    text = description.replace("\n", " ")
    for marker in (" for job projects/", " of job projects/"):
        head, sep, tail = text.partition(marker)
        if sep:
            rest = tail.split(" ", 1)
            text = head + ("." if not rest[1:] else ". " + rest[1])
    return text.strip()


def metadata_table(
    columns: Sequence[tuple[str, str]], rows: Iterable[Mapping[str, Any]]
) -> dg.MetadataValue:
    """A table for the UI from (name, type) columns and rows keyed by those names."""
    return dg.MetadataValue.table(
        records=[dg.TableRecord({name: row[name] for name, _ in columns}) for row in rows],
        schema=dg.TableSchema(columns=[dg.TableColumn(name, kind) for name, kind in columns]),
    )


TIMELINE_COLUMNS = (("time (UTC)", "string"), ("event", "string"), ("description", "string"))
TASK_COLUMNS = (
    ("task", "int"),
    ("state", "string"),
    ("exit code", "string"),
    ("attempts", "int"),
    ("reason", "string"),
)


def timeline_table(status: JobStatus) -> dg.MetadataValue:
    return metadata_table(
        TIMELINE_COLUMNS,
        (
            {
                "time (UTC)": e.time.astimezone(UTC).strftime("%Y-%m-%d %H:%M:%S"),
                "event": e.type,
                "description": short_description(e.description),
            }
            for e in status.status_events
        ),
    )


def tasks_table(status: JobStatus) -> dg.MetadataValue:
    return metadata_table(
        TASK_COLUMNS,
        (
            {
                "task": t.index,
                "state": t.state,
                "exit code": "" if t.exit_code is None else str(t.exit_code),
                "attempts": t.attempts,
                "reason": t.exit_reason or "",
            }
            for t in status.tasks
        ),
    )


def job_metadata(status: JobStatus) -> dict[str, dg.MetadataValue]:
    """What a person reads about a job, in flight or ended: state, timeline, tasks, duration,
    the launch run and the logs."""
    meta: dict[str, dg.MetadataValue] = {
        "state": dg.MetadataValue.text(status.state.value),
        "timeline": timeline_table(status),
    }
    if status.tasks:
        meta["tasks"] = tasks_table(status)
    duration = status.run_duration_s
    if duration is not None:
        meta["run_duration_s"] = dg.MetadataValue.float(round(duration, 1))
    owner = status.labels.get(OWNER_LABEL)
    if owner:
        meta["launch_run"] = dg.MetadataValue.dagster_run(owner)
    if status.log_uri:
        meta["logs"] = dg.MetadataValue.url(status.log_uri)
    return meta


def state_metadata(status: JobStatus, previous: str | None) -> dict[str, dg.MetadataValue]:
    """What a state observation of a job in flight shows."""
    return {
        "previous_state": dg.MetadataValue.text(previous or "(first seen)"),
        **job_metadata(status),
    }
