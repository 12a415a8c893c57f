"""What every command shares: the Typer apps, the consoles, messages, tables, the engine.

Light on purpose: ``--help`` and ``config validate`` import this and the commands' modules
only, never Dagster, the Google clients or the import's stack (each command imports what it
needs when it runs; tests/test_cli_fast.py checks it).
"""

from __future__ import annotations

import logging
import sys
from typing import TYPE_CHECKING

import typer
from rich.console import Console
from rich.table import Table
from rich.text import Text

if TYPE_CHECKING:
    from robotoff_batch.batch.engine import BatchEngine

# Its help is the package's docstring (robotoff_batch/cli/__init__.py).
app = typer.Typer(no_args_is_help=True, pretty_exceptions_enable=False, rich_markup_mode=None)
config_app = typer.Typer(help="Validate and inspect job-type configurations.", no_args_is_help=True)
app.add_typer(config_app, name="config")
# Piped or captured output gets wide tables instead of truncated job ids.
WIDTH = None if sys.stdout.isatty() else 160
console = Console(soft_wrap=True, width=WIDTH)
err_console = Console(stderr=True, soft_wrap=True, width=WIDTH)


DEBUG = {"on": False}


@app.callback()
def _main(
    verbose: bool = typer.Option(False, "--verbose", "-v", help="Debug logging."),
    debug: bool = typer.Option(
        False, "--debug", help="Show Dagster's event stream and full stack traces on errors."
    ),
) -> None:
    DEBUG["on"] = debug
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


def make_table(title: str, columns: list[str]) -> Table:
    table = Table(title=title)
    for col in columns:
        table.add_column(col)
    return table


def batch_engine() -> BatchEngine:
    from robotoff_batch.resources import build_resources, initialized

    return initialized(build_resources()["batch_engine"]).get_engine()  # type: ignore[no-any-return]
