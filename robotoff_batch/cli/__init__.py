"""robotoff-batch: validate configs, launch and follow batch jobs, import, run the demo.

Commands are thin: they parse arguments and call the same code the Dagster assets use.
"""

from __future__ import annotations

import sys

import typer

from robotoff_batch.cli import config as _config  # noqa: F401 (registers the config commands)
from robotoff_batch.cli.common import app, say
from robotoff_batch.cli.cost import cost_command
from robotoff_batch.cli.demo import demo
from robotoff_batch.cli.doctor import doctor_command
from robotoff_batch.cli.jobs import LaunchCommand, cancel, import_, launch, status
from robotoff_batch.cli.relaunch import relaunch_command
from robotoff_batch.cli.weights import stage_weights_command


def smoke_command(
    job_type: str = typer.Argument(..., help="Job type."),
    timeout_s: float = typer.Option(1800.0, help="Stop following the smoke job after this."),
) -> None:
    """Submit a one-task job with the job type's resources that proves the GPU is visible in
    its container (nvidia-smi) and the staging bucket reachable; follow it; print the outcome
    and the cost. On the local runner: a CPU stand-in."""
    # cli/smoke.py imports the Batch client at its top: read only when the command runs
    from robotoff_batch.cli import smoke

    smoke.smoke_command(job_type, timeout_s)


app.info.help = __doc__
# In this order in --help.
app.command("doctor")(doctor_command)  # production preflight: cli/doctor.py, doctor/
app.command("smoke")(smoke_command)  # one tiny job on a job type's resources: cli/smoke.py
app.command("stage-weights")(stage_weights_command)  # a GPU model's pinned weights: cli/weights.py
app.command("cost")(cost_command)  # cost per job type per month: cli/cost.py, cost/
app.command("launch", cls=LaunchCommand)(launch)
app.command("status")(status)
app.command("import")(import_)
app.command("relaunch")(relaunch_command)  # a FAILED job's remainder: cli/relaunch.py
app.command("cancel")(cancel)
app.command("demo")(demo)


def main() -> None:
    """The robotoff-batch command: one-line errors, stack traces only with --debug."""
    try:
        app()
    except Exception as exc:
        if "--debug" in sys.argv:
            raise
        say(f"error: {type(exc).__name__}: {exc}".splitlines()[0], style="red", err=True)
        say("(run again with --debug for the stack trace)", err=True)
        sys.exit(1)


__all__ = ["app", "main"]

if __name__ == "__main__":  # pragma: no cover
    main()
