"""Job states set by the test, served by :class:`FakeBatchService` to the real client.

The fake Batch service normally runs jobs through the local runner. For the follower's
table-driven tests the jobs must be in exactly the state a case needs (RUNNING for ten ticks,
CANCELLATION_IN_PROGRESS for several, FAILED with a given exit code), with 1,000 of them at
once; this backend holds those states, and the fake service turns them into real ``batch_v1``
messages on the wire, so the project's ``CloudBatchEngine`` and ``follow`` run unchanged.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Mapping, Sequence
from dataclasses import replace
from datetime import UTC, datetime, timedelta

from google.cloud import batch_v1

from robotoff_batch.batch.engine import (
    JobNotFoundError,
    JobState,
    JobStatus,
    StatusEvent,
    TaskStatus,
)


class ScriptedBackend:
    """A backend whose jobs change state only when the test says so."""

    name = "scripted"
    location: str | None = None

    def __init__(self) -> None:
        self.jobs: dict[str, JobStatus] = {}
        self.cancels: Counter[str] = Counter()
        self.cancel_ends_at_once = False

    # -- what the fake service calls ------------------------------------------------------------

    def submit(self, *, request: batch_v1.CreateJobRequest) -> JobStatus:
        now = datetime.now(UTC)
        status = JobStatus(
            job_id=request.job_id,
            state=JobState.QUEUED,
            labels=dict(request.job.labels),
            create_time=now,
            update_time=now,
        )
        self.jobs[request.job_id] = status
        return status

    def list_jobs(self, *, labels: Mapping[str, str]) -> list[JobStatus]:
        return [
            s for s in self.jobs.values() if all(s.labels.get(k) == v for k, v in labels.items())
        ]

    def get_job(self, *, job_id: str) -> JobStatus:
        if job_id not in self.jobs:
            raise JobNotFoundError(job_id)
        return self.jobs[job_id]

    def cancel(self, *, job_id: str) -> None:
        self.cancels[job_id] += 1
        status = self.jobs.get(job_id)
        if status is None or status.state.is_terminal:
            return
        end = JobState.CANCELLED if self.cancel_ends_at_once else JobState.CANCELLATION_IN_PROGRESS
        self.set(job_id, end)

    def logs_uri(self, *, job_id: str) -> str:
        return f"file:///nowhere/{job_id}"

    def log_tail(self, *, job_id: str, lines: int = 30) -> str | None:
        return None

    # -- what the test calls --------------------------------------------------------------------

    def set(
        self,
        job_id: str,
        state: JobState,
        *,
        exit_codes: Sequence[int] = (),
        description: str = "",
    ) -> None:
        """Move a job to ``state``; ``exit_codes`` are task 0's attempts, oldest first."""
        old = self.jobs[job_id]
        at = (old.update_time or datetime.now(UTC)) + timedelta(seconds=1)
        events = list(old.status_events)
        for code in exit_codes:
            events.append(
                StatusEvent(
                    time=at,
                    type="TASK_STATE_CHANGED",
                    description=f"task 0 exited with code {code}",
                    task_exit_code=code,
                    task_index=0,
                )
            )
        events.append(
            StatusEvent(time=at, type="STATUS_CHANGED", description=description, new_state=state)
        )
        tasks = old.tasks
        if exit_codes:
            task_state = "SUCCEEDED" if exit_codes[-1] == 0 else "FAILED"
            tasks = (TaskStatus(0, task_state, exit_codes[-1], attempts=len(exit_codes)),)
        elif state == JobState.RUNNING:
            tasks = (TaskStatus(0, "RUNNING"),)
        self.jobs[job_id] = replace(
            old, state=state, status_events=tuple(events), tasks=tasks, update_time=at
        )
