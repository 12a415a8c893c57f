"""``robotoff-batch``: validate configs, launch and follow batch jobs, import, run the demo.

Commands are thin: they parse arguments and call the same code the Dagster assets use.
"""

from __future__ import annotations

import json
import logging
from datetime import UTC, datetime
from pathlib import Path

import typer
from rich.console import Console
from rich.table import Table

from robotoff_batch.batch.request import build_create_job_request, make_job_id, request_to_json
from robotoff_batch.config.loader import (
    JobConfigError,
    JobConfigsError,
    config_paths,
    load_job_config,
)
from robotoff_batch.paths import JOB_CONFIGS_DIR

app = typer.Typer(help=__doc__, no_args_is_help=True, pretty_exceptions_enable=False)
config_app = typer.Typer(help="Validate and inspect job-type configurations.", no_args_is_help=True)
app.add_typer(config_app, name="config")
console = Console(soft_wrap=True)
err_console = Console(stderr=True, soft_wrap=True)


@app.callback()
def _main(verbose: bool = typer.Option(False, "--verbose", "-v", help="Debug logging.")) -> None:
    logging.basicConfig(
        level=logging.DEBUG if verbose else logging.INFO,
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
    )


@config_app.command("validate")
def config_validate(
    paths: list[Path] = typer.Argument(  # noqa: B008
        None, help="YAML files to check (default: every file in job_configs/)."
    ),
) -> None:
    """Validate job configurations; exit 1 with every problem listed if one is invalid."""
    targets = paths or config_paths()
    if not targets:
        err_console.print(f"no job configuration found in {JOB_CONFIGS_DIR}")
        raise typer.Exit(1)
    failed = 0
    for path in targets:
        try:
            item = load_job_config(path)
        except (JobConfigError, JobConfigsError) as exc:
            failed += 1
            err_console.print(f"[red]✗[/red] {exc}", highlight=False, markup=True)
            continue
        console.print(
            f"[green]✓[/green] {path}: {item.job_type}, worst case "
            f"${item.config.cost.total_usd:.2f} ≤ ceiling ${item.config.max_cost_usd:.2f}",
            highlight=False,
        )
    if failed:
        raise typer.Exit(1)


@config_app.command("show")
def config_show(
    job_type: str = typer.Argument(..., help="Job type, e.g. ingredients-spellcheck."),
    request: bool = typer.Option(
        False, "--request", help="Also print the CreateJobRequest as JSON (a dry run)."
    ),
    project: str = typer.Option("robotoff", help="GCP project used in the request's parent."),
) -> None:
    """Show the resolved config of a job type, its worst-case cost and (dry run) its request."""
    path = JOB_CONFIGS_DIR / f"{job_type}.yaml"
    if not path.exists():
        known = ", ".join(p.stem for p in config_paths()) or "none"
        err_console.print(f"unknown job type {job_type!r} (known: {known})")
        raise typer.Exit(1)
    try:
        item = load_job_config(path)
    except JobConfigError as exc:
        err_console.print(str(exc), highlight=False, markup=False)
        raise typer.Exit(1) from None
    cfg = item.config
    console.print_json(json.dumps(cfg.model_dump(mode="json")))
    console.print(
        f"worst-case cost: {cfg.cost.explain()} (ceiling ${cfg.max_cost_usd:.2f})",
        highlight=False,
    )
    if request:
        job_id = make_job_id(job_type, launched_at=datetime.now(UTC))
        req = build_create_job_request(
            cfg.resources,
            job_type=job_type,
            job_id=job_id,
            project=project,
            environment={
                "INPUT_FILE_PATH": f"<staging>/{job_type}/{job_id}/input.parquet",
                "OUTPUT_FILE_PATH": f"<staging>/{job_type}/{job_id}/output",
            },
            labels={},
        )
        console.print("CreateJobRequest (dry run, nothing submitted):", highlight=False)
        # plain print: the JSON must stay machine-readable
        typer.echo(request_to_json(req))


def _table(title: str, columns: list[str]) -> Table:
    table = Table(title=title)
    for col in columns:
        table.add_column(col)
    return table


if __name__ == "__main__":  # pragma: no cover
    app()
