"""Click → imported in a real `dagster dev`: where the seconds go.

For each of ``--clicks`` runs (median): a fresh `dagster dev` (port ``--port``, 3102 by default;
its own Dagster home, the code location ``tests.dev_location``, the default sensor interval
unless ``--sensor-interval``) on a fresh database of an embedded PostgreSQL; then the launch
is "clicked" through the UI's own GraphQL API (``launchRun``, what the Launchpad's button sends:
headless Chromium is not installed here), and the clock runs until the job's finish run (the
import) is SUCCESS. The phases come from the runs' own times (Dagster's run records):

- ``queued``: the click until the launch run starts (run queue, run launcher, process start);
- ``launch``: the launch run (the selection, staging, submission to the local runner);
- ``job_and_sensor``: the launch run's end until the sensor requests the finish run (the
  container on the local runner, then the wait for the sensor's next tick);
- ``finish_queued``: the finish run's request until it starts;
- ``finish``: the finish run (the import);
- ``seen``: its end until this script sees it (polling every 0.5 s).

`dagster dev` is stopped by its process group (tests/dagster_dev_harness.py: SIGINT and SIGTERM
reset to their defaults in the child, since a background job inherits them ignored).
Writes ``results/click_to_imported.json`` and ``.md``.

    .venv/bin/python benchmarks/click_to_imported.py --clicks 3
"""

from __future__ import annotations

import argparse
import logging
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

PROJECT_ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(PROJECT_ROOT))

from benchmarks.common import (  # noqa: E402
    RESULTS_DIR,
    build_report,
    configure_logging,
    environment,
    generated_line,
    markdown_report,
    write_report,
)

logger = logging.getLogger("click_to_imported")
PHASES = ("queued", "launch", "job_and_sensor", "finish_queued", "finish", "seen")


def one_click(database_url: str, work: Path, port: int, interval: int | None, limit: int) -> dict:
    from tests import dagster_dev_harness as harness

    harness.free_port = lambda: port  # type: ignore[assignment]  # the port asked for
    dev = harness.DagsterDev(work, database_url, sensor_interval_s=interval)
    try:
        dev.start()
        clicked = time.time()
        run_id = dev.launch(limit=limit)
        job_id = dev.launched_job_id(run_id)
        finish = dev.wait_for_run(
            harness.is_finish_of(job_id, "SUCCESS", "FAILURE"), what="finish run"
        )
        seen = time.time()
        assert finish["status"] == "SUCCESS", finish
        launch = next(r for r in dev.runs() if r["runId"] == run_id)
    finally:
        dev.stop()
    phases = {
        "queued": launch["startTime"] - clicked,
        "launch": launch["endTime"] - launch["startTime"],
        "job_and_sensor": finish["creationTime"] - launch["endTime"],
        "finish_queued": finish["startTime"] - finish["creationTime"],
        "finish": finish["endTime"] - finish["startTime"],
        "seen": seen - finish["endTime"],
    }
    out = {"seconds": seen - clicked, "phases": phases, "load": os.getloadavg()[0]}
    logger.info("click: %.1f s %s", out["seconds"], {k: round(v, 2) for k, v in phases.items()})
    return out


def to_markdown(report: dict) -> str:
    env = report["environment"]
    rows = [
        "| click | seconds | " + " | ".join(PHASES) + " | load |",
        "|---:|---:|" + "---:|" * len(PHASES) + "---:|",
    ]
    for i, r in enumerate(report["results"], 1):
        phases = " | ".join(f"{r['phases'][p]:.2f}" for p in PHASES)
        rows.append(f"| {i} | {r['seconds']:.2f} | {phases} | {r['load']:.2f} |")
    medians = " | ".join(f"{env['median_phases'][p]:.2f}" for p in PHASES)
    rows.append(f"| median | **{env['median_s']:.2f}** | {medians} | |")
    return markdown_report(
        "# Click → imported (real `dagster dev`, the UI's launchRun, the default sensor interval)",
        [
            f"{generated_line(report)}; {env['limit']} products of the shipped sample, the CPU "
            f"engine on the local runner, sensor interval {env['sensor_interval']}, load average "
            f"at start {env['load_average']}, at the end {env['load_average_end']}. Phases from "
            "Dagster's run records (the script's docstring).",
        ],
        rows,
    )


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--clicks", type=int, default=3)
    parser.add_argument("--port", type=int, default=3102)
    parser.add_argument("--limit", type=int, default=40)
    parser.add_argument("--sensor-interval", type=int, default=None, help="default: the code's")
    parser.add_argument("--results-dir", type=Path, default=RESULTS_DIR)
    parser.add_argument("--name", default="click_to_imported")
    args = parser.parse_args(argv)
    configure_logging()
    from benchmarks.follow_benchmark import new_database
    from robotoff_batch.predictions.embedded import ensure_embedded_postgres, stop_embedded_postgres
    from robotoff_batch.sensors import sensor_interval_s

    work = Path(tempfile.mkdtemp(prefix="click-to-imported-"))
    url = ensure_embedded_postgres(work / "pg")
    load = os.getloadavg()
    results = []
    try:
        for i in range(args.clicks):
            db = new_database(url, f"click_{i}")
            results.append(
                one_click(db, work / f"click-{i}", args.port, args.sensor_interval, args.limit)
            )
    finally:
        stop_embedded_postgres(work / "pg")
    env = environment(
        limit=args.limit,
        sensor_interval=(
            f"{args.sensor_interval} s"
            if args.sensor_interval is not None
            else f"default ({sensor_interval_s()} s)"
        ),
        load_average=" ".join(f"{x:.2f}" for x in load),
        load_average_end=" ".join(f"{x:.2f}" for x in os.getloadavg()),
        median_s=statistics.median(r["seconds"] for r in results),
        median_phases={p: statistics.median(r["phases"][p] for r in results) for p in PHASES},
    )
    write_report(build_report(env, results), args.results_dir, args.name, to_markdown)
    return 0


if __name__ == "__main__":
    sys.exit(main())
