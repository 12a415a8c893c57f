"""What :func:`robotoff_batch.follow.follow` decides: the plan the sensor (or the CLI) applies."""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TypeVar

import dagster as dg

from robotoff_batch.batch.engine import JobStatus
from robotoff_batch.follow.storage import FollowCache
from robotoff_batch.names import finish_run_key

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

    @property
    def run_key(self) -> str:
        return finish_run_key(self.job_id, self.attempt)


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
