"""The real follower storage, counting its queries (tests and benchmarks check that they do not
grow with the number of jobs)."""

from __future__ import annotations

from collections import Counter
from collections.abc import Collection
from typing import Any

from robotoff_batch.follow import DagsterFollowStorage, FinishRun


class CountingStorage(DagsterFollowStorage):
    """The real storage, counting its queries (they must not grow with the jobs)."""

    def __init__(self, *args: Any) -> None:
        super().__init__(*args)
        self.calls: Counter[str] = Counter()

    def registered(self, job_type: str) -> set[str]:
        self.calls["registered"] += 1
        return super().registered(job_type)

    def finish_runs(self, job_ids: Collection[str]) -> dict[str, list[FinishRun]]:
        self.calls["finish_runs"] += 1
        return super().finish_runs(job_ids)

    def imported(self, job_ids: Collection[str]) -> set[str]:
        self.calls["imported"] += 1
        return super().imported(job_ids)

    def cancelled_runs(self, run_ids: Collection[str]) -> set[str]:
        self.calls["cancelled_runs"] += 1
        return super().cancelled_runs(run_ids)
