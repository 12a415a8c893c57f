"""What a batch job really cost, from its tasks' run times, and a summary across jobs.

A job's *actual cost* is, for every attempt of every task (retries included), the time from
the attempt's start to its end as the engine reports it (Cloud Batch: the task's status
events, from ASSIGNED, a VM took it and pulls the image, or RUNNING, to the state it ends in;
the local runner: each attempt's start and end times) x the hourly price of the job's own
machine (its allocation policy: machine type, GPUs, provisioning model), from the same price
table and the same arithmetic as the worst-case ceiling
(:func:`robotoff_batch.config.models.hourly_rate`). It is what the VMs cost while busy with the
tasks; VM boot before the task is assigned and idle time between tasks are not in it (a Cloud
Batch bill is a little higher), and the table's prices are list prices, some of them estimates.

An attempt whose start or end is not known makes the cost *unknown*, never 0: a job that ran
without reported run times did cost money. A job none of whose tasks ever started (no GPU
capacity, cancelled while queued) cost $0. On the local runner nothing is billed: the figure
is what the same run would have cost on the configured machine, and every label says so.

:func:`cost_command` is ``robotoff-batch cost``: cost per job type per month, from the engine's
jobs (one listing, then one read per finished job) and the products count of each job's launch
run in the Dagster instance.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime
from typing import Any

import dagster as dg
import typer

from robotoff_batch.batch.engine import BatchEngine, JobState, JobStatus, MachineSpec
from robotoff_batch.batch.request import APP_LABEL, JOB_TYPE_LABEL
from robotoff_batch.config.catalog import load_catalog
from robotoff_batch.config.models import HourlyRate, UnknownPriceError, hourly_rate
from robotoff_batch.follow import metadata_table

LOCAL_ENGINE = "local"
CEILING_LABEL = "production worst-case ceiling"
# How many unknown reasons one explanation lists before "and N more".
_MAX_REASONS = 3


def usd(amount: float) -> str:
    """Dollars with the digits that matter: $43.02, $0.8963, $0.000112 (a short local run)."""
    if amount == 0:
        return "$0.00"
    if abs(amount) >= 10:
        return f"${amount:.2f}"
    return f"${amount:.4f}" if abs(amount) >= 0.01 else f"${amount:.6f}"


@dataclass(frozen=True)
class AttemptCost:
    task: int
    attempt: int
    start: datetime
    seconds: float
    usd: float


@dataclass(frozen=True)
class ActualCost:
    """The cost of one job from its tasks' run times; ``unknown`` says why it is not known."""

    job_id: str
    engine: str
    machine: MachineSpec | None
    rate: HourlyRate | None
    attempts: tuple[AttemptCost, ...] = ()
    unknown: str | None = None
    in_progress: bool = False  # the job has not ended: a cost so far

    @property
    def known(self) -> bool:
        return self.unknown is None

    @property
    def total_usd(self) -> float | None:
        """The cost in USD; None when unknown (never 0 for "we do not know")."""
        return float(sum((a.usd for a in self.attempts), 0.0)) if self.known else None

    @property
    def task_seconds(self) -> float:
        """Task run time of the attempts whose times are known."""
        return float(sum((a.seconds for a in self.attempts), 0.0))

    @property
    def simulated(self) -> bool:
        """The local runner ran it: nothing was billed, the figure is a what-if."""
        return self.engine == LOCAL_ENGINE

    @property
    def label(self) -> str:
        """What the figure is: billed (Cloud Batch) or what it would have cost (local)."""
        so_far = " so far" if self.in_progress else ""
        if self.simulated:
            return (
                f"would-be cost{so_far} (local runner, nothing billed: the same run on the "
                "configured machine in Cloud Batch)"
            )
        return f"actual cost{so_far}"

    def explain(self) -> str:
        """``$0.0249 = 1 attempt(s), 100.0 s of task time x $0.896306/h (...)``, or why the
        cost is unknown."""
        if not self.known:
            return f"unknown: {self.unknown}"
        total = self.total_usd or 0.0
        if not self.attempts:
            return "$0.00: no task ran"
        assert self.rate is not None and self.machine is not None
        rate = self.rate
        spot = (
            f" x {rate.spot_fraction} (SPOT) = ${rate.effective_usd:.6f}/h"
            if rate.spot_fraction is not None
            else ""
        )
        estimate = ", price is an estimate" if rate.estimate else ""
        return (
            f"{usd(total)} = {len(self.attempts)} attempt(s), {self.task_seconds:.1f} s of task "
            f"time x ${rate.hourly_usd:.6f}/h{spot} ({self.machine.describe()}{estimate})"
        )

    def per_1000(self, products: int | None) -> float | None:
        """USD per 1,000 products; None when the cost or the count is unknown (or 0)."""
        total = self.total_usd
        if total is None or not products:
            return None
        return total / products * 1000


