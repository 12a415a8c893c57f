"""A running job's progress: tasks by state, products done / total, throughput, ETA, cost so far.

Read for RUNNING jobs only, at most once per :data:`PROGRESS_INTERVAL_S` per job (the follower
keeps the time of the last reading in its cursor), so the cost of reading stays flat in the
number of jobs: a job QUEUED, SCHEDULED or ended costs nothing. One reading is one ``get_job``
(with its tasks: their states and run times, what the cost so far is priced from) and one read
of each started task's ``output/task-<i>/manifest.json`` (docs/CONTRACTS.md, "Task output
layout"): the rows of the chunks it lists are the products done, its shard the task's share of
the total. Tasks that write no manifest (the single-file form) count in the task states only;
the total is then the launch's products count.
"""

from __future__ import annotations

import json
from collections import Counter
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any, Protocol

import dagster as dg

from robotoff_batch.batch.engine import BatchEngine, JobStatus
from robotoff_batch.cost.actual import ActualCost, actual_cost
from robotoff_batch.names import JOB_TYPE_LABEL
from robotoff_batch.staging import Staging

#: At most one progress reading (and observation) per job per this many seconds.
PROGRESS_INTERVAL_S = 60.0
MANIFEST_NAME = "manifest.json"  # docs/CONTRACTS.md (predictions/task_output.py's name)
_NOT_STARTED = frozenset({"PENDING", "STATE_UNSPECIFIED", "ASSIGNED"})


def manifest_uri(job_uri: str, task_index: int) -> str:
    return f"{job_uri}/output/task-{task_index:05d}/{MANIFEST_NAME}"


@dataclass(frozen=True)
class TaskProgress:
    """What one task's manifest says: the rows of its listed chunks, out of its shard's."""

    done: int
    total: int
    complete: bool


def read_manifest(staging: Staging, uri: str) -> TaskProgress | None:
    """The task's progress from its manifest; None when it has none (yet) or it is unreadable
    (a manifest being replaced is read again next time)."""
    try:
        with staging.open_read(uri=uri) as handle:
            data = json.loads(handle.read())
        start, stop = data["shard"]
        done = sum(int(c["rows"]) for c in data.get("chunks", []))
        return TaskProgress(
            done=done, total=int(stop) - int(start), complete=bool(data["complete"])
        )
    except Exception:  # missing, being written, or not a manifest: no progress for this task
        return None


@dataclass(frozen=True)
class Progress:
    """One reading of a running job."""

    job_id: str
    at: datetime
    tasks_by_state: Mapping[str, int]
    products_done: int | None
    products_total: int | None
    running_since: datetime | None
    cost: ActualCost
    manifests: int = 0  # tasks whose manifest was read
    per_task: Mapping[int, TaskProgress] = field(default_factory=dict)
    status: JobStatus | None = None  # the job as read (with its tasks)

    @property
    def task_count(self) -> int:
        return sum(self.tasks_by_state.values())

    @property
    def elapsed_s(self) -> float | None:
        if self.running_since is None:
            return None
        return max(0.0, (self.at - self.running_since).total_seconds())

    @property
    def throughput(self) -> float | None:
        """Products per second since the first task started; None before any product."""
        elapsed = self.elapsed_s
        if not self.products_done or not elapsed:
            return None
        return self.products_done / elapsed

    @property
    def eta_s(self) -> float | None:
        """Seconds left at the throughput so far; None when unknown."""
        rate = self.throughput
        if rate is None or self.products_total is None or self.products_done is None:
            return None
        return max(0, self.products_total - self.products_done) / rate

    def tasks_text(self) -> str:
        order = ["RUNNING", "ASSIGNED", "PENDING", "SUCCEEDED", "FAILED"]
        states = sorted(self.tasks_by_state, key=lambda s: (order.index(s) if s in order else 9, s))
        return ", ".join(f"{self.tasks_by_state[s]} {s}" for s in states) or "no task yet"

    def products_text(self) -> str:
        if self.products_done is None:
            return "unknown (no task manifest yet)"
        if not self.products_total:
            return f"{self.products_done:,} done"
        share = 100 * self.products_done / self.products_total
        return f"{self.products_done:,} / {self.products_total:,} ({share:.1f} %)"

    def eta_text(self) -> str:
        eta = self.eta_s
        if eta is None:
            return "unknown (no product done yet)"
        at = (self.at + timedelta(seconds=eta)).astimezone(UTC).strftime("%Y-%m-%d %H:%M UTC")
        return f"{duration_text(eta)} (about {at}, at the throughput so far)"

    def cost_text(self) -> str:
        return self.cost.explain() if self.cost.known else f"unknown: {self.cost.unknown}"

    def metadata(self) -> dict[str, dg.MetadataValue]:
        """What a progress observation shows (numbers as numbers, so the UI can plot them)."""
        meta: dict[str, dg.MetadataValue] = {
            "progress_at": dg.MetadataValue.text(self.at.strftime("%Y-%m-%d %H:%M:%S UTC")),
            "tasks_by_state": dg.MetadataValue.text(self.tasks_text()),
            "products_done": dg.MetadataValue.text(self.products_text()),
            "eta": dg.MetadataValue.text(self.eta_text()),
            "cost_so_far": dg.MetadataValue.text(self.cost_text()),
        }
        if self.products_done is not None:
            meta["products_done_count"] = dg.MetadataValue.int(self.products_done)
        if self.products_total is not None:
            meta["products_total"] = dg.MetadataValue.int(self.products_total)
        if self.throughput is not None:
            meta["throughput_per_s"] = dg.MetadataValue.float(round(self.throughput, 3))
        if self.eta_s is not None:
            meta["eta_s"] = dg.MetadataValue.float(round(self.eta_s, 1))
        if self.cost.total_usd is not None:
            meta["cost_so_far_usd"] = dg.MetadataValue.float(round(self.cost.total_usd, 6))
        return meta

    def lines(self) -> list[str]:
        """What ``status JOB`` prints about a running job."""
        rate = self.throughput
        return [
            f"tasks: {self.tasks_text()}",
            f"products: {self.products_text()}",
            f"throughput: {rate:.2f} products/s" if rate is not None else "throughput: unknown",
            f"ETA: {self.eta_text()}",
            f"{self.cost.label}: {self.cost_text()}",
        ]


