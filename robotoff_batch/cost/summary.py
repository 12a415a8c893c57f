"""The summary across jobs: cost per job type per month, from the engine's ended jobs."""

from __future__ import annotations

import re
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

import dagster as dg

from robotoff_batch.batch.engine import BatchEngine, JobState, JobStatus
from robotoff_batch.config.catalog import load_catalog
from robotoff_batch.cost.actual import LOCAL_ENGINE, ActualCost, actual_cost, usd
from robotoff_batch.cost.facts import _value
from robotoff_batch.follow.fallback import chain_position
from robotoff_batch.follow.metadata import metadata_table
from robotoff_batch.names import APP_LABEL, JOB_TYPE_LABEL


@dataclass(frozen=True)
class JobCost:
    """One ended job in the summary."""

    job_id: str
    job_type: str
    month: str  # YYYY-MM of its creation (UTC)
    state: str  # JobState value
    usd: float | None  # None: unknown
    task_seconds: float = 0.0
    products: int | None = None
    # The first job of its capacity-fallback chain ("": the job itself): a chain's products
    # are counted once, its jobs' costs all.
    chain: str = ""

    @classmethod
    def of(
        cls, status: JobStatus, cost: ActualCost, job_type: str, products: int | None
    ) -> JobCost:
        return cls(
            job_id=status.job_id,
            job_type=job_type,
            month=month_of(status),
            state=status.state.value,
            usd=cost.total_usd,
            task_seconds=cost.task_seconds,
            products=products,
            chain=_fallback_origin(status),
        )


def _fallback_origin(status: JobStatus) -> str:
    """The first job of a capacity fallback's chain; "" for a job that is no fallback."""
    origin, index = chain_position(status)
    return origin if index else ""


@dataclass
class SummaryRow:
    month: str
    job_type: str
    jobs: int = 0
    not_succeeded: int = 0
    task_hours: float = 0.0
    known_usd: float = 0.0
    unknown: int = 0  # jobs whose cost is unknown (not in known_usd)
    products: int = 0  # of the jobs whose cost and products are known
    usd_with_products: float = 0.0
    job_ids_unknown: list[str] = field(default_factory=list)

    @property
    def per_1000(self) -> float | None:
        return self.usd_with_products / self.products * 1000 if self.products else None


def summarize(jobs: Iterable[JobCost]) -> list[SummaryRow]:
    """Cost per (month, job type), oldest month first; a total per month is the caller's.
    The products of a capacity-fallback chain count once (its jobs' costs all count)."""
    rows: dict[tuple[str, str], SummaryRow] = {}
    counted: set[str] = set()  # chains whose products are counted
    for job in jobs:
        row = rows.setdefault((job.month, job.job_type), SummaryRow(job.month, job.job_type))
        row.jobs += 1
        row.not_succeeded += job.state != JobState.SUCCEEDED.value
        row.task_hours += job.task_seconds / 3600
        total = job.usd
        if total is None:
            row.unknown += 1
            row.job_ids_unknown.append(job.job_id)
            continue
        row.known_usd += total
        if job.products:
            chain = job.chain or job.job_id
            if chain not in counted:
                counted.add(chain)
                row.products += job.products
            row.usd_with_products += total
    return [rows[k] for k in sorted(rows)]


# make_job_id's date, a capacity fallback's ``-f<n>`` suffix after it (fallback.py).
_JOB_ID_DATE = re.compile(r"-(\d{4})(\d{2})\d{2}-\d{6}-[a-z0-9]+(-f\d+)?$")


def month_of(status: JobStatus) -> str:
    """YYYY-MM (UTC) the job was created: its creation time, else its id's date."""
    when = status.create_time
    if when:
        return when.astimezone(UTC).strftime("%Y-%m")
    return month_of_job_id(status.job_id) or "unknown"


def month_of_job_id(job_id: str) -> str | None:
    """``ingredients-spellcheck-20261120-100000-ab12`` -> ``2026-11`` (see make_job_id)."""
    match = _JOB_ID_DATE.search(job_id)
    return f"{match.group(1)}-{match.group(2)}" if match else None


# How many of a job type's latest records the UI's summary reads (a finish run's job is one
# materialization or observation with a cost; the sensor adds a few state observations).
RECORDS_READ = 2000


