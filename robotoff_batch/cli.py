"""``robotoff-batch``: validate configs, launch and follow batch jobs, import, run the demo.

Commands are thin: they parse arguments and call the same code the Dagster assets use.
"""

from __future__ import annotations

import json
import logging
import sys
import typing
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import typer
import yaml
from rich.console import Console
from rich.table import Table
from rich.text import Text
from typer.core import TyperCommand

from robotoff_batch import operations
from robotoff_batch.batch.engine import BatchEngine, JobNotFoundError, JobState
from robotoff_batch.batch.request import (
    APP_LABEL,
    JOB_TYPE_LABEL,
    build_create_job_request,
    make_job_id,
    request_to_json,
)
from robotoff_batch.config.loader import (
    JobConfigError,
    JobConfigsError,
    load_job_config,
)
from robotoff_batch.cost import cost_command, job_cost_lines
from robotoff_batch.doctor import doctor_command
from robotoff_batch.follow import key_prefix
from robotoff_batch.paths import JOB_CONFIGS_DIR
from robotoff_batch.resources import build_resources, initialized
from robotoff_batch.smoke import smoke_command

app = typer.Typer(
    help=__doc__, no_args_is_help=True, pretty_exceptions_enable=False, rich_markup_mode=None
)
config_app = typer.Typer(help="Validate and inspect job-type configurations.", no_args_is_help=True)
app.add_typer(config_app, name="config")
app.command("doctor")(doctor_command)  # production preflight: robotoff_batch/doctor.py
app.command("smoke")(smoke_command)  # one tiny job on a job type's resources: smoke.py
app.command("cost")(cost_command)  # cost per job type per month: cost.py
# Piped or captured output gets wide tables instead of truncated job ids.
_WIDTH = None if sys.stdout.isatty() else 160
console = Console(soft_wrap=True, width=_WIDTH)
err_console = Console(stderr=True, soft_wrap=True, width=_WIDTH)


_DEBUG = {"on": False}


@app.callback()
def _main(
    verbose: bool = typer.Option(False, "--verbose", "-v", help="Debug logging."),
    debug: bool = typer.Option(
        False, "--debug", help="Show Dagster's event stream and full stack traces on errors."
    ),
) -> None:
    _DEBUG["on"] = debug
    logging.basicConfig(
        level=logging.DEBUG if verbose else logging.INFO,
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
    )
    logging.getLogger("alembic").setLevel(logging.WARNING)  # Dagster's SQLite migrations


def say(message: str, *, style: str | None = None, err: bool = False) -> None:
    """Print a message as it is: no rich markup interpretation (``[a-z]`` stays visible)."""
    (err_console if err else console).print(Text(message, style=style or ""), highlight=False)


def fail(message: str) -> typer.Exit:
    say(message, style="red", err=True)
    return typer.Exit(1)


def main() -> None:
    """The ``robotoff-batch`` command: one-line errors, stack traces only with ``--debug``."""
    try:
        app()
    except Exception as exc:
        if "--debug" in sys.argv:
            raise
        say(f"error: {type(exc).__name__}: {exc}".splitlines()[0], style="red", err=True)
        say("(run again with --debug for the stack trace)", err=True)
        sys.exit(1)