def _reached_running(status: JobStatus) -> bool:
    return any(e.new_state is JobState.RUNNING for e in status.status_events) or (
        status.state is JobState.RUNNING
    )


def actual_cost(status: JobStatus, *, engine: str, now: datetime | None = None) -> ActualCost:
    """The cost of ``status``'s job from its tasks' attempts x its machine's hourly price.

    For a job not ended, an attempt still running counts up to ``now`` (a cost so far); for
    an ended job, an attempt without a start or an end makes the cost unknown."""
    in_progress = not status.state.is_terminal
    base: dict[str, Any] = {
        "job_id": status.job_id,
        "engine": engine,
        "machine": status.machine,
        "in_progress": in_progress,
    }
    if status.machine is None:
        return ActualCost(
            **base, rate=None, unknown="the engine does not report the job's machine type"
        )
    m = status.machine
    try:
        rate = hourly_rate(
            m.machine_type,
            provisioning_model=m.provisioning_model,
            accelerators_type=m.accelerators_type,
            accelerators_count=m.accelerators_count,
        )
    except UnknownPriceError as exc:
        return ActualCost(**base, rate=None, unknown=str(exc.args[0]))
    if status.state is JobState.DELETED:
        return ActualCost(
            **base, rate=rate, unknown="the job was deleted: its task run times are gone"
        )
    at = (now or datetime.now(UTC)) if in_progress else None
    attempts: list[AttemptCost] = []
    missing: list[str] = []
    for task in status.tasks:
        if task.attempts > len(task.runs):
            missing.append(
                f"task {task.index}: {task.attempts} attempt(s), run times reported for "
                f"{len(task.runs)}"
            )
        for run in task.runs:
            seconds = run.duration_s(at)
            if seconds is None or run.start is None:
                what = "start" if run.start is None else "end"
                missing.append(f"task {task.index} attempt {run.attempt}: no {what} time")
                continue
            attempts.append(
                AttemptCost(
                    task=task.index,
                    attempt=run.attempt,
                    start=run.start,
                    seconds=seconds,
                    usd=seconds / 3600 * rate.effective_usd,
                )
            )
    if not attempts and not missing and _reached_running(status):
        missing.append("the job ran but the engine reported no task run times")
    unknown = None
    if missing:
        more = len(missing) - _MAX_REASONS
        unknown = "; ".join(missing[:_MAX_REASONS]) + (f"; and {more} more" if more > 0 else "")
    return ActualCost(**base, rate=rate, attempts=tuple(attempts), unknown=unknown)


# -- what the launch run recorded ------------------------------------------------------------


@dataclass(frozen=True)
class LaunchFacts:
    """What the job's launch run recorded: products sent, and the ceiling at launch."""

    products: int | None = None
    worst_case_usd: float | None = None
    worst_case: str | None = None  # the arithmetic
    ceiling_usd: float | None = None  # the config's max_cost_usd
    source: str = "the launch run"


def _value(meta: Mapping[str, Any], key: str) -> Any:
    item = meta.get(key)
    return getattr(item, "value", item)


def launch_facts(
    instance: dg.DagsterInstance, launch_run_id: str | None, job_id: str
) -> LaunchFacts:
    """The ``rows`` of the launch run's ``products`` materialization and the worst case of its
    ``batch_job_submission``; empty facts when the run is not in this instance."""
    if not launch_run_id or instance.get_run_by_id(launch_run_id) is None:
        return LaunchFacts(source="no launch run in this Dagster instance")
    records = instance.get_records_for_run(
        run_id=launch_run_id, of_type=dg.DagsterEventType.ASSET_MATERIALIZATION, limit=100
    ).records
    products = worst = text = ceiling = None
    for record in records:
        mat = record.event_log_entry.asset_materialization
        if mat is None or _value(mat.metadata, "batch_job_id") != job_id:
            continue
        name = mat.asset_key.path[-1]
        if name == "products":
            products = _value(mat.metadata, "rows")
        elif name == "batch_job_submission":
            worst = _value(mat.metadata, "production_worst_case_usd")
            text = _value(mat.metadata, "production_worst_case")
            ceiling = _value(mat.metadata, "production_cost_ceiling_usd")
    return LaunchFacts(
        products=int(products) if products is not None else None,
        worst_case_usd=float(worst) if worst is not None else None,
        worst_case=str(text) if text is not None else None,
        ceiling_usd=float(ceiling) if ceiling is not None else None,
    )


