"""Capacity fallback: a job waiting on capacity or quota is relaunched with the next alternative
of its config's ``fallbacks``, as a new batch job linked to the first (same staged input).

- The follower (:func:`plan_fallbacks`) asks for it, once per job, when a job is still QUEUED
  or SCHEDULED with no task started after ``fallback_after`` and one of its status events is
  about capacity or quota; the sensor turns it into a run of ``fallback_<type>``.
- That run (:func:`relaunch`) submits the alternative's job, id ``<first id>-f<n>``
  (deterministic: a retried run meets ALREADY_EXISTS and re-attaches, so at most one job per
  alternative), with the first job's environment (its staged input; its own output folder),
  then cancels the job it replaces. Submitted before the cancel, the new job is always listed
  when the follower sees the old one end. A job that started before the run read it is left
  to run and nothing is submitted.
- A job replaced by a fallback is *superseded*: its finish run records it so, and it is never
  imported (even if it ended SUCCEEDED: the cancel came too late); only the chain's last job is.
"""

from __future__ import annotations

import logging
import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

import dagster as dg

from robotoff_batch.batch.engine import PENDING_STATES, BatchEngine, JobNotFoundError, JobStatus
from robotoff_batch.follow.metadata import metadata_table, short_description
from robotoff_batch.follow.plan import FallbackRequest, FollowPlan
from robotoff_batch.names import APP_LABEL, FALLBACK_INDEX_LABEL, FALLBACK_OF_LABEL

MAX_JOB_ID = 63
# Status events that say a job waits on capacity or quota (Batch's QUOTA_CHECKING events,
# Compute Engine's stockout and quota errors).
CAPACITY_EVENT = re.compile(
    r"quota|capacity|resource[_ ]?exhausted|resource_pool_exhausted|stockout|"
    r"does not have enough resources|not enough resources|no available resources",
    re.IGNORECASE,
)


def fallback_job_id(origin: str, index: int) -> str:
    """``<first job id>-f<index>``, the head cut so that the id stays within 63 characters."""
    suffix = f"-f{index}"
    return origin[: MAX_JOB_ID - len(suffix)].rstrip("-") + suffix


def chain_position(status: JobStatus) -> tuple[str, int]:
    """(first job of the chain, alternative index: 0 for the first job)."""
    origin = status.labels.get(FALLBACK_OF_LABEL)
    index = status.labels.get(FALLBACK_INDEX_LABEL, "")
    if origin and index.isdigit():
        return origin, int(index)
    return status.job_id, 0


def capacity_reason(status: JobStatus) -> str | None:
    """The last status event about capacity or quota; None when none is (a job merely slow
    to schedule is not relaunched elsewhere)."""
    for event in reversed(status.status_events):
        text = f"{event.type}: {event.description}"
        if CAPACITY_EVENT.search(text):
            return f"{event.type}: {short_description(event.description)}"
    return None


def started(status: JobStatus) -> bool:
    """A task of the job has started (or the job has left QUEUED/SCHEDULED)."""
    return status.state not in PENDING_STATES or any(
        t.state not in ("PENDING", "STATE_UNSPECIFIED") for t in status.tasks
    )


#: Batch's exit code of a task whose Spot VM was preempted.
PREEMPTED_EXIT_CODE = 50001


@dataclass(frozen=True)
class FallbackPolicy:
    """A job type's ``fallback_after``, how many alternatives its config lists, and its
    ``fallback_after_preemptions``."""

    after_s: float
    alternatives: int
    after_preemptions: int | None = None


def preemptions(status: JobStatus) -> int:
    """How many task attempts of the job ended preempted (50001): by its tasks' attempts
    (Cloud Batch puts exit codes on task-level status events only, read with ListTasks), or
    by its status events (the local runner's carry them); the larger count, never both."""
    by_tasks = sum(
        1 for t in status.tasks for run in t.runs if run.exit_code == PREEMPTED_EXIT_CODE
    )
    by_events = sum(1 for e in status.status_events if e.task_exit_code == PREEMPTED_EXIT_CODE)
    return max(by_tasks, by_events)


def preempted_too_often(status: JobStatus, after: int | None) -> str | None:
    """The reason to move a running job on, when its tasks were preempted ``after`` times."""
    if after is None or status.state.is_terminal:
        return None
    n = preemptions(status)
    if n < after:
        return None
    return (
        f"preempted {n} times (exit code {PREEMPTED_EXIT_CODE}, fallback_after_preemptions {after})"
    )


def supersessions(statuses: Mapping[str, JobStatus]) -> dict[str, str]:
    """Job id -> the listed fallback job that replaced it (the next one of its chain)."""
    chains: dict[str, dict[int, str]] = {}
    for job_id, status in statuses.items():
        origin, index = chain_position(status)
        chains.setdefault(origin, {})[index] = job_id
    replaced: dict[str, str] = {}
    for members in chains.values():
        for index, job_id in members.items():
            later = sorted(i for i in members if i > index)
            if later:
                replaced[job_id] = members[later[0]]
    return replaced


