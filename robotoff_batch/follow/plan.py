"""What :func:`robotoff_batch.follow.follow` decides: the plan, and the runs it asks for.

The plan turns into Dagster's terms once, in :meth:`FollowPlan.sensor_result`: the sensor
returns that result, and the CLI without a daemon applies the same result in its own process
(:func:`robotoff_batch.follow.apply.apply_in_process`), so both start the same runs with the
same tags and asset selections.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TypeVar

import dagster as dg

from robotoff_batch.batch.engine import JobStatus
from robotoff_batch.follow.storage import FollowCache
from robotoff_batch.names import (
    ATTEMPT_TAG,
    BATCH_JOB_ID_TAG,
    FALLBACK_INDEX_TAG,
    FALLBACK_KIND,
    FINISH_KIND,
    PARTIAL_IMPORT_TAG,
    RETRY_QUARANTINED_TAG,
    RUN_KIND_TAG,
    SUPERSEDED_TAG,
    batch_job_asset_key,
    fallback_job_name,
    finish_job_name,
    finish_run_key,
    partitions_def_name,
    predictions_asset_key,
)

T = TypeVar("T")
D = TypeVar("D")

# -- what follow decides ------------------------------------------------------------------------


@dataclass(frozen=True)
class PendingLimit:
    """How long a job type's jobs may wait QUEUED/SCHEDULED (GPU quota, capacity) before they
    are reported stuck, and whether a stuck job is then cancelled (job config
    ``max_pending_duration``, ``cancel_when_stuck``)."""

    max_pending_s: float
    cancel: bool = False


@dataclass(frozen=True)
class FinishRequest:
    """Record a finished job's outcome (and import its output): one run, one attempt."""

    job_id: str
    job_type: str
    attempt: int
    with_import: bool
    # The capacity fallback that replaced this job: recorded as superseded, never imported.
    superseded_by: str | None = None
    # ``robotoff-batch import JOB --partial``: the import alone, of a FAILED job's complete
    # chunks (its outcome is already recorded), tagged so the ledger and the partition say so.
    partial: bool = False
    # ``robotoff-batch import JOB --retry-quarantined``: an imported job's held-back rows are
    # read and checked again.
    retry_quarantined: bool = False

    @property
    def run_key(self) -> str:
        return finish_run_key(self.job_id, self.attempt)

    @property
    def job_name(self) -> str:
        return finish_job_name(self.job_type)

    @property
    def asset_selection(self) -> list[dg.AssetKey]:
        """The job's outcome (not for a partial import), and its import when there is one."""
        selection = [] if self.partial else [batch_job_asset_key(self.job_type)]
        if self.with_import:
            selection.append(predictions_asset_key(self.job_type))
        return selection

    @property
    def tags(self) -> dict[str, str]:
        """The batch job the run is about (how the follower finds its finish runs), the run's
        kind and attempt, and the job that superseded this one (then nothing is imported)."""
        tags = {
            BATCH_JOB_ID_TAG: self.job_id,
            RUN_KIND_TAG: FINISH_KIND,
            ATTEMPT_TAG: str(self.attempt + 1),
        }
        if self.superseded_by:
            tags[SUPERSEDED_TAG] = self.superseded_by
        if self.partial:
            tags[PARTIAL_IMPORT_TAG] = "true"
        if self.retry_quarantined:
            tags[RETRY_QUARANTINED_TAG] = "true"
        return tags

    def run_request(self) -> dg.RunRequest:
        return dg.RunRequest(
            run_key=self.run_key,
            job_name=self.job_name,
            partition_key=self.job_id,
            asset_selection=self.asset_selection,
            tags=self.tags,
        )


@dataclass(frozen=True)
class FallbackRequest:
    """Relaunch a job waiting on capacity or quota with alternative ``index`` (1-based: the
    config's ``fallbacks[index - 1]``): one run, keyed so that it is requested once."""

    job_id: str
    job_type: str
    origin: str  # the first job of the chain
    index: int
    reason: str

    @property
    def run_key(self) -> str:
        return f"fallback-{self.origin}-{self.index}"

    @property
    def job_name(self) -> str:
        return fallback_job_name(self.job_type)

    @property
    def tags(self) -> dict[str, str]:
        return {
            BATCH_JOB_ID_TAG: self.job_id,
            RUN_KIND_TAG: FALLBACK_KIND,
            FALLBACK_INDEX_TAG: str(self.index),
        }

    def run_request(self) -> dg.RunRequest:
        return dg.RunRequest(
            run_key=self.run_key,
            job_name=self.job_name,
            partition_key=self.job_id,
            tags=self.tags,
        )


@dataclass(frozen=True)
class StateChange:
    job_id: str
    job_type: str
    old: str | None
    new: str


@dataclass
class FollowPlan:
    cache: FollowCache
    listed: int = 0
    new_partitions: dict[str, list[str]] = field(default_factory=dict)
    observations: list[dg.AssetObservation] = field(default_factory=list)
    changes: list[StateChange] = field(default_factory=list)
    finish_requests: list[FinishRequest] = field(default_factory=list)
    fallback_requests: list[FallbackRequest] = field(default_factory=list)
    cancelled: list[str] = field(default_factory=list)
    stuck: dict[str, str] = field(default_factory=dict)  # job id -> why, reported this call
    messages: list[tuple[int, str]] = field(default_factory=list)
    errors: dict[str, str] = field(default_factory=dict)
    statuses: dict[str, JobStatus] = field(default_factory=dict)

    def log(self, level: int, message: str) -> None:
        """Kept for the caller to show (the sensor's log, the CLI's output)."""
        self.messages.append((level, message))

    def error(self, job_id: str, message: str) -> None:
        self.errors[job_id] = message
        self.log(logging.ERROR, f"{job_id}: {message} (other jobs are followed as usual)")

    def read(self, what: str, fn: Callable[[], T], default: D) -> T | D:
        """``fn()``, or ``default`` (logged, tried next tick) when it fails: one failing source
        (run storage, the ledger) must not stop the follower."""
        try:
            return fn()
        except Exception as exc:
            self.log(logging.WARNING, f"could not {what} ({type(exc).__name__}: {exc}); next tick")
            return default

    def run_requests(self) -> list[dg.RunRequest]:
        """The runs asked for: finish runs first, then capacity fallbacks."""
        return [r.run_request() for r in self.finish_requests] + [
            r.run_request() for r in self.fallback_requests
        ]

    def sensor_result(self) -> dg.SensorResult:
        """The plan in Dagster's terms: what the sensor returns, and what the CLI applies when
        no daemon runs (new partitions first, then observations, then runs)."""
        return dg.SensorResult(
            run_requests=self.run_requests(),
            dynamic_partitions_requests=[
                dg.AddDynamicPartitionsRequest(partitions_def_name(jt), ids)
                for jt, ids in self.new_partitions.items()
            ],
            asset_events=list(self.observations),
            cursor=self.cache.encode(),
        )
