"""The local runner: an embedded Cloud Batch running a job's tasks as local processes.

``engine`` (:class:`LocalBatchEngine`), ``state`` (state.json, a Pydantic model persisted
atomically), ``process`` (process control with psutil), ``spec`` (what a request asks of the
runner), ``supervisor`` (the detached process running one job) and ``status`` (what is
reported back).
"""

from robotoff_batch.batch.local.engine import LocalBatchEngine

__all__ = ["LocalBatchEngine"]
