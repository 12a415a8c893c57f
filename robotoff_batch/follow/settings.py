"""What the follower knows of each job type, read once from the registry (the sensor and the CLI
build it the same way, so both follow a job by the same rules)."""

from __future__ import annotations

import os
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field

from robotoff_batch.follow.fallback import FallbackPolicy
from robotoff_batch.follow.plan import PendingLimit
from robotoff_batch.follow.settle import DEFAULT_RETRY_DELAY_S
from robotoff_batch.job_types import RegisteredJobType

#: First wait before a failed import is retried (then doubled, up to an hour).
RETRY_DELAY_ENV = "ROBOTOFF_BATCH_IMPORT_RETRY_DELAY_S"


@dataclass(frozen=True)
class FollowSettings:
    """Per job type: whether its SUCCEEDED jobs are imported (False: the outcome is recorded,
    nothing is imported), how long a job may wait before it is reported stuck (and whether it
    is then cancelled), its capacity fallbacks; the first wait before an import is retried; and
    how many finish runs may be queued or running at once (None: any number, as when a run
    queue holds them: the sensor sets it on an instance without one).
    """

    imports: Mapping[str, bool]
    pending_limits: Mapping[str, PendingLimit] = field(default_factory=dict)
    fallbacks: Mapping[str, FallbackPolicy] = field(default_factory=dict)
    retry_delay_s: float = DEFAULT_RETRY_DELAY_S
    max_finish_runs_in_progress: int | None = None

    @classmethod
    def from_registry(
        cls, registry: Iterable[RegisteredJobType], environ: Mapping[str, str] | None = None
    ) -> FollowSettings:
        """The settings of the registered job types; the retry delay from
        ``ROBOTOFF_BATCH_IMPORT_RETRY_DELAY_S`` (default 30 s)."""
        registered = list(registry)
        environ = os.environ if environ is None else environ
        return cls(
            imports={r.name: r.job_type.imports for r in registered},
            pending_limits={
                r.name: PendingLimit(
                    r.config.max_pending_duration_s, cancel=r.config.cancel_when_stuck
                )
                for r in registered
            },
            fallbacks={
                r.name: FallbackPolicy(
                    r.config.fallback_after_s,
                    len(r.config.fallbacks),
                    r.config.fallback_after_preemptions,
                )
                for r in registered
                if r.config.fallbacks
            },
            retry_delay_s=float(environ.get(RETRY_DELAY_ENV, DEFAULT_RETRY_DELAY_S)),
        )
