"""Settling a finished job: its finish run requested, waited for, retried, or settled."""

from __future__ import annotations

import logging
from collections.abc import Mapping
from dataclasses import replace

from robotoff_batch.batch.engine import JobState, JobStatus
from robotoff_batch.follow.plan import FinishRequest, FollowPlan
from robotoff_batch.follow.storage import FollowStorage, worker_gone

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
    job_type_of,  # type: ignore[no-untyped-def]
    now: float,
    retry_delay_s: float,
    replaced: Mapping[str, str] | None = None,
) -> None:
    """For each finished job not yet settled: request its finish run, wait, retry or settle.
    A job ``replaced`` by a capacity fallback is recorded as superseded, never imported."""
    replaced = replaced or {}
    if not finished:
        return
    c = plan.cache
    runs = plan.read("read finish runs", lambda: storage.finish_runs(finished), None)
    if runs is None:
        return
    to_import = {
        job_id
        for job_id, status in finished.items()
        if status.state == JobState.SUCCEEDED
        and job_types.get(job_type_of(job_id, status))
        and job_id not in replaced
    }
    imported: set[str] | None = set()
    if to_import:
        imported = plan.read("read the import ledger", lambda: storage.imported(to_import), None)
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
                by = replaced.get(job_id)
                plan.finish_requests.append(FinishRequest(job_id, jt, 0, False, superseded_by=by))
                plan.log(
                    logging.INFO,
                    f"{job_id}: {status.state.value}"
                    + (f", superseded by {by}" if by else "")
                    + ", recording its outcome",
                )
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