@config_app.command("validate")
def config_validate(
    paths: list[Path] = typer.Argument(  # noqa: B008
        None, help="YAML files to check (default: every file in job_configs/)."
    ),
) -> None:
    """Validate job configurations; exit 1 with every problem listed if one is invalid."""
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
    job_type: str = typer.Argument(..., help="Job type, e.g. ingredients-spellcheck."),
    request: bool = typer.Option(
        False, "--request", help="Also print the CreateJobRequest as JSON (a dry run)."
    ),
    project: str = typer.Option("robotoff", help="GCP project used in the request's parent."),
) -> None:
    """Show the resolved config of a job type, its worst-case cost and (dry run) its request."""
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
        from robotoff_batch.job_types.base import INPUT_FILE
        from robotoff_batch.pipeline import container_environment

        job_id = make_job_id(job_type, launched_at=datetime.now(UTC))
        req = build_create_job_request(
            cfg.resources,
            job_type=job_type,
            job_id=job_id,
            project=project,
            environment=container_environment(
                job_uri=f"<staging>/{job_type}/{job_id}",
                staged={INPUT_FILE: f"<staging>/{job_type}/{job_id}/{INPUT_FILE}"},
                input_file=INPUT_FILE,
            ),
            labels={},
        )
        console.print("CreateJobRequest (dry run, nothing submitted):", highlight=False)
        # plain print: the JSON must stay machine-readable
        typer.echo(request_to_json(req))


@config_app.command("image")
def config_image(job_type: str = typer.Argument(..., help="Job type.")) -> None:
    """Print the job type's container image URI (used by `make image` / `make push-image`)."""
    path = JOB_CONFIGS_DIR / f"{job_type}.yaml"
    try:
        item = load_job_config(path)
    except JobConfigError as exc:
        err_console.print(str(exc), highlight=False, markup=False)
        raise typer.Exit(1) from None
    typer.echo(item.config.resources.container_image_uri)


def _table(title: str, columns: list[str]) -> Table:
    table = Table(title=title)
    for col in columns:
        table.add_column(col)
    return table


def _engine() -> BatchEngine:
    return initialized(build_resources()["batch_engine"]).get_engine()  # type: ignore[no-any-return]


def _parse_params(params: list[str]) -> dict[str, Any]:
    """``key=value`` launch parameters; values are read as YAML (numbers, lists...)."""
    parsed: dict[str, Any] = {}
    for item in params:
        key, sep, value = item.partition("=")
        if not sep or not key:
            raise typer.BadParameter(f"{item!r}: write launch parameters as key=value")
        try:
            parsed[key.strip()] = yaml.safe_load(value)
        except yaml.YAMLError as exc:
            first = str(exc).splitlines()[0]
            raise typer.BadParameter(f"{item!r}: not a valid value ({first})") from None
    return parsed


def launch_parameters_help() -> str:
    """Every job type's launch parameters with their types and defaults (for --help)."""
    from robotoff_batch.job_types import job_type_modules

    lines = []
    for name, jt in sorted(job_type_modules().items()):
        lines.append(f"Launch parameters of {name}:")
        for field, info in jt.launch_config.model_fields.items():
            annotation = info.annotation
            if isinstance(annotation, type) and not typing.get_args(annotation):
                kind = annotation.__name__
            else:
                kind = str(annotation).replace("typing.", "")
            default = info.get_default(call_default_factory=True)
            lines.append(f"  {field}={kind} (default {default!r}): {info.description or ''}")
    return "\n".join(lines)


class _LaunchCommand(TyperCommand):
    """Lists the launch parameters in ``launch --help`` (read only when help is asked)."""

    def format_epilog(self, ctx: Any, formatter: Any) -> None:
        formatter.write_paragraph()
        with formatter.indentation():
            for line in launch_parameters_help().splitlines():
                formatter.write(line + "\n")


@app.command("launch", cls=_LaunchCommand)
def launch(
    job_type: str = typer.Argument(..., help="Job type, e.g. ingredients-spellcheck."),
    params: list[str] = typer.Argument(  # noqa: B008
        None, help="Launch parameters as key=value, e.g. limit=500 'languages=[fr, en]'."
    ),
    wait: bool = typer.Option(False, "--wait", help="Follow the job to its outcome (import)."),
    timeout_s: float = typer.Option(
        24 * 3600, help="With --wait: stop waiting after this long (the job goes on)."
    ),
) -> None:
    """Launch a batch job through the Dagster instance (it shows in the UI)."""
    try:
        outcome = operations.launch(
            job_type=job_type, params=_parse_params(params or []), debug=_DEBUG["on"]
        )
    except operations.OperationError as exc:
        raise fail(f"launch failed: {exc}") from None
    say(f"launched batch job {outcome.job_id} ({outcome.rows} products)")
    if wait:
        _follow(outcome.job_id, timeout_s)


