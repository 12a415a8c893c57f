"""robotoff-batch launch|status|import|cancel: one batch job through the Dagster instance.

Dagster, the engines and the import's stack are imported when a command runs, not when the
CLI starts (``--help`` stays fast): see cli/common.py.
"""

from __future__ import annotations

import typing
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any, NoReturn

import typer
import yaml
from rich.text import Text
from typer.core import TyperCommand

from robotoff_batch.cli.common import DEBUG, batch_engine, console, fail, make_table, say

if TYPE_CHECKING:
    from robotoff_batch.cli import operations


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


class LaunchCommand(TyperCommand):
    """Lists the launch parameters in ``launch --help`` (read only when help is asked)."""

    def format_epilog(self, ctx: Any, formatter: Any) -> None:
        formatter.write_paragraph()
        with formatter.indentation():
            for line in launch_parameters_help().splitlines():
                formatter.write(line + "\n")


def launch(
    job_type: str = typer.Argument(
        ..., help="Job type: its job_configs/ file's name (launch --help lists them)."
    ),
    params: list[str] = typer.Argument(  # noqa: B008
        None, help="Launch parameters as key=value, e.g. limit=500 'languages=[fr, en]'."
    ),
    wait: bool = typer.Option(False, "--wait", help="Follow the job to its outcome (import)."),
    timeout_s: float = typer.Option(
        24 * 3600, help="With --wait: stop waiting after this long (the job goes on)."
    ),
) -> None:
    """Launch a batch job through the Dagster instance (it shows in the UI)."""
    from robotoff_batch.cli import operations

    ws = operations.Workspace.from_env()
    try:
        outcome = operations.launch(
            ws, job_type=job_type, params=_parse_params(params or []), debug=DEBUG["on"]
        )
    except operations.OperationError as exc:
        raise fail(f"launch failed: {exc}") from None
    skipped = (
        ""
        if outcome.skipped_unchanged is None
        else (f"; {outcome.skipped_unchanged} skipped as unchanged")
    )
    cost = (
        ""
        if outcome.expected_cost_usd is None
        else f"; expected cost ${outcome.expected_cost_usd:.2f}, ceiling "
        f"${outcome.cost_ceiling_usd or 0:.2f}"
    )
    if outcome.nothing_left:
        say(f"no batch job launched: {outcome.nothing_left}")
        return
    try:  # from here on the job exists: a Ctrl-C at any point says what happens to it
        say(f"launched batch job {outcome.job_id} ({outcome.rows} products){skipped}{cost}")
        if wait:
            follow_and_report(ws, outcome.job_id, timeout_s)
    except KeyboardInterrupt:
        _stopped_waiting(ws, outcome.job_id)


def _stopped_waiting(ws: operations.Workspace, job_id: str) -> NoReturn:
    """Ctrl-C once the job exists: it goes on; say who imports it, exit 130."""
    from robotoff_batch.cli import operations

    say(
        f"stopped waiting (Ctrl-C); {job_id} goes on: {operations.who_imports(ws, job_id)}",
        style="yellow",
        err=True,
    )
    raise typer.Exit(130) from None


def follow_and_report(
    ws: operations.Workspace, launched: str, timeout_s: float
) -> operations.Outcome:
    """Follow a job (and the fallback jobs that replace it) to its outcome; print each state
    once; exit 1 unless it was imported (or recorded, for a job type that imports nothing).
    Ctrl-C stops the waiting, not the job, and says who imports it next."""
    from robotoff_batch.batch.engine import JobState
    from robotoff_batch.cli import operations

    try:
        outcome = operations.follow_job(
            ws,
            job_id=launched,
            timeout_s=timeout_s,
            on_change=lambda job_id, old, new: say(f"  {job_id}: {old} → {new}"),
            on_message=lambda level, message: say(f"  {message}", err=True),
            debug=DEBUG["on"],
        )
    except operations.OperationError as exc:
        raise fail(str(exc)) from None
    except KeyboardInterrupt:
        _stopped_waiting(ws, launched)
    job_id = outcome.status.job_id
    if job_id != launched:
        say(f"{launched} was replaced by its capacity fallback {job_id}")
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


def _instance_or_none() -> Any:
    """The Dagster instance, for the launch run's facts; None where there is none to read."""
    try:
        from robotoff_batch.cli import operations

        return operations.instance()
    except Exception:
        return None