def duration_text(seconds: float) -> str:
    minutes = int(round(seconds / 60))
    if minutes < 1:
        return f"{int(round(seconds))} s"
    hours, minutes = divmod(minutes, 60)
    return f"{hours} h {minutes:02d} min" if hours else f"{minutes} min"


def read_progress(
    engine: BatchEngine,
    staging: Staging,
    status: JobStatus,
    *,
    products_total: int | None = None,
    now: datetime | None = None,
) -> Progress:
    """One reading of ``status``'s job (see the module doc). ``products_total``: the launch's
    products count, used when some started task has no manifest yet."""
    at = now or datetime.now(UTC)
    detailed = engine.get_job(job_id=status.job_id)
    job_type = detailed.labels.get(JOB_TYPE_LABEL) or status.labels.get(JOB_TYPE_LABEL) or ""
    job_uri = staging.job_uri(job_type=job_type, job_id=status.job_id)
    per_task: dict[int, TaskProgress] = {}
    for task in detailed.tasks:
        if task.state in _NOT_STARTED and not task.runs:
            continue
        found = read_manifest(staging, manifest_uri(job_uri, task.index))
        if found is not None:
            per_task[task.index] = found
    done = sum(p.done for p in per_task.values()) if per_task else None
    total = products_total
    if per_task and len(per_task) == len(detailed.tasks):
        total = sum(p.total for p in per_task.values())
    starts = [r.start for t in detailed.tasks for r in t.runs if r.start is not None]
    return Progress(
        job_id=status.job_id,
        at=at,
        tasks_by_state=dict(Counter(t.state for t in detailed.tasks)),
        products_done=done,
        products_total=total,
        running_since=min(starts) if starts else None,
        cost=actual_cost(detailed, engine=engine.name, now=at),
        manifests=len(per_task),
        per_task=per_task,
        status=detailed,
    )


class ProgressSource(Protocol):
    """What :func:`robotoff_batch.follow.follow` reads a running job's progress with."""

    def read(self, status: JobStatus, now: datetime) -> Progress: ...


class StagingProgress:
    """:class:`ProgressSource` over the engine, the staging and (for the launch's products
    count) the Dagster instance."""

    def __init__(self, engine: BatchEngine, staging: Staging, instance: Any = None) -> None:
        self.engine = engine
        self.staging = staging
        self.instance = instance

    def read(self, status: JobStatus, now: datetime) -> Progress:
        products = None
        if self.instance is not None:
            from robotoff_batch.cost.facts import job_facts

            try:
                products = job_facts(self.instance, status).products
            except Exception:  # the launch run unreadable: the manifests' total only
                products = None
        return read_progress(self.engine, self.staging, status, products_total=products, now=now)


def progress_lines(
    engine: BatchEngine, staging: Staging, status: JobStatus, instance: Any = None
) -> list[str]:
    """What ``status JOB`` prints about a RUNNING job (the follower's reading, read now);
    one line saying why when it cannot be read."""
    try:
        return StagingProgress(engine, staging, instance).read(status, datetime.now(UTC)).lines()
    except Exception as exc:
        return [f"progress: unknown ({type(exc).__name__}: {exc})"]