def _follow(job_id: str, timeout_s: float) -> operations.Outcome:
    """Follow a job to its outcome; print each state once; exit 1 unless it was imported (or
    recorded, for a job type that imports nothing)."""
    try:
        outcome = operations.follow_job(
            job_id=job_id,
            timeout_s=timeout_s,
            on_change=lambda old, new: say(f"  {job_id}: {old} → {new}"),
            on_message=lambda level, message: say(f"  {message}", err=True),
            debug=_DEBUG["on"],
        )
    except operations.OperationError as exc:
        raise fail(str(exc)) from None
    who = "the Dagster daemon" if outcome.by_daemon else "this command"
    state = outcome.status.state
    if state != JobState.SUCCEEDED:
        say(f"{job_id} ended {state.value} (recorded by {who}):", style="red", err=True)
        say(outcome.message or outcome.status.failure_summary, err=True)
        raise typer.Exit(1)
    if not outcome.imports:
        if outcome.message:
            raise fail(f"{job_id} SUCCEEDED but recording it failed: {outcome.message}")
        say(f"{job_id} SUCCEEDED (recorded by {who}); its job type imports nothing")
        return outcome
    if outcome.imported is None:
        raise fail(f"{job_id} SUCCEEDED but its import failed: {outcome.message}")
    say(f"imported {outcome.imported} predictions from {job_id} (by {who})")
    return outcome


@app.command("status")
def status(
    job_id: str | None = typer.Argument(None, help="A batch job id; default: all jobs."),
) -> None:
    """A table of batch jobs and their states, or one job's events, tasks and log tail."""
    engine = _engine()
    if job_id is None:
        table = _table("batch jobs", ["job id", "job type", "state", "created (UTC)", "tasks"])
        jobs = sorted(
            engine.list_jobs(labels=dict([APP_LABEL])),
            key=lambda s: s.create_time or datetime.min.replace(tzinfo=UTC),
        )
        for s in jobs:
            created = s.create_time.strftime("%Y-%m-%d %H:%M:%S") if s.create_time else ""
            task_states = ", ".join(f"{t.index}:{t.state}" for t in s.tasks)
            table.add_row(
                s.job_id, s.labels.get(JOB_TYPE_LABEL, ""), s.state.value, created, task_states
            )
        console.print(table)
        return
    try:
        s = engine.get_job(job_id=job_id)
    except JobNotFoundError:
        raise fail(f"no batch job {job_id!r}") from None
    say(f"{s.job_id}: {s.state.value}  logs: {s.log_uri or '-'}", style="bold")
    events = _table("status events", ["time (UTC)", "type", "description"])
    for e in s.status_events:
        events.add_row(e.time.strftime("%H:%M:%S"), e.type, Text(e.description))
    console.print(events)
    tasks = _table("tasks", ["index", "state", "exit code", "attempts", "reason"])
    for t in s.tasks:
        tasks.add_row(str(t.index), t.state, str(t.exit_code), str(t.attempts), t.exit_reason or "")
    console.print(tasks)
    for line in job_cost_lines(s, engine.name):
        say(line)
    if s.state in (JobState.FAILED, JobState.CANCELLED) or any(t.exit_code for t in s.tasks):
        tail = engine.log_tail(job_id=job_id)
        if tail:
            say("last lines of the failed task's log:", style="bold")
            say(tail)


@app.command("import")
def import_(job_id: str = typer.Argument(..., help="A SUCCEEDED batch job id.")) -> None:
    """Record a finished job's outcome and import its output (again: changes nothing)."""
    try:
        already, n, _ = operations.run_import(job_id=job_id, debug=_DEBUG["on"])
    except operations.OperationError as exc:
        raise fail(f"import failed: {exc}") from None
    note = " (already imported: nothing changed)" if already else ""
    say(f"imported {n} predictions from {job_id}{note}")


