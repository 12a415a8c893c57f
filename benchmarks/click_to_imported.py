"""Click → imported in a real `dagster dev`: where the seconds go.

For each of ``--clicks`` runs of each ``--variants`` (alternated: before, after, before, ...;
median per variant): a fresh `dagster dev` (port ``--port``, 3102 by default; its own Dagster
home, the code location ``tests.dev_location``, the default sensor interval unless
``--sensor-interval``) on a fresh database of an embedded PostgreSQL; then the launch is clicked,
and the clock runs until the job's finish run (the import) is SUCCESS. The variants:

- ``after``: the project as it is: the embedded instance's dagster.yaml as robotoff-batch writes
  it (``DEFAULT_DAGSTER_YAML``: the DefaultRunCoordinator, a run launched at once) and the
  sensor's default interval for the local runner;
- ``before``: the settings of main before issue 23's change: a run queue (the
  QueuedRunCoordinator, dequeued every second by the daemon) and a 10 s sensor interval.

``--driver browser`` (default): a real click on the Launchpad's "Launch Run" button, in headless
Chromium driven by playwright (``pip install playwright`` in the venv, or ``pip install -e
.[bench]``; Debian's ``chromium`` package, ``--chromium``): the job's page opened through the
Launchpad's setup URL with the run config (``limit``), the button clicked, the run id read from
the page it navigates to. ``--driver graphql``: the mutation that button sends (``launchRun``),
without a browser. ``--screenshot PATH``: the UI's run list once the last click is imported.

The phases come from the runs' own times (Dagster's run records) and the local runner's job:

- ``queued``: the click until the launch run starts (run coordinator, run launcher, the run
  worker's start);
- ``launch``: the launch run (the selection, staging, submission to the local runner);
- ``job``: the launch run's end until the batch job ends on the local runner (its SUCCEEDED
  status event);
- ``sensor``: the job's end until the sensor requests the finish run (the wait for its tick);
- ``finish_queued``: the finish run's request until it starts;
- ``finish``: the finish run (the import);
- ``seen``: its end until this script sees it (polling every 0.5 s).

`dagster dev` is stopped by its process group (tests/dagster_dev_harness.py: SIGINT and SIGTERM
reset to their defaults in the child, since a background job inherits them ignored).
Writes ``results/click_to_imported.json`` and ``.md``.

    .venv/bin/python benchmarks/click_to_imported.py --clicks 3 --screenshot /tmp/ui.png
"""

from __future__ import annotations

import argparse
import logging
import os
import re
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.parse
from pathlib import Path
from typing import Any

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
PHASES = ("queued", "launch", "job", "sensor", "finish_queued", "finish", "seen")
LOCATION = "tests.dev_location"
JOB = "launch_ingredients_spellcheck"
OP = "ingredients_spellcheck__launch"
#: main's embedded dagster.yaml before issue 23 (the ``before`` variant): a run queue.
BEFORE_DAGSTER_YAML = """\
telemetry:
  enabled: false
run_queue:
  dequeue_interval_seconds: 1
run_monitoring:
  enabled: true
  start_timeout_seconds: 180
  poll_interval_seconds: 30
"""
BEFORE_INTERVAL_S = 10
VARIANTS = ("before", "after")


