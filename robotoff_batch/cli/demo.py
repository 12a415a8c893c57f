"""``robotoff-batch demo``: the main job on embedded defaults, launched, followed and summarised."""

from __future__ import annotations

from typing import Any

import typer
from rich.text import Text

from robotoff_batch import operations
from robotoff_batch.cli.common import DEBUG, console, fail, make_table, say
from robotoff_batch.cli.jobs import follow_and_report
from robotoff_batch.follow import key_prefix


def demo(
    limit: int = typer.Option(300, help="Products to correct from the shipped sample."),
) -> None:
    """The main job on embedded defaults: launch, run locally, follow, import, summarise."""
    job_type = "ingredients-spellcheck"
    console.rule("robotoff-batch demo: ingredients-spellcheck on the shipped OFF sample")
    try:
        launched = operations.launch(job_type=job_type, params={"limit": limit}, debug=DEBUG["on"])
    except operations.OperationError as exc:
        raise fail(f"launch failed: {exc}") from None
    say(
        f"1. extracted {launched.rows} products, staged them, submitted {launched.job_id} "
        "to the local runner"
    )
    say("2. following the job (the sensor's own function):")
    followed = follow_and_report(launched.job_id, timeout_s=1800)
    timeline = make_table("state timeline", ["time (UTC)", "event"])
    for e in followed.status.status_events:
        # "... for job projects/p/locations/l/jobs/<id>." adds nothing here
        timeline.add_row(
            e.time.strftime("%H:%M:%S.%f")[:-3], Text(e.description.split(" for job ")[0])
        )
    console.print(timeline)
    examples = operations.examples(job_id=launched.job_id, limit=5)
    table = make_table("example corrections", ["barcode", "lang", "original → correction"])
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