@app.command("cancel")
def cancel(job_id: str = typer.Argument(..., help="The batch job to cancel.")) -> None:
    """Cancel a batch job, once; a job already ended, cancelling or gone is left alone."""
    engine = _engine()
    try:
        before = engine.get_job(job_id=job_id).state
    except JobNotFoundError:
        say(f"no batch job {job_id!r}: nothing to cancel")
        return
    if before.is_terminal:
        say(f"{job_id} already ended {before.value}: nothing to cancel")
        return
    if before.is_stopping:
        say(f"{job_id} is already {before.value}: not sent again")
        return
    engine.cancel(job_id=job_id)
    say(f"cancelled {job_id} (was {before.value}); the sensor records it as CANCELLED")


@app.command("demo")
def demo(
    limit: int = typer.Option(300, help="Products to correct from the shipped sample."),
) -> None:
    """The main job on embedded defaults: launch, run locally, follow, import, summarise."""
    job_type = "ingredients-spellcheck"
    console.rule("robotoff-batch demo: ingredients-spellcheck on the shipped OFF sample")
    try:
        launched = operations.launch(job_type=job_type, params={"limit": limit}, debug=_DEBUG["on"])
    except operations.OperationError as exc:
        raise fail(f"launch failed: {exc}") from None
    say(
        f"1. extracted {launched.rows} products, staged them, submitted {launched.job_id} "
        "to the local runner"
    )
    say("2. following the job (the sensor's own function):")
    followed = _follow(launched.job_id, timeout_s=1800)
    timeline = _table("state timeline", ["time (UTC)", "event"])
    for e in followed.status.status_events:
        # "... for job projects/p/locations/l/jobs/<id>." adds nothing here
        timeline.add_row(
            e.time.strftime("%H:%M:%S.%f")[:-3], Text(e.description.split(" for job ")[0])
        )
    console.print(timeline)
    examples = operations.examples(job_id=launched.job_id, limit=5)
    table = _table("example corrections", ["barcode", "lang", "original → correction"])
    for ex in examples:
        table.add_row(
            ex["barcode"], ex.get("lang") or "", Text(_diff(ex["original"], ex["correction"]))
        )
    if examples:
        console.print(table)
    say(demo_summary(launched.rows, followed, operations.import_record(job_id=launched.job_id)))
    prefix = key_prefix(job_type)
    say(
        "see it in the Dagster UI: make ui (or DAGSTER_HOME="
        f"{operations.dagster_home()} .venv/bin/dagster dev -w workspace.yaml), then open "
        f"http://127.0.0.1:3000/assets/{prefix}/batch_job?partition={launched.job_id}"
    )


def demo_summary(rows: int, followed: operations.Outcome, record: Any) -> str:
    """The demo's last line: what the engine corrected and what the import did with it."""
    head = f"summary: {rows} products extracted, job {followed.status.state.value}"
    if record is None:
        return f"{head}, nothing imported"
    text = f"{head}, {record.candidates} corrections made; {record.predictions} new predictions"
    if record.predictions_kept:
        text += (
            f", {record.predictions_kept} already stored by an earlier run of the same model "
            "version (kept, as Robotoff's dedup rule does; `make clean` starts afresh)"
        )
    if record.predictions_replaced:
        text += f", {record.predictions_replaced} older-version predictions replaced"
    insights = ", ".join(f"{v} {k}" for k, v in record.insights.items() if v)
    return text + (f"; insights: {insights}" if insights else "; no insight changed")


def _diff(original: str, correction: str) -> str:
    """The words that changed, for a short display."""
    from robotoff_batch.assets.imports import changed_words

    return changed_words(original, correction)


if __name__ == "__main__":  # pragma: no cover
    main()
