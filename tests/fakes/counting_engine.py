"""The local runner counting its engine calls (submit, list_jobs, get_job, cancel): what a
poller costs, as each is one API call on Cloud Batch. A test subclass, so the production class
carries no counter."""

from __future__ import annotations

from collections.abc import Mapping

from google.cloud import batch_v1

from robotoff_batch.batch.engine import JobStatus
from robotoff_batch.batch.local import LocalBatchEngine


class CountingLocalBatchEngine(LocalBatchEngine):
    calls = 0

    def submit(self, *, request: batch_v1.CreateJobRequest) -> JobStatus:
        self.calls += 1
        return super().submit(request=request)

    def list_jobs(self, *, labels: Mapping[str, str]) -> list[JobStatus]:
        self.calls += 1
        return super().list_jobs(labels=labels)

    def get_job(self, *, job_id: str) -> JobStatus:
        self.calls += 1
        return super().get_job(job_id=job_id)

    def cancel(self, *, job_id: str) -> None:
        self.calls += 1
        super().cancel(job_id=job_id)
