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
) -> None:
    """For each finished job not yet settled: request its finish run, wait, retry or settle.
    A job ``replaced`` by a capacity fallback is recorded as superseded, never imported."""
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
    for job_id, status in sorted(finished.items()):
        jt = job_type_of(job_id, status)
        job_runs = _fail_dead_runs(plan, storage, job_id, runs.get(job_id, []))
        if any(not r.finished for r in job_runs):
            continue  # an attempt is queued or running
        done = [r for r in job_runs if r.finished]
        if job_id not in to_import:
            _record_outcome(plan, job_id, jt, status, done, replaced.get(job_id))
        elif imported is not None:  # else the ledger is unreadable: decide next tick
            _import(plan, job_id, jt, done, job_id in imported, now, retry_delay_s)


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
