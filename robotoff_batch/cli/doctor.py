"""robotoff-batch doctor: run the checks, one line each, exit status 1 when one fails."""

from __future__ import annotations

import os
from typing import TYPE_CHECKING

import typer

if TYPE_CHECKING:
    from robotoff_batch.doctor.context import DoctorContext


def doctor_command() -> None:
    """Production preflight, read-only: credentials, project and region, the bucket (a probe
    object created and removed), ListJobs, acting as the jobs' service account, the images.
    One line per check, with the fix; exit status 1 when any check fails."""
    from robotoff_batch.doctor.context import context_from_env

    report(context_from_env(dict(os.environ)))


def report(ctx: DoctorContext) -> None:
    """Run the checks in ``ctx`` and print them; ``typer.Exit(1)`` when one failed."""
    from robotoff_batch.doctor.checks import run_checks

    checks = run_checks(ctx)
    for check in checks:
        typer.echo(check.render())
    failed = [c for c in checks if not c.ok]
    typer.echo(
        f"{len(checks) - len(failed)} ok, {len(failed)} failed"
        + ("" if failed else ": ready for a first job (next: robotoff-batch smoke JOB_TYPE)")
    )
    if failed:
        raise typer.Exit(1)