def status(
    job_id: str | None = typer.Argument(None, help="A batch job id; default: all jobs."),
) -> None:
    """A table of batch jobs and their states, or one job's events, tasks, log tail and
    whether it was imported."""
    from robotoff_batch.batch.engine import JobNotFoundError, JobState
    from robotoff_batch.cost.facts import job_cost_lines
    from robotoff_batch.follow.metadata import job_outcome
    from robotoff_batch.names import APP_LABEL, JOB_TYPE_LABEL

    engine = batch_engine()
    if job_id is None:
        table = make_table("batch jobs", ["job id", "job type", "state", "created (UTC)", "tasks"])
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
        raise fail(f"no batch job {job_id!r} in the {engine.name} engine") from None
    say(f"{s.job_id}: {s.state.value}  logs: {s.log_uri or '-'}", style="bold")
    events = make_table("status events", ["time (UTC)", "type", "description"])
    for e in s.status_events:
        events.add_row(e.time.strftime("%H:%M:%S"), e.type, Text(e.description))
    console.print(events)
    tasks = make_table("tasks", ["index", "state", "exit code", "attempts", "reason"])
    for t in s.tasks:
        tasks.add_row(str(t.index), t.state, str(t.exit_code), str(t.attempts), t.exit_reason or "")
    console.print(tasks)
    if s.state == JobState.RUNNING:
        from robotoff_batch.follow.progress import progress_lines
        from robotoff_batch.resources import build_resources, initialized

        staging = initialized(build_resources()["staging"]).get_staging()
        for line in progress_lines(engine, staging, s, _instance_or_none()):
            say(line)
    for line in job_cost_lines(s, engine.name, _instance_or_none()):
        say(line)
    _print_import(s)
    if s.state in (JobState.FAILED, JobState.CANCELLED) or any(t.exit_code for t in s.tasks):
        for line in job_outcome(engine, s).lines():
            say(line)


def import_(
    job_id: str = typer.Argument(..., help="A SUCCEEDED batch job id."),
    retry_quarantined: bool = typer.Option(
        False,
        "--retry-quarantined",
        help="Read the rows an earlier import held back (listed by status JOB) again and "
        "import those now good; nothing else is re-considered.",
    ),
    partial: bool = typer.Option(
        False,
        "--partial",
        help="A FAILED job: import the complete chunks its tasks finished (recorded as "
        "partial); relaunching it then computes and imports only the rest.",
    ),
) -> None:
    """Record a finished job's outcome and import its output (an imported job: answered
    from the ledger, nothing changed)."""
    from robotoff_batch.cli import operations

    try:
        ws = operations.Workspace.from_env()
        already, n, _ = operations.run_import(
            ws,
            job_id=job_id,
            debug=DEBUG["on"],
            retry_quarantined=retry_quarantined,
            partial=partial,
            on_retry=lambda why: say(f"  database outage: {why}", style="yellow", err=True),
        )
        record = operations.import_record(ws, job_id=job_id)
    except operations.OperationError as exc:
        raise fail(f"import failed: {exc}") from None
    note = " (already imported: nothing changed)" if already and not retry_quarantined else ""
    kind = " (partial: the complete chunks of a failed job)" if partial and not already else ""
    say(f"imported {n} predictions from {job_id}{kind}{note}")
    if record is not None and record.rows_quarantined:
        say(
            f"{record.rows_quarantined} row(s) held back (quarantined): robotoff-batch status "
            f"{job_id} lists them",
            style="yellow",
        )


def _print_import(status: Any) -> None:
    """Whether the job was imported (its counts and the rows it held back), not yet (and
    who imports it), refused (and why), or has nothing to import."""
    from robotoff_batch.cli import operations

    job_id = status.job_id
    try:
        ws = operations.Workspace.from_env()
        known = operations.import_state(ws, status)
        held = (
            operations.quarantined(ws, job_id=job_id)
            if known.record is not None and known.record.rows_quarantined
            else []
        )
    except Exception as exc:  # the predictions database is not reachable: say so, go on
        say(f"import: not known ({exc})")
        return
    record = known.record
    if record is None:
        say(f"import: {known.state}: {known.why}", style="red" if known.state == "refused" else "")
        return
    partial = " (partial: the complete chunks of a failed job)" if record.partial else ""
    say(
        f"import: imported{partial}, {record.predictions} predictions, "
        f"{record.rows_quarantined} row(s) held back, {record.rows_collapsed} identical "
        f"repeat(s) collapsed, {record.products_deleted} product(s) deleted since the launch"
    )
    if held:
        table = make_table("rows held back (quarantined)", ["file", "row", "code", "reason"])
        for row in held:
            table.add_row(
                str(row["file"]).rsplit("/", 1)[-1],
                str(row["row"]),
                str(row["code"]),
                row["reason"],
            )
        console.print(table)
        say(f"after fixing them: robotoff-batch import {job_id} --retry-quarantined")


def cancel(job_id: str = typer.Argument(..., help="The batch job to cancel.")) -> None:
    """Cancel a batch job, once; a job already ended or cancelling is left alone; an unknown
    job id exits 1."""
    from robotoff_batch.batch.engine import cancel_once

    engine = batch_engine()
    done = cancel_once(engine, job_id)
    if done.state is None:
        raise fail(f"no batch job {job_id!r} in the {engine.name} engine: nothing to cancel")
    say(done.message + ("; the sensor records it as CANCELLED" if done.sent else ""))