def recorded_costs(
    instance: dg.DagsterInstance, asset_key: dg.AssetKey, job_type: str
) -> dict[str, JobCost]:
    """The cost each job's finish run recorded on ``<type>/batch_job`` (materialization when
    it SUCCEEDED, observation otherwise), the newest per partition: two event-log queries."""
    found: dict[str, tuple[float, JobCost]] = {}
    for fetch in (instance.fetch_materializations, instance.fetch_observations):
        for record in fetch(asset_key, limit=RECORDS_READ).records:
            entry = record.event_log_entry
            event = entry.asset_materialization or entry.asset_observation
            if event is None or event.partition is None or "actual_cost" not in event.metadata:
                continue
            previous = found.get(event.partition)
            if previous is not None and previous[0] >= entry.timestamp:
                continue
            meta = event.metadata
            usd_value = _value(meta, "actual_cost_usd")
            products = _value(meta, "products")
            found[event.partition] = (
                entry.timestamp,
                JobCost(
                    job_id=event.partition,
                    job_type=job_type,
                    month=month_of_job_id(event.partition)
                    or datetime.fromtimestamp(entry.timestamp, UTC).strftime("%Y-%m"),
                    state=str(_value(meta, "state") or "unknown"),
                    usd=float(usd_value) if usd_value is not None else None,
                    task_seconds=float(_value(meta, "task_seconds") or 0.0),
                    products=int(products) if products is not None else None,
                    chain=str(_value(meta, "products_of") or ""),
                ),
            )
    return {job_id: cost for job_id, (_, cost) in found.items()}


def summary_table(rows: Sequence[SummaryRow]) -> dg.MetadataValue:
    """The summary as a UI table (newest month first)."""
    return metadata_table(
        (
            ("month", "string"),
            ("jobs", "int"),
            ("not succeeded", "int"),
            ("task hours", "float"),
            ("cost (USD)", "float"),
            ("jobs of unknown cost", "int"),
            ("per 1,000 products (USD)", "string"),
        ),
        (
            {
                "month": r.month,
                "jobs": r.jobs,
                "not succeeded": r.not_succeeded,
                "task hours": round(r.task_hours, 4),
                "cost (USD)": round(r.known_usd, 6),
                "jobs of unknown cost": r.unknown,
                "per 1,000 products (USD)": "" if r.per_1000 is None else usd(r.per_1000),
            }
            for r in sorted(rows, key=lambda r: r.month, reverse=True)
        ),
    )


def job_type_summary(
    instance: dg.DagsterInstance, asset_key: dg.AssetKey, job_type: str, current: JobCost
) -> dg.MetadataValue:
    """The job type's cost per month from its recorded jobs, this one (not recorded yet)
    included: what the finish run shows as ``cost_per_month``."""
    jobs = recorded_costs(instance, asset_key, job_type)
    jobs[current.job_id] = current
    return summary_table(summarize(jobs.values()))


def collect(
    engine: BatchEngine,
    *,
    month: str | None = None,
    job_type: str | None = None,
    products_of: Any = None,
) -> tuple[list[JobCost], int]:
    """The ended jobs of the engine (one listing, one read each) with their costs, and how
    many jobs are still in flight (not in the summary). ``products_of(status)`` gives a job's
    products count (or None)."""
    listed = engine.list_jobs(labels=dict([APP_LABEL]))
    out: list[JobCost] = []
    in_flight = 0
    for listed_status in listed:
        jt = listed_status.labels.get(JOB_TYPE_LABEL, "unknown")
        if (month and month_of(listed_status) != month) or (job_type and jt != job_type):
            continue
        if not listed_status.state.is_terminal:
            in_flight += 1
            continue
        try:
            status = engine.get_job(job_id=listed_status.job_id)
        except Exception:  # gone between the listing and the read: its listed status
            status = listed_status
        cost = actual_cost(status, engine=engine.name)
        out.append(JobCost.of(status, cost, jt, products_of(status) if products_of else None))
    return out, in_flight


def report_lines(rows: Sequence[SummaryRow], *, engine: str, in_flight: int) -> list[str]:
    """The report's notes (the table itself is printed by :func:`cost_command`)."""
    catalog = load_catalog()
    lines = [
        f"from each ended job's task run times (retries included) x prices.yaml (retrieved "
        f"{catalog.prices_retrieved}, list prices, some estimates); VM boot and idle time "
        "between tasks are not included"
    ]
    if engine == LOCAL_ENGINE:
        lines.append(
            "local runner: nothing was billed; these are what the runs would have cost on "
            "their configured machines in Cloud Batch"
        )
    unknown = [j for r in rows for j in r.job_ids_unknown]
    if unknown:
        lines.append(
            f"{len(unknown)} job(s) of unknown cost, not in the totals (see `robotoff-batch "
            f"status JOB_ID`): {', '.join(unknown[:5])}" + (" ..." if len(unknown) > 5 else "")
        )
    if in_flight:
        lines.append(f"{in_flight} job(s) still in flight, not counted")
    lines.append("jobs deleted from the engine are not counted (their run times are gone)")
    return lines