class BrowserClick:
    """Headless Chromium on the Launchpad: a real click on "Launch Run"."""

    def __init__(self, chromium: str) -> None:
        try:
            from playwright.sync_api import sync_playwright
        except ImportError:
            raise SystemExit(
                "--driver browser needs playwright in this venv: .venv/bin/pip install playwright "
                "(and Debian's chromium: apt-get install chromium), or use --driver graphql"
            ) from None
        if not Path(chromium).exists():
            raise SystemExit(f"no Chromium at {chromium} (apt-get install chromium, --chromium)")
        self._playwright = sync_playwright().start()
        self._browser = self._playwright.chromium.launch(executable_path=chromium, headless=True)
        # one context: the UI's local storage (the community dialog once skipped) is kept
        self._context = self._browser.new_context(viewport={"width": 1400, "height": 900})
        self.page: Any = None

    def launch(self, port: int, limit: int) -> tuple[float, str]:
        """Open the Launchpad with the run config, click; (the click's time, the run id)."""
        import yaml

        self.page = self._context.new_page()
        config = yaml.safe_dump({"ops": {OP: {"config": {"limit": limit}}}})
        url = (
            f"http://127.0.0.1:{port}/locations/__repository__@{LOCATION}/jobs/{JOB}"
            f"/playground/setup?{urllib.parse.urlencode({'config': config})}"
        )
        self.page.goto(url, timeout=120_000)
        button = self.page.get_by_role("button", name="Launch Run")
        skip = self.page.get_by_role("button", name="Skip")  # "Join the Dagster community"
        button.wait_for(state="visible", timeout=120_000)
        deadline = time.monotonic() + 60
        ready_since = None
        while ready_since is None or time.monotonic() - ready_since < 1:
            assert time.monotonic() < deadline, "the Launchpad's button stayed disabled"
            if skip.count() and skip.first.is_visible():
                skip.first.click()
                ready_since = None
            elif button.is_enabled():  # once the config is validated, and no dialog for 1 s
                ready_since = ready_since or time.monotonic()
            time.sleep(0.1)
        clicked = time.time()
        button.click()
        self.page.wait_for_url(re.compile(r".*/runs/[0-9a-f-]{36}.*"), timeout=120_000)
        run_id = re.search(r"/runs/([0-9a-f-]{36})", self.page.url).group(1)  # type: ignore[union-attr]
        return clicked, run_id

    def screenshot(self, port: int, path: Path) -> None:
        self.page.goto(f"http://127.0.0.1:{port}/runs", timeout=60_000)
        self.page.get_by_text("finish_ingredients_spellcheck").first.wait_for(timeout=60_000)
        time.sleep(1)  # the status tags' icons
        self.page.screenshot(path=str(path), full_page=False)
        logger.info("screenshot: %s", path)

    def close_page(self) -> None:
        if self.page is not None:
            self.page.close()
            self.page = None

    def close(self) -> None:
        self.close_page()
        self._context.close()
        self._browser.close()
        self._playwright.stop()


def warm_word_indexes() -> None:
    """The CPU engine's word-list indexes built before the clicks, as the image does at build
    time (a fresh checkout's first job builds its languages' otherwise: ~4 s, once)."""
    container = PROJECT_ROOT / "containers" / "ingredients-spellcheck"
    began = time.monotonic()
    subprocess.run(
        [sys.executable, "-m", "spellcheck_job.build_indexes"], cwd=container, check=True
    )
    logger.info("word indexes ready in %.1f s", time.monotonic() - began)


def job_end(home: Path, job_id: str) -> float:
    """When the batch job ended on the local runner (its terminal status event)."""
    from robotoff_batch.batch.local import LocalBatchEngine

    status = LocalBatchEngine(state_dir=home / "local-batch", commands_by_image={}).get_job(
        job_id=job_id
    )
    ends = [e.time for e in status.status_events if e.new_state and e.new_state.is_terminal]
    end = ends[-1] if ends else status.update_time
    assert end is not None, f"job {job_id} has no end time"
    return end.timestamp()


def one_click(
    database_url: str,
    work: Path,
    *,
    port: int,
    variant: str,
    interval: int | None,
    limit: int,
    browser: BrowserClick | None,
    screenshot: Path | None,
) -> dict:
    from tests import dagster_dev_harness as harness

    harness.free_port = lambda: port  # type: ignore[assignment]  # the port asked for
    if variant == "before":
        interval = BEFORE_INTERVAL_S if interval is None else interval
    dev = harness.DagsterDev(work, database_url, sensor_interval_s=interval)
    if variant == "before":
        (dev.home / "dagster.yaml").write_text(BEFORE_DAGSTER_YAML)
    try:
        dev.start()
        if browser is not None:
            clicked, run_id = browser.launch(dev.port, limit)
        else:
            clicked = time.time()
            run_id = dev.launch(limit=limit)
        job_id = dev.launched_job_id(run_id)
        finish = dev.wait_for_run(
            harness.is_finish_of(job_id, "SUCCESS", "FAILURE"), what="finish run"
        )
        seen = time.time()
        assert finish["status"] == "SUCCESS", finish
        launch = next(r for r in dev.runs() if r["runId"] == run_id)
        ended = job_end(work / "home", job_id)
        if browser is not None and screenshot is not None:
            browser.screenshot(dev.port, screenshot)
    finally:
        if browser is not None:
            browser.close_page()
        dev.stop()
    phases = {
        "queued": launch["startTime"] - clicked,
        "launch": launch["endTime"] - launch["startTime"],
        "job": ended - launch["endTime"],
        "sensor": finish["creationTime"] - ended,
        "finish_queued": finish["startTime"] - finish["creationTime"],
        "finish": finish["endTime"] - finish["startTime"],
        "seen": seen - finish["endTime"],
    }
    out = {
        "variant": variant,
        "seconds": seen - clicked,
        "phases": phases,
        "load": os.getloadavg()[0],
    }
    logger.info(
        "%s click: %.1f s %s", variant, out["seconds"], {k: round(v, 2) for k, v in phases.items()}
    )
    return out


