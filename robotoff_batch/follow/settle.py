"""Settling a finished job: its finish run requested, waited for, retried, or settled."""

from __future__ import annotations

import logging
from collections.abc import Callable, Mapping
from dataclasses import replace

from robotoff_batch.batch.engine import JobState, JobStatus
from robotoff_batch.follow.plan import FinishRequest, FollowPlan
from robotoff_batch.follow.storage import FinishRun, FollowStorage, worker_gone

DEFAULT_RETRY_DELAY_S = 30.0
MAX_RETRY_DELAY_S = 3600.0
#: Finish runs queued or running at once, at most, on an instance without a run queue (the
#: embedded one launches a run as soon as it is requested, where Dagster's queue ran 10 at a
#: time by default): 50 jobs ending in one tick must not start 50 processes. The others are
#: requested on the next ticks, as runs end. With a run queue, its own limits hold the burst.
MAX_FINISH_RUNS_IN_PROGRESS = 10


def retry_delay(attempts: int, base_s: float) -> float:
    """Wait before attempt ``attempts + 1`` of a finish run: base, 2x base, 4x ... up to 1 h."""
    return float(min(base_s * 2 ** max(attempts - 1, 0), MAX_RETRY_DELAY_S))


def settle(
    plan: FollowPlan,
    storage: FollowStorage,
    finished: Mapping[str, JobStatus],
    job_types: Mapping[str, bool],
    job_type_of: Callable[[str, JobStatus], str],
    now: float,
    retry_delay_s: float,
    replaced: Mapping[str, str] | None = None,
    max_in_progress: int | None = None,
) -> None:
    """For each finished job not yet settled: request its finish run, wait, retry or settle.
    A job ``replaced`` by a capacity fallback is recorded as superseded, never imported. At
    most ``max_in_progress`` jobs (None: any number) have a finish run queued or running: past
    that, a job's request waits for a later tick (in job id order: an id starts with its
    creation time)."""
    replaced = replaced or {}
    if not finished:
        return
    runs = plan.read("read finish runs", lambda: storage.finish_runs(finished), None)
    if runs is None:
        return
    to_import = {
        job_id
        for job_id, status in finished.items()
        if _imports(status, job_types.get(job_type_of(job_id, status)), job_id in replaced)
    }
    imported: set[str] | None = set()
    if to_import:
        imported = plan.read("read the import ledger", lambda: storage.imported(to_import), None)
    job_runs = {
        job_id: _fail_dead_runs(plan, storage, job_id, runs.get(job_id, [])) for job_id in finished
    }
    busy = {job_id for job_id, rs in job_runs.items() if any(not r.finished for r in rs)}
    free = len(finished) if max_in_progress is None else max_in_progress - len(busy)
    waiting = 0
    for job_id, status in sorted(finished.items()):
        if job_id in busy:
            continue  # an attempt is queued or running
        jt = job_type_of(job_id, status)
        done = [r for r in job_runs[job_id] if r.finished]
        requests, messages = len(plan.finish_requests), len(plan.messages)
        if job_id not in to_import:
            _record_outcome(plan, job_id, jt, status, done, replaced.get(job_id))
        elif imported is not None:  # else the ledger is unreadable: decide next tick
            _import(plan, job_id, jt, done, job_id in imported, now, retry_delay_s)
        if len(plan.finish_requests) > requests:
            if free > 0:
                free -= 1
            else:  # no free slot: the request (and its line) waits for a later tick
                del plan.finish_requests[requests:], plan.messages[messages:]
                waiting += 1
    if waiting:
        plan.log(
            logging.INFO,
            f"{waiting} finished job(s) wait for their finish run: {len(busy)} in progress, "
            f"at most {max_in_progress} at once; requested as they end",
        )


def _imports(status: JobStatus, type_imports: bool | None, superseded: bool) -> bool:
    """Whether a finished job's output is imported: it SUCCEEDED, its type imports, and no
    capacity fallback replaced it (a superseded job is never imported, even one that SUCCEEDED:
    only the last job of its chain is)."""
    return status.state == JobState.SUCCEEDED and bool(type_imports) and not superseded


def _fail_dead_runs(
    plan: FollowPlan, storage: FollowStorage, job_id: str, runs: list[FinishRun]
) -> list[FinishRun]:
    """The job's finish runs, those whose process is gone marked failed (retried at once)."""
    job_runs = list(runs)
    for i, run in enumerate(job_runs):
        if run.finished or not worker_gone(run.worker):
            continue
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
    return job_runs


def _record_outcome(
    plan: FollowPlan,
    job_id: str,
    jt: str,
    status: JobStatus,
    done: list[FinishRun],
    superseded_by: str | None,
) -> None:
    """A job that imports nothing (failed, cancelled, superseded, or of a type without an
    import): settled once a finish run recorded its outcome."""
    if done:
        plan.cache.settled.add(job_id)
        return
    request = FinishRequest(job_id, jt, 0, with_import=False, superseded_by=superseded_by)
    plan.finish_requests.append(request)
    by = f", superseded by {superseded_by}" if superseded_by else ""
    plan.log(logging.INFO, f"{job_id}: {status.state.value}{by}, recording its outcome")


def _import(
    plan: FollowPlan,
    job_id: str,
    jt: str,
    done: list[FinishRun],
    in_ledger: bool,
    now: float,
    retry_delay_s: float,
) -> None:
    """A SUCCEEDED job that imports: settled once a finish run ended and the ledger has it;
    an import that did not finish is requested again, with backoff; a refused one is not."""
    c = plan.cache
    if in_ledger:
        if done:
            c.settled.add(job_id)
        else:  # imported by other means: still record the job's outcome (import is a no-op)
            plan.finish_requests.append(FinishRequest(job_id, jt, 0, with_import=True))
        return
    if not done:
        plan.finish_requests.append(FinishRequest(job_id, jt, 0, with_import=True))
        plan.log(logging.INFO, f"{job_id}: SUCCEEDED, import requested")
        return
    last = done[0]
    if last.refused or last.succeeded:
        c.settled.add(job_id)
        plan.log(*_why_not_imported(job_id, last))
        return
    failures = sum(1 for r in done if not r.succeeded)
    wait = retry_delay(failures, retry_delay_s)
    if last.end_time is not None and now - last.end_time < wait:
        return
    plan.finish_requests.append(FinishRequest(job_id, jt, failures, with_import=True))
    plan.log(
        logging.WARNING,
        f"{job_id}: import not done after {failures} attempt(s) (last run {last.run_id} "
        f"{last.status}); attempt {failures + 1} requested",
    )


def _why_not_imported(job_id: str, last: FinishRun) -> tuple[int, str]:
    """The log line of a job settled without an import in the ledger."""
    if last.refused:
        return (
            logging.ERROR,
            f"{job_id}: its output was refused by the import (run {last.run_id}); not "
            "retried: fix the output, then `robotoff-batch import " + job_id + "`",
        )
    return (
        logging.WARNING,
        f"{job_id}: finish run {last.run_id} succeeded but the ledger has no import "
        "(database reset?): `robotoff-batch import` imports it again",
    )
