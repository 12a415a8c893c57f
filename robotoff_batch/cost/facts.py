"""What the launch run recorded (products, ceiling at launch; a capacity fallback's: its
chain's first job's), and the cost lines and
Dagster metadata built from it and the actual cost."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, replace
from datetime import UTC, datetime
from typing import Any

import dagster as dg

from robotoff_batch.batch.engine import JobStatus
from robotoff_batch.cost.actual import CEILING_LABEL, ActualCost, actual_cost, usd
from robotoff_batch.follow.metadata import metadata_table
from robotoff_batch.names import BATCH_JOB_SUBMISSION, JOB_TYPE_LABEL, PRODUCTS


@dataclass(frozen=True)
class LaunchFacts:
    """What the job's launch run recorded: products sent, and the ceiling at launch."""

    products: int | None = None
    worst_case_usd: float | None = None
    worst_case: str | None = None  # the arithmetic
    ceiling_usd: float | None = None  # the config's max_cost_usd
    source: str = "the launch run"
    # A capacity fallback's: the chain's first job, whose launch run these facts are.
    origin: str | None = None


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
        if name == PRODUCTS:
            products = _value(mat.metadata, "rows")
        elif name == BATCH_JOB_SUBMISSION:
            worst = _value(mat.metadata, "production_worst_case_usd")
            text = _value(mat.metadata, "production_worst_case")
            ceiling = _value(mat.metadata, "production_cost_ceiling_usd")
    return LaunchFacts(
        products=int(products) if products is not None else None,
        worst_case_usd=float(worst) if worst is not None else None,
        worst_case=str(text) if text is not None else None,
        ceiling_usd=float(ceiling) if ceiling is not None else None,
    )


def chain_launch_facts(instance: dg.DagsterInstance, status: JobStatus) -> LaunchFacts:
    """The launch run's facts of a job; for a capacity fallback (``<first id>-f<n>``, which
    has no launch run of its own), those of its chain's first job, from the same run."""
    from robotoff_batch.follow.fallback import chain_position
    from robotoff_batch.names import OWNER_LABEL

    origin, index = chain_position(status)
    facts = launch_facts(instance, status.labels.get(OWNER_LABEL), origin)
    if index == 0:
        return facts
    return replace(facts, source=f"the launch run of {origin}", origin=origin)


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
    facts = LaunchFacts(source="no Dagster instance")
    if instance is not None:
        facts = chain_launch_facts(instance, status)
    if facts.worst_case_usd is None:
        current = current_config_facts(status.labels.get(JOB_TYPE_LABEL))
        facts = replace(current, products=facts.products, origin=facts.origin)
    return facts


def job_cost_lines(
    status: JobStatus,
    engine: str,
    instance: dg.DagsterInstance | None,
    now: datetime | None = None,
) -> list[str]:
    """``robotoff-batch status JOB_ID``'s cost lines, with the launch run read from the
    Dagster ``instance`` where there is one."""
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
    if facts.origin is not None:  # the chain's products, counted once in the summary
        meta["products_of"] = dg.MetadataValue.text(facts.origin)
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
