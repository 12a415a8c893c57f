"""Waiting for a batch job to end, through the engine's own ``get_job``."""

from __future__ import annotations

import time

from robotoff_batch.batch.engine import BatchEngine, JobStatus


def wait_until_ended(engine: BatchEngine, job_id: str, timeout_s: float = 30.0) -> JobStatus:
    """The job's status once it is terminal (SUCCEEDED, FAILED, CANCELLED); TimeoutError."""
    deadline = time.monotonic() + timeout_s
    while True:
        status = engine.get_job(job_id=job_id)
        if status.state.is_terminal:
            return status
        if time.monotonic() >= deadline:
            raise TimeoutError(f"batch job {job_id} still {status.state} after {timeout_s:g}s")
        time.sleep(0.05)
