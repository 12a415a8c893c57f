"""robotoff-batch demo: the main job on embedded defaults, launched, followed and summarised.

The job type it runs is the registered one that declares ``demo_params``; what it prints after
the job's timeline is that job type's ``demo_lines``.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import TYPE_CHECKING

import typer
from rich.text import Text

from robotoff_batch.cli.common import DEBUG, console, fail, make_table, say

if TYPE_CHECKING:
    from robotoff_batch.job_types import RegisteredJobType
    from robotoff_batch.job_types.base import JobType


class DemoJobTypeError(ValueError):
    """No registered job type declares the demo, or several do."""


def demo_job_type(registry: Mapping[str, RegisteredJobType]) -> JobType:
    """The one registered job type that declares ``demo_params``."""
    declared = [r.job_type for r in registry.values() if r.job_type.demo_params is not None]
    if len(declared) != 1:
        names = ", ".join(jt.name for jt in declared) or "none"
        raise DemoJobTypeError(
            "the demo runs the one registered job type that sets demo_params; "
            f"{len(declared)} do ({names}) among {', '.join(registry) or 'no job type'}"
        )
    return declared[0]


def demo(
    limit: int | None = typer.Option(
        None, help="Products to take from the shipped sample (default: the job type's own)."
    ),
) -> None:
    """The main job on embedded defaults: launch, run locally, follow, import, summarise."""
    from robotoff_batch.cli import operations
    from robotoff_batch.cli.jobs import follow_and_report
    from robotoff_batch.job_types import load_registry
    from robotoff_batch.job_types.base import DemoOutcome
    from robotoff_batch.names import key_prefix

    try:
        job_type = demo_job_type(load_registry())
    except DemoJobTypeError as exc:
        raise fail(str(exc)) from None
    params = dict(job_type.demo_params or {})
    if limit is not None:
        params["limit"] = limit
    console.rule(f"robotoff-batch demo: {job_type.name} on the shipped OFF sample")
    ws = operations.Workspace.from_env()
    try:
        launched = operations.launch(ws, job_type=job_type.name, params=params, debug=DEBUG["on"])
    except operations.OperationError as exc:
        raise fail(f"launch failed: {exc}") from None
    say(
        f"1. extracted {launched.rows} products, staged them, submitted {launched.job_id} "
        "to the local runner"
    )
    say("2. following the job (the sensor's own function):")
    followed = follow_and_report(ws, launched.job_id, timeout_s=1800)
    timeline = make_table("state timeline", ["time (UTC)", "event"])
    for e in followed.status.status_events:
        # "... for job projects/p/locations/l/jobs/<id>." adds nothing here
        timeline.add_row(
            e.time.strftime("%H:%M:%S.%f")[:-3], Text(e.description.split(" for job ")[0])
        )
    console.print(timeline)
    outcome = DemoOutcome(
        rows=launched.rows,
        state=followed.status.state.value,
        examples=operations.examples(ws, job_id=followed.status.job_id, limit=5),
        record=operations.import_record(ws, job_id=followed.status.job_id),
    )
    for line in job_type.demo_lines(outcome):
        if isinstance(line, str):
            say(line)
        else:
            console.print(line)
    say(
        "see it in the Dagster UI: make ui (or DAGSTER_HOME="
        f"{operations.dagster_home()} .venv/bin/dagster dev -w workspace.yaml), then open "
        f"http://127.0.0.1:3000/assets/{key_prefix(job_type.name)}/batch_job"
        f"?partition={launched.job_id}"
    )
