"""robotoff-batch config validate|show|image: the job-type configurations."""

from __future__ import annotations

import json
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING

import typer

from robotoff_batch.cli.common import config_app, console, err_console
from robotoff_batch.paths import JOB_CONFIGS_DIR

if TYPE_CHECKING:
    from robotoff_batch.config.models import JobConfig


@config_app.command("validate")
def config_validate(
    paths: list[Path] = typer.Argument(  # noqa: B008
        None, help="YAML files to check (default: every file in job_configs/)."
    ),
) -> None:
    """Validate job configurations; exit 1 with every problem listed if one is invalid."""
    from robotoff_batch.config.loader import JobConfigError, JobConfigsError, load_job_config
    from robotoff_batch.job_types import job_config_paths

    targets = paths or job_config_paths()
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
    job_type: str = typer.Argument(..., help="Job type: its job_configs/ file's name."),
    request: bool = typer.Option(
        False, "--request", help="Also print the CreateJobRequest as JSON (a dry run)."
    ),
    project: str = typer.Option("robotoff", help="GCP project used in the request's parent."),
) -> None:
    """Show the resolved config of a job type, its worst-case cost and (dry run) its request."""
    from robotoff_batch.config.loader import JobConfigError, load_job_config
    from robotoff_batch.job_types import job_config_paths

    known_paths = {p.stem: p for p in job_config_paths()}
    path = known_paths.get(job_type, JOB_CONFIGS_DIR / f"{job_type}.yaml")
    if not path.exists():
        known = ", ".join(known_paths) or "none"
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
        from robotoff_batch.batch.request import (
            build_create_job_request,
            make_job_id,
            request_to_json,
        )
        from robotoff_batch.batch.submit import container_environment
        from robotoff_batch.job_types.base import INPUT_FILE

        job_id = make_job_id(job_type, launched_at=datetime.now(UTC))
        req = build_create_job_request(
            cfg.resources,
            job_type=job_type,
            job_id=job_id,
            project=project,
            environment={
                **container_environment(
                    job_uri=f"<staging>/{job_type}/{job_id}",
                    staged={INPUT_FILE: f"<staging>/{job_type}/{job_id}/{INPUT_FILE}"},
                    input_file=INPUT_FILE,
                ),
                **task_environment(job_type, cfg),
            },
            labels={},
        )
        console.print("CreateJobRequest (dry run, nothing submitted):", highlight=False)
        # plain print: the JSON must stay machine-readable
        typer.echo(request_to_json(req))


@config_app.command("image")
def config_image(job_type: str = typer.Argument(..., help="Job type.")) -> None:
    """Print the job type's container image URI (used by make image and make push-image)."""
    from robotoff_batch.config.loader import JobConfigError, load_job_config

    path = JOB_CONFIGS_DIR / f"{job_type}.yaml"
    try:
        item = load_job_config(path)
    except JobConfigError as exc:
        err_console.print(str(exc), highlight=False, markup=False)
        raise typer.Exit(1) from None
    typer.echo(item.config.resources.container_image_uri)


def task_environment(job_type: str, cfg: JobConfig) -> dict[str, str]:
    """The job type's launch-time variables, for a dry run (``<staging>`` for the staging
    root, nothing checked); a config that cannot launch says why instead of failing here."""
    from robotoff_batch.job_types import load_registry
    from robotoff_batch.job_types.base import StagedFilesError

    registered = load_registry().get(job_type)
    if registered is None:
        return {}
    try:
        return registered.job_type.task_environment(cfg, staging_root_uri="<staging>")
    except StagedFilesError as exc:
        err_console.print(f"the launch would refuse this config: {exc}", highlight=False)
        return {}