def medians(results: list[dict], variant: str) -> dict:
    mine = [r for r in results if r["variant"] == variant]
    return {
        "clicks": len(mine),
        "median_s": statistics.median(r["seconds"] for r in mine),
        "median_phases": {p: statistics.median(r["phases"][p] for r in mine) for p in PHASES},
    }


def to_markdown(report: dict) -> str:
    env = report["environment"]
    rows = [
        "| click | variant | seconds | " + " | ".join(PHASES) + " | load |",
        "|---:|---|---:|" + "---:|" * len(PHASES) + "---:|",
    ]
    for i, r in enumerate(report["results"], 1):
        phases = " | ".join(f"{r['phases'][p]:.2f}" for p in PHASES)
        rows.append(f"| {i} | {r['variant']} | {r['seconds']:.2f} | {phases} | {r['load']:.2f} |")
    for variant, m in env["medians"].items():
        cells = " | ".join(f"{m['median_phases'][p]:.2f}" for p in PHASES)
        rows.append(f"| median | {variant} | **{m['median_s']:.2f}** | {cells} | |")
    ratio = ""
    if {"before", "after"} <= set(env["medians"]):
        after, before = env["medians"]["after"]["median_s"], env["medians"]["before"]["median_s"]
        ratio = f" After / before: {after / before:.2f} (medians, clicks alternated)."
    return markdown_report(
        "# Click → imported (real `dagster dev`, a click on the Launchpad, default settings)",
        [
            f"{generated_line(report)}; {env['limit']} products of the shipped sample, the CPU "
            f"engine on the local runner, driver {env['driver']}, sensor interval "
            f"{env['sensor_interval']}, load average at start {env['load_average']}, at the end "
            f"{env['load_average_end']}. Phases from Dagster's run records and the local "
            f"runner's job (the script's docstring).{ratio}",
        ],
        rows,
    )


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--clicks", type=int, default=3, help="per variant")
    parser.add_argument("--variants", default="before,after", help="alternated, comma-separated")
    parser.add_argument("--driver", choices=("browser", "graphql"), default="browser")
    parser.add_argument("--chromium", default="/usr/bin/chromium")
    parser.add_argument("--screenshot", type=Path, default=None, help="after the last click")
    parser.add_argument("--port", type=int, default=3102)
    parser.add_argument("--limit", type=int, default=40)
    parser.add_argument("--sensor-interval", type=int, default=None, help="default: the code's")
    parser.add_argument("--results-dir", type=Path, default=RESULTS_DIR)
    parser.add_argument("--name", default="click_to_imported")
    args = parser.parse_args(argv)
    variants = [v.strip() for v in args.variants.split(",") if v.strip()]
    unknown = set(variants) - set(VARIANTS)
    if unknown or not variants:
        parser.error(f"--variants: {sorted(unknown)} not among {', '.join(VARIANTS)}")
    configure_logging()
    from benchmarks.follow_benchmark import new_database
    from robotoff_batch.predictions.embedded import ensure_embedded_postgres, stop_embedded_postgres
    from robotoff_batch.sensors import sensor_interval_s

    warm_word_indexes()
    browser = BrowserClick(args.chromium) if args.driver == "browser" else None
    work = Path(tempfile.mkdtemp(prefix="click-to-imported-"))
    url = ensure_embedded_postgres(work / "pg")
    load = os.getloadavg()
    results = []
    order = [v for _ in range(args.clicks) for v in variants]
    try:
        for i, variant in enumerate(order):
            db = new_database(url, f"click_{i}")
            results.append(
                one_click(
                    db,
                    work / f"click-{i}",
                    port=args.port,
                    variant=variant,
                    interval=args.sensor_interval,
                    limit=args.limit,
                    browser=browser,
                    screenshot=args.screenshot if i == len(order) - 1 else None,
                )
            )
    finally:
        stop_embedded_postgres(work / "pg")
        if browser is not None:
            browser.close()
    env = environment(
        limit=args.limit,
        driver=args.driver,
        sensor_interval=(
            f"{args.sensor_interval} s"
            if args.sensor_interval is not None
            else f"default (after: {sensor_interval_s('local')} s; before: {BEFORE_INTERVAL_S} s)"
        ),
        load_average=" ".join(f"{x:.2f}" for x in load),
        load_average_end=" ".join(f"{x:.2f}" for x in os.getloadavg()),
        medians={v: medians(results, v) for v in variants},
    )
    write_report(build_report(env, results), args.results_dir, args.name, to_markdown)
    return 0


if __name__ == "__main__":
    sys.exit(main())