def current_config_facts(job_type: str | None) -> LaunchFacts:
    """The ceiling of the job type's config as it is now (when the launch run is unknown)."""
    if not job_type:
        return LaunchFacts(source="unknown job type")
    from robotoff_batch.job_types import load_registry

    registered = load_registry().get(job_type)
    if registered is None:
        return LaunchFacts(source=f"no job type {job_type!r}")
    cost = registered.config.cost
    return LaunchFacts(
        worst_case_usd=cost.total_usd,
        worst_case=cost.explain(),
        ceiling_usd=registered.config.max_cost_usd,
        source=f"job_configs/{job_type}.yaml as it is now (the launch run is not known)",
    )


# -- what a person reads ---------------------------------------------------------------------


def ceiling_text(facts: LaunchFacts) -> str:
    if facts.worst_case_usd is None:
        return "unknown (the launch run's worst case is not known)"
    ceiling = f"; max_cost_usd ${facts.ceiling_usd:.2f}" if facts.ceiling_usd is not None else ""
    arithmetic = f": {facts.worst_case}" if facts.worst_case else ""
    note = "" if facts.source == "the launch run" else f" (from {facts.source})"
    return f"${facts.worst_case_usd:.2f}{arithmetic}{ceiling}{note}"


def per_1000_text(cost: ActualCost, facts: LaunchFacts) -> str:
    value = cost.per_1000(facts.products)
    if value is not None:
        return f"{usd(value)} ({facts.products} products)"
    if not cost.known:
        return "unknown (the cost is unknown)"
    return f"unknown (no products count: {facts.source})"


def cost_lines(cost: ActualCost, facts: LaunchFacts) -> list[str]:
    """The cost lines of ``robotoff-batch status JOB_ID``."""
    return [
        f"{cost.label}: {cost.explain()}",
        f"per 1,000 products: {per_1000_text(cost, facts)}",
        f"{CEILING_LABEL}: {ceiling_text(facts)}",
    ]


def job_facts(instance: dg.DagsterInstance | None, status: JobStatus) -> LaunchFacts:
    """The launch run's facts of a job, else the ceiling of its job type's current config."""
    from robotoff_batch.follow import OWNER_LABEL

    facts = LaunchFacts(source="no Dagster instance")
    if instance is not None:
        facts = launch_facts(instance, status.labels.get(OWNER_LABEL), status.job_id)
    if facts.worst_case_usd is None:
        current = current_config_facts(status.labels.get(JOB_TYPE_LABEL))
        facts = replace(current, products=facts.products)
    return facts


def job_cost_lines(status: JobStatus, engine: str, now: datetime | None = None) -> list[str]:
    """``robotoff-batch status JOB_ID``'s cost lines, with the launch run read from the
    Dagster instance where there is one."""
    try:
        from robotoff_batch import operations

        instance: dg.DagsterInstance | None = operations.instance()
    except Exception:
        instance = None
    try:
        facts = job_facts(instance, status)
    except Exception as exc:  # an unreadable instance must not hide the job's status
        facts = LaunchFacts(source=f"the Dagster instance is unreadable ({type(exc).__name__})")
    return cost_lines(actual_cost(status, engine=engine, now=now), facts)


def attempts_table(cost: ActualCost) -> dg.MetadataValue:
    return metadata_table(
        (
            ("task", "int"),
            ("attempt", "int"),
            ("start (UTC)", "string"),
            ("seconds", "float"),
            ("usd", "float"),
        ),
        (
            {
                "task": a.task,
                "attempt": a.attempt,
                "start (UTC)": a.start.astimezone(UTC).strftime("%Y-%m-%d %H:%M:%S"),
                "seconds": round(a.seconds, 1),
                "usd": round(a.usd, 6),
            }
            for a in cost.attempts
        ),
    )


