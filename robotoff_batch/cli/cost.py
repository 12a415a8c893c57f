"""robotoff-batch cost: cost per job type per month, printed."""

from __future__ import annotations

import re
from typing import TYPE_CHECKING, Any

import typer

if TYPE_CHECKING:
    from robotoff_batch.batch.engine import JobStatus


def cost_command(
    month: str | None = typer.Option(None, help="Only jobs created this month, YYYY-MM (UTC)."),
    job_type: str | None = typer.Option(None, "--job-type", help="Only this job type."),
) -> None:
    """Cost per job type per month, from the ended jobs' task run times x the price table."""
    from rich.console import Console
    from rich.table import Table

    from robotoff_batch.cost.actual import LOCAL_ENGINE, usd
    from robotoff_batch.cost.summary import collect, report_lines, summarize
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
        from robotoff_batch.cli import operations
        from robotoff_batch.cost.facts import chain_launch_facts

        instance = operations.instance()
    except Exception:
        return None

    def products_of(status: JobStatus) -> int | None:
        try:
            return chain_launch_facts(instance, status).products
        except Exception:
            return None

    return products_of
