"""What the follower reads (finish runs, partitions, the ledger) and its cursor cache."""

from __future__ import annotations

import json
import os
import socket
from collections.abc import Collection
from dataclasses import dataclass, field
from typing import Protocol

import dagster as dg
import psutil

from robotoff_batch.names import (
    BATCH_JOB_ID_TAG,
    FINISH_KIND,
    REFUSED_TAG,
    RUN_KIND_TAG,
    WORKER_TAG,
    partitions_def_name,
)

CACHE_VERSION = 2

# -- the worker of a run ------------------------------------------------------------------------


def worker_id() -> str:
    """``host:pid:start time`` of this process, so a follower can tell if it died."""
    started = psutil.Process().create_time()
    return f"{socket.gethostname()}:{os.getpid()}:{started:.2f}"


def worker_gone(worker: str | None) -> bool:
    """True only when the worker ran on this host and its process is gone (or was replaced).

    A worker on another host (a run launcher in Kubernetes, say) is never declared gone here:
    Dagster's run monitoring covers those launchers.
    """
    if not worker:
        return False
    host, _, rest = worker.partition(":")
    pid_text, _, started_text = rest.partition(":")
    if host != socket.gethostname() or not pid_text.isdigit():
        return False
    try:
        started = psutil.Process(int(pid_text)).create_time()
    except (psutil.NoSuchProcess, psutil.ZombieProcess):
        return True
    except psutil.Error:
        return False
    return bool(started_text) and abs(started - float(started_text)) > 1.0


# -- what follow reads --------------------------------------------------------------------------


@dataclass(frozen=True)
class FinishRun:
    """One finish run of a batch job, as the follower needs it."""

    run_id: str
    batch_job_id: str
    status: str  # DagsterRunStatus name
    end_time: float | None = None
    worker: str | None = None
    refused: bool = False

    @property
    def finished(self) -> bool:
        return self.status in ("SUCCESS", "FAILURE", "CANCELED")

    @property
    def succeeded(self) -> bool:
        return self.status == "SUCCESS"


class FollowStorage(Protocol):
    """What :func:`follow` reads from Dagster and Robotoff's database; a constant number of
    queries per call, whatever the number of jobs."""

    def registered(self, job_type: str) -> set[str]:
        """Batch job ids registered as partitions of the job type."""
        ...

    def finish_runs(self, job_ids: Collection[str]) -> dict[str, list[FinishRun]]:
        """Finish runs of these jobs, newest first (one query)."""
        ...

    def imported(self, job_ids: Collection[str]) -> set[str]:
        """Which of these jobs the import ledger holds (one query)."""
        ...

    def cancelled_runs(self, run_ids: Collection[str]) -> set[str]:
        """Which of these Dagster runs are cancelled or being cancelled (one query)."""
        ...

    def mark_run_failed(self, run_id: str, message: str) -> None:
        """Record that a run's worker died (so a new attempt may be requested)."""
        ...


class DagsterFollowStorage:
    """:class:`FollowStorage` over a Dagster instance and (lazily) the prediction store."""

    def __init__(self, instance: dg.DagsterInstance, store: object | None = None) -> None:
        self.instance = instance
        self._store = store  # a PredictionStore or a PredictionStoreResource, used lazily

    def registered(self, job_type: str) -> set[str]:
        return set(self.instance.get_dynamic_partitions(partitions_def_name(job_type)))

    def finish_runs(self, job_ids: Collection[str]) -> dict[str, list[FinishRun]]:
        if not job_ids:
            return {}
        records = self.instance.get_run_records(
            filters=dg.RunsFilter(
                tags={RUN_KIND_TAG: FINISH_KIND, BATCH_JOB_ID_TAG: sorted(job_ids)}
            ),
            order_by="create_timestamp",
            ascending=False,
        )
        runs: dict[str, list[FinishRun]] = {}
        for record in records:
            run = record.dagster_run
            job_id = run.tags.get(BATCH_JOB_ID_TAG, "")
            end = record.end_time
            runs.setdefault(job_id, []).append(
                FinishRun(
                    run_id=run.run_id,
                    batch_job_id=job_id,
                    status=run.status.value,
                    end_time=float(end) if end else None,
                    worker=run.tags.get(WORKER_TAG),
                    refused=run.tags.get(REFUSED_TAG) == "true",
                )
            )
        return runs

    def imported(self, job_ids: Collection[str]) -> set[str]:
        if not job_ids or self._store is None:
            return set()
        store = self._store
        get_store = getattr(store, "get_store", None)
        if callable(get_store):
            store = get_store()
        return set(store.imported_jobs(job_ids))  # type: ignore[attr-defined]

    def cancelled_runs(self, run_ids: Collection[str]) -> set[str]:
        if not run_ids:
            return set()
        records = self.instance.get_run_records(
            filters=dg.RunsFilter(
                run_ids=sorted(run_ids),
                statuses=[dg.DagsterRunStatus.CANCELED, dg.DagsterRunStatus.CANCELING],
            )
        )
        return {r.dagster_run.run_id for r in records}

    def mark_run_failed(self, run_id: str, message: str) -> None:
        run = self.instance.get_run_by_id(run_id)
        if run is not None and not run.is_finished:
            self.instance.report_run_failed(run, message)


# -- the cache (the sensor's cursor) -------------------------------------------------------------


@dataclass
class FollowCache:
    """What the follower last recorded; rebuildable, so losing it loses nothing."""

    states: dict[str, tuple[str, str]] = field(default_factory=dict)  # id -> (job type, state)
    settled: set[str] = field(default_factory=set)
    cancel_sent: set[str] = field(default_factory=set)
    stuck: set[str] = field(default_factory=set)  # reported stuck (reported once)
    fallen_back: set[str] = field(default_factory=set)  # capacity fallback requested (once)
    # id -> when its progress was last read (RUNNING jobs only: at most once a minute each)
    progressed: dict[str, float] = field(default_factory=dict)

    def copy(self) -> FollowCache:
        return FollowCache(
            dict(self.states),
            set(self.settled),
            set(self.cancel_sent),
            set(self.stuck),
            set(self.fallen_back),
            dict(self.progressed),
        )

    def encode(self) -> str:
        return json.dumps(
            {
                "version": CACHE_VERSION,
                "states": {k: list(v) for k, v in sorted(self.states.items())},
                "settled": sorted(self.settled),
                "cancel_sent": sorted(self.cancel_sent),
                "stuck": sorted(self.stuck),
                "fallen_back": sorted(self.fallen_back),
                "progressed": {k: round(v, 3) for k, v in sorted(self.progressed.items())},
            },
            separators=(",", ":"),
        )

    @classmethod
    def decode(cls, text: str | None) -> tuple[FollowCache, str | None]:
        """The cache and, when the text could not be used, why (the cache is then empty)."""
        if not text:
            return cls(), None
        try:
            data = json.loads(text)
            if data.get("version") != CACHE_VERSION:
                return cls(), f"cursor of another format (version {data.get('version')!r})"
            states = {str(k): (str(v[0]), str(v[1])) for k, v in data["states"].items()}
            return (
                cls(
                    states,
                    {str(x) for x in data["settled"]},
                    {str(x) for x in data["cancel_sent"]},
                    {str(x) for x in data.get("stuck", ())},
                    {str(x) for x in data.get("fallen_back", ())},
                    {str(k): float(v) for k, v in data.get("progressed", {}).items()},
                ),
                None,
            )
        except (ValueError, TypeError, KeyError, IndexError, AttributeError) as exc:
            return cls(), f"unreadable cursor ({type(exc).__name__}): rebuilt from the listing"
