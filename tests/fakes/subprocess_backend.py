"""A minimal stand-in for ``LocalBatchEngine``, used by the fake Batch service only when the
project's local runner (``robotoff_batch.batch.local_runner``) cannot be imported.

Every task of the job's single task group is one local process of the command mapped to the
container image, with the job's environment plus ``BATCH_TASK_INDEX``/``BATCH_TASK_COUNT``/
``BATCH_JOB_ID``, as Cloud Batch sets them.
"""

from __future__ import annotations

import os
import subprocess
import threading
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime

from google.cloud import batch_v1

from robotoff_batch.batch.engine import (
    JobNotFoundError,
    JobState,
    JobStatus,
    StatusEvent,
    TaskStatus,
)


@dataclass
class _Job:
    request: batch_v1.CreateJobRequest
    processes: list[subprocess.Popen[bytes]]
    created: datetime
    events: list[StatusEvent] = field(default_factory=list)
    cancelled: bool = False


class SubprocessBackend:
    """Runs each task as a local process; same protocol as the local runner."""

    name = "subprocess-fallback"

    def __init__(self, *, commands_by_image: Mapping[str, Sequence[str]]) -> None:
        self.commands_by_image = commands_by_image
        self._jobs: dict[str, _Job] = {}
        self._lock = threading.Lock()

    def submit(self, *, request: batch_v1.CreateJobRequest) -> JobStatus:
        group = request.job.task_groups[0]
        runnable = group.task_spec.runnables[0]
        command = list(self.commands_by_image[runnable.container.image_uri])
        count = group.task_count or 1
        env_base = {**os.environ, **dict(group.task_spec.environment.variables)}
        processes = [
            subprocess.Popen(
                command,
                env={
                    **env_base,
                    "BATCH_TASK_INDEX": str(index),
                    "BATCH_TASK_COUNT": str(count),
                    "BATCH_JOB_ID": request.job_id,
                },
            )
            for index in range(count)
        ]
        now = datetime.now(UTC)
        job = _Job(request=request, processes=processes, created=now)
        job.events.append(
            StatusEvent(time=now, type="STATUS_CHANGED", description="", new_state=JobState.RUNNING)
        )
        with self._lock:
            self._jobs[request.job_id] = job
        return self.get_job(job_id=request.job_id)

    def get_job(self, *, job_id: str) -> JobStatus:
        with self._lock:
            job = self._jobs.get(job_id)
        if job is None:
            raise JobNotFoundError(job_id)
        codes = [p.poll() for p in job.processes]
        tasks = [
            TaskStatus(
                index=i,
                state="RUNNING" if c is None else ("SUCCEEDED" if c == 0 else "FAILED"),
                exit_code=c,
                attempts=0 if c is None else 1,
            )
            for i, c in enumerate(codes)
        ]
        if job.cancelled:
            state = JobState.DELETED
        elif any(c is None for c in codes):
            state = JobState.RUNNING
        else:
            state = JobState.SUCCEEDED if all(c == 0 for c in codes) else JobState.FAILED
        if state.is_terminal and job.events[-1].new_state is not state:
            job.events.append(
                StatusEvent(
                    time=datetime.now(UTC), type="STATUS_CHANGED", description="", new_state=state
                )
            )
        return JobStatus(
            job_id=job_id,
            state=state,
            labels=dict(job.request.job.labels),
            status_events=tuple(job.events),
            tasks=tuple(tasks),
            create_time=job.created,
            update_time=job.events[-1].time,
        )

    def list_jobs(self, *, labels: Mapping[str, str]) -> list[JobStatus]:
        with self._lock:
            ids = list(self._jobs)
        return [self.get_job(job_id=i) for i in ids]

    def cancel(self, *, job_id: str) -> None:
        with self._lock:
            job = self._jobs.get(job_id)
        if job is None:
            return
        job.cancelled = True
        for process in job.processes:
            if process.poll() is None:
                process.terminate()
        for process in job.processes:
            process.wait(timeout=10)

    def logs_uri(self, *, job_id: str) -> str:
        return ""

    def close(self) -> None:
        for job_id in list(self._jobs):
            self.cancel(job_id=job_id)
