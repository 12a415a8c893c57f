"""What the sensor's interval costs an idle `dagster dev`: ticks and CPU seconds.

For each of ``--intervals`` (alternated, ``--repeat`` times): a fresh `dagster dev` of the code
location ``tests.dev_location`` (tests/dagster_dev_harness.py, stopped by its process group) with
``ROBOTOFF_BATCH_SENSOR_INTERVAL_S`` set, left to settle 15 s, then for ``--window`` seconds: the
CPU seconds of its whole process group (webserver, daemon, code server), and the sensor's ticks
in the window (the UI's GraphQL), their mean gap. Nothing is launched: the cost of following no
job at all. Writes ``results/sensor_idle.json`` and ``.md``.

    .venv/bin/python benchmarks/sensor_idle.py --intervals 1,10 --window 60 --repeat 2
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

logger = logging.getLogger("sensor_idle")
TICKS = """{ sensorOrError(sensorSelector: {repositoryLocationName: "tests.dev_location",
  repositoryName: "__repository__", sensorName: "batch_job_sensor"}) {
  ... on Sensor { sensorState { ticks(limit: 500) { timestamp status } } } } }"""


def group_cpu_s(pgid: int) -> float:
    """CPU seconds (user + system, with reaped children) of every process of a group."""
    import psutil

    total = 0.0
    for proc in psutil.process_iter():
        try:
            if os.getpgid(proc.pid) == pgid:
                t = proc.cpu_times()
                total += t.user + t.system + t.children_user + t.children_system
        except (psutil.Error, ProcessLookupError):
            pass
    return total


def one_window(interval: int, window_s: float) -> dict:
    from tests.dagster_dev_harness import DagsterDev

    dev = DagsterDev(Path(tempfile.mkdtemp(prefix="sensor-idle-")), "", sensor_interval_s=interval)
    try:
        dev.start()
        time.sleep(15)
        assert dev.proc is not None
        cpu0, t0 = group_cpu_s(dev.proc.pid), time.time()
        time.sleep(window_s)
        cpu1, t1 = group_cpu_s(dev.proc.pid), time.time()
        ticks = sorted(
            t["timestamp"]
            for t in dev.graphql(TICKS)["sensorOrError"]["sensorState"]["ticks"]
            if t0 <= t["timestamp"] <= t1
        )
    finally:
        dev.stop()
    gaps = [b - a for a, b in zip(ticks, ticks[1:], strict=False)]
    out = {
        "interval_s": interval,
        "window_s": t1 - t0,
        "ticks": len(ticks),
        "mean_gap_s": statistics.mean(gaps) if gaps else None,
        "cpu_s": cpu1 - cpu0,
        "core_share": (cpu1 - cpu0) / (t1 - t0),
        "load": os.getloadavg()[0],
    }
    logger.info("interval %d s: %s", interval, out)
    return out


def to_markdown(report: dict) -> str:
    env = report["environment"]
    rows = [
        "| interval | ticks | mean gap | CPU s | share of a core | load |",
        "|---:|---:|---:|---:|---:|---:|",
    ]
    for r in report["results"]:
        gap = f"{r['mean_gap_s']:.1f} s" if r["mean_gap_s"] is not None else "-"
        rows.append(
            f"| {r['interval_s']} s | {r['ticks']} | {gap} | {r['cpu_s']:.1f} | "
            f"{100 * r['core_share']:.1f} % | {r['load']:.2f} |"
        )
    return markdown_report(
        "# The sensor's interval on an idle `dagster dev`: ticks and CPU",
        [
            f"{generated_line(report)}; windows of {env['window_s']} s after 15 s of settling, "
            f"intervals alternated; load average at start {env['load_average']}, at the end "
            f"{env['load_average_end']}. CPU: the whole process group of `dagster dev`.",
        ],
        rows,
    )


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--intervals", default="1,10")
    parser.add_argument("--window", type=float, default=60)
    parser.add_argument("--repeat", type=int, default=2)
    parser.add_argument("--results-dir", type=Path, default=RESULTS_DIR)
    args = parser.parse_args(argv)
    configure_logging()
    intervals = [int(x) for x in args.intervals.split(",")]
    load = os.getloadavg()
    results = [one_window(i, args.window) for _ in range(args.repeat) for i in intervals]
    env = environment(
        window_s=args.window,
        load_average=" ".join(f"{x:.2f}" for x in load),
        load_average_end=" ".join(f"{x:.2f}" for x in os.getloadavg()),
    )
    write_report(build_report(env, results), args.results_dir, "sensor_idle", to_markdown)
    return 0


if __name__ == "__main__":
    sys.exit(main())
