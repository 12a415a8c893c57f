"""Following batch jobs to an outcome: what the sensor and the CLI share.

reconcile.py  follow(): one reconciliation of the engine's jobs with Dagster and the ledger
plan.py       what follow() decides (FollowPlan), and the runs it asks for in Dagster's terms
settings.py   FollowSettings: what the follower knows of each job type, from the registry
apply.py      the plan applied in this process, as the daemon applies the sensor's result
settle.py     a finished job's finish run: requested, waited for, retried, settled
fallback.py   capacity fallback: when a job waiting on capacity is relaunched, and the relaunch
storage.py    what the follower reads (finish runs, partitions, the ledger) and its cursor
metadata.py   what a person reads about a job in the UI (timeline, tasks, state tables)

The names below are the follower's interface; the rest is imported from its module.
"""

from robotoff_batch.follow.fallback import FallbackPolicy
from robotoff_batch.follow.plan import FallbackRequest, FinishRequest, FollowPlan, PendingLimit
from robotoff_batch.follow.reconcile import follow
from robotoff_batch.follow.settings import FollowSettings
from robotoff_batch.follow.storage import (
    DagsterFollowStorage,
    FinishRun,
    FollowCache,
    FollowStorage,
)

__all__ = [
    "DagsterFollowStorage",
    "FallbackPolicy",
    "FallbackRequest",
    "FinishRequest",
    "FinishRun",
    "FollowCache",
    "FollowPlan",
    "FollowSettings",
    "FollowStorage",
    "PendingLimit",
    "follow",
]