def plan_fallbacks(
    plan: FollowPlan,
    statuses: Mapping[str, JobStatus],
    job_type_of: Callable[[str, JobStatus], str],
    policies: Mapping[str, FallbackPolicy],
    now: float,
    get_job: Callable[[str], JobStatus] | None = None,
) -> None:
    """Ask, once per job, for the next alternative of each job waiting on capacity or quota
    past its type's ``fallback_after`` with no task started, or preempted its type's
    ``fallback_after_preemptions`` times.

    The engine's listing has no task events, where Cloud Batch reports the exit codes (50001):
    a running job whose type counts preemptions is read once more with ``get_job`` (its
    tasks), one call per such job per tick."""
    c = plan.cache
    at = datetime.fromtimestamp(now, UTC)
    replaced = supersessions(statuses)
    for job_id, status in sorted(statuses.items()):
        policy = policies.get(job_type_of(job_id, status))
        if policy is not None and job_id not in c.fallen_back and job_id not in replaced:
            counted = status
            if (
                get_job is not None
                and policy.after_preemptions is not None
                and not status.state.is_terminal
                and status.state not in PENDING_STATES
            ):
                try:
                    counted = get_job(job_id)
                except Exception as exc:  # counted again at the next tick
                    plan.log(logging.WARNING, f"{job_id}: its tasks could not be read ({exc})")
            preempted = preempted_too_often(counted, policy.after_preemptions)
            origin, index = chain_position(status)
            if preempted and index < policy.alternatives:
                c.fallen_back.add(job_id)
                jt = job_type_of(job_id, status)
                plan.fallback_requests.append(
                    FallbackRequest(job_id, jt, origin, index + 1, preempted)
                )
                plan.log(
                    logging.WARNING,
                    f"{job_id}: {preempted}; relaunching with alternative {index + 1} as "
                    f"{fallback_job_id(origin, index + 1)}, carrying its finished chunks",
                )
                continue
        waited = status.pending_for_s(at)
        if policy is None or waited is None or waited <= policy.after_s:
            continue
        if job_id in c.fallen_back or job_id in replaced or started(status):
            continue
        origin, index = chain_position(status)
        reason = capacity_reason(status)
        if index >= policy.alternatives or reason is None:
            continue
        c.fallen_back.add(job_id)
        jt = job_type_of(job_id, status)
        plan.fallback_requests.append(FallbackRequest(job_id, jt, origin, index + 1, reason))
        plan.log(
            logging.WARNING,
            f"{job_id}: no task started after {waited / 60:.0f} min ({reason}); relaunching "
            f"with alternative {index + 1} as {fallback_job_id(origin, index + 1)}",
        )


@dataclass(frozen=True)
class Relaunch:
    """What a fallback run did: the new job (None when nothing was submitted) and why."""

    job_id: str
    new_job: JobStatus | None
    note: str


def relaunch(
    *,
    engine: BatchEngine,
    job_id: str,
    index: int,
    submit: Callable[[str, Mapping[str, str]], JobStatus],
    after_preemptions: int | None = None,
) -> Relaunch:
    """Replace ``job_id`` by its alternative ``index``: ``submit(new id, labels)`` creates (or
    re-attaches to) the new job, then ``job_id`` is cancelled. Nothing is done when the job
    started before this run read it, unless a previous attempt already submitted the new job,
    or it was preempted ``after_preemptions`` times (it moves on, its chunks carried)."""
    current = engine.get_job(job_id=job_id)
    origin, _ = chain_position(current)
    new_id = fallback_job_id(origin, index)
    try:
        engine.get_job(job_id=new_id)
        exists = True
    except JobNotFoundError:
        exists = False
    preempted = preempted_too_often(current, after_preemptions)
    if not exists and started(current) and not preempted:
        return Relaunch(
            job_id,
            None,
            f"{job_id} got capacity and is {current.state.value}: it runs, no fallback job",
        )
    labels = {FALLBACK_OF_LABEL: origin, FALLBACK_INDEX_LABEL: str(index)}
    new = submit(new_id, labels)
    engine.cancel(job_id=job_id)
    again = "re-attached to" if exists else "submitted"
    return Relaunch(job_id, new, f"{again} {new_id}; {job_id} ({current.state.value}) cancelled")


CHAIN_COLUMNS = (
    ("alternative", "int"),
    ("batch job", "string"),
    ("location", "string"),
    ("machine", "string"),
    ("state", "string"),
    ("why it moved on", "string"),
)


def chain(engine: BatchEngine, status: JobStatus) -> list[JobStatus]:
    """Every job of ``status``'s chain, first job first (one listing, one GetJob)."""
    origin, _ = chain_position(status)
    members = {
        s.job_id: s for s in engine.list_jobs(labels=dict([APP_LABEL, (FALLBACK_OF_LABEL, origin)]))
    }
    members[status.job_id] = status
    if origin not in members:
        try:
            members[origin] = engine.get_job(job_id=origin)
        except JobNotFoundError:
            pass
    return sorted(members.values(), key=lambda s: chain_position(s)[1])


def chain_metadata(engine: BatchEngine, status: JobStatus) -> dict[str, Any]:
    """``fallback_of`` / ``superseded_by`` and the ``chain`` table, for a job of a chain; empty
    for a job that is in none."""
    try:
        jobs = chain(engine, status)
    except Exception as exc:  # the chain is shown, never in the way of the outcome
        return {"chain": dg.MetadataValue.text(f"unknown ({type(exc).__name__}: {exc})")}
    if len(jobs) < 2:
        return {}
    ids = [s.job_id for s in jobs]
    rows = [
        {
            "alternative": chain_position(s)[1],
            "batch job": s.job_id,
            "location": s.location or "",
            "machine": s.machine.describe() if s.machine else "",
            "state": s.state.value,
            "why it moved on": (capacity_reason(s) or "") if s is not jobs[-1] else "",
        }
        for s in jobs
    ]
    meta: dict[str, Any] = {"chain": metadata_table(CHAIN_COLUMNS, rows)}
    position = ids.index(status.job_id)
    if position > 0:
        meta["fallback_of"] = dg.MetadataValue.text(ids[position - 1])
    if position < len(ids) - 1:
        meta["superseded_by"] = dg.MetadataValue.text(ids[position + 1])
    return meta
