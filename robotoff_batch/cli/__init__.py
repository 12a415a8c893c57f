"""``robotoff-batch``: validate configs, launch and follow batch jobs, import, run the demo.

Commands are thin: they parse arguments and call the same code the Dagster assets use.
"""

from __future__ import annotations

import sys

from robotoff_batch.cli import config as _config  # noqa: F401 (registers `config ...`)
from robotoff_batch.cli.common import app, say
from robotoff_batch.cli.cost import cost_command
from robotoff_batch.cli.demo import demo
from robotoff_batch.cli.doctor import doctor_command
from robotoff_batch.cli.jobs import LaunchCommand, cancel, import_, launch, status
from robotoff_batch.cli.relaunch import relaunch_command
from robotoff_batch.cli.smoke import smoke_command
from robotoff_batch.cli.weights import stage_weights_command

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
    """The ``robotoff-batch`` command: one-line errors, stack traces only with ``--debug``."""
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