def cost_metadata(cost: ActualCost, facts: LaunchFacts) -> dict[str, dg.MetadataValue]:
    """The cost entries of a job's ``batch_job`` materialization (its finish run): the figure
    beside the ceiling, per 1,000 products, and per attempt. The numbers are only there when
    known; the text always is, and says "unknown" and why."""
    meta: dict[str, dg.MetadataValue] = {
        "actual_cost": dg.MetadataValue.text(f"{cost.label}: {cost.explain()}")
    }
    total = cost.total_usd
    if total is not None:
        meta["actual_cost_usd"] = dg.MetadataValue.float(float(round(total, 6)))
    per_1000 = cost.per_1000(facts.products)
    if per_1000 is not None:
        meta["actual_cost_per_1000_products_usd"] = dg.MetadataValue.float(
            float(round(per_1000, 6))
        )
    meta["actual_cost_per_1000_products"] = dg.MetadataValue.text(per_1000_text(cost, facts))
    if facts.products is not None:
        meta["products"] = dg.MetadataValue.int(facts.products)
    if facts.worst_case_usd is not None:
        meta["production_worst_case_ceiling_usd"] = dg.MetadataValue.float(
            round(facts.worst_case_usd, 2)
        )
    meta["production_worst_case_ceiling"] = dg.MetadataValue.text(ceiling_text(facts))
    if cost.attempts:
        meta["task_seconds"] = dg.MetadataValue.float(float(round(cost.task_seconds, 3)))
        meta["cost_by_attempt"] = attempts_table(cost)
    return meta


# -- the summary across jobs -----------------------------------------------------------------


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
        )


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
    """Cost per (month, job type), oldest month first; a total per month is the caller's."""
    rows: dict[tuple[str, str], SummaryRow] = {}
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
            row.products += job.products
            row.usd_with_products += total
    return [rows[k] for k in sorted(rows)]


_JOB_ID_DATE = re.compile(r"-(\d{4})(\d{2})\d{2}-\d{6}-[a-z0-9]+$")


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


def cost_command(
    month: str | None = typer.Option(None, help="Only jobs created this month, YYYY-MM (UTC)."),
    job_type: str | None = typer.Option(None, "--job-type", help="Only this job type."),
) -> None:
    """Cost per job type per month, from the ended jobs' task run times x the price table."""
    from rich.console import Console
    from rich.table import Table

    from robotoff_batch.resources import build_resources, initialized

    if month is not None and not re.fullmatch(r"\d{4}-(0[1-9]|1[0-2])", month):
        raise typer.BadParameter(f"{month!r}: write the month as YYYY-MM, e.g. 2026-11")
    engine = initialized(build_resources()["batch_engine"]).get_engine()
    products_of = _products_lookup()
    jobs, in_flight = collect(engine, month=month, job_type=job_type, products_of=products_of)
    rows = summarize(jobs)
    local = engine.name == LOCAL_ENGINE
    table = Table(
        title="would-be cost per job type and month (local runner)"
        if local
        else "actual cost per job type and month"
    )
    for column in (
        "month",
        "job type",
        "jobs",
        "not succeeded",
        "task hours",
        "cost",
        "unknown",
        "per 1,000 products",
    ):
        table.add_column(column)
    for row in rows:
        per_1000 = row.per_1000
        table.add_row(
            row.month,
            row.job_type,
            str(row.jobs),
            str(row.not_succeeded),
            f"{row.task_hours:.4f}",
            usd(row.known_usd),
            str(row.unknown),
            usd(per_1000) if per_1000 is not None else "unknown",
        )
    if rows:
        products = sum(r.products for r in rows)
        with_products = sum(r.usd_with_products for r in rows)
        total_1000 = with_products / products * 1000 if products else None
        table.add_row(
            "total",
            "",
            str(sum(r.jobs for r in rows)),
            str(sum(r.not_succeeded for r in rows)),
            f"{sum(r.task_hours for r in rows):.4f}",
            usd(sum(r.known_usd for r in rows)),
            str(sum(r.unknown for r in rows)),
            usd(total_1000) if total_1000 is not None else "unknown",
        )
    console = Console(soft_wrap=True, width=None if _isatty() else 160)
    if not rows:
        console.print("no ended batch job" + (f" in {month}" if month else ""), highlight=False)
    else:
        console.print(table)
    for line in report_lines(rows, engine=engine.name, in_flight=in_flight):
        console.print(line, highlight=False, markup=False)


def _isatty() -> bool:
    import sys

    return sys.stdout.isatty()


def _products_lookup() -> Any:
    """``status -> products`` from the launch runs in the Dagster instance; None if there is
    no instance to read."""
    try:
        from robotoff_batch import operations
        from robotoff_batch.follow import OWNER_LABEL

        instance = operations.instance()
    except Exception:
        return None

    def products_of(status: JobStatus) -> int | None:
        try:
            owner = status.labels.get(OWNER_LABEL)
            return launch_facts(instance, owner, status.job_id).products
        except Exception:
            return None

    return products_of
