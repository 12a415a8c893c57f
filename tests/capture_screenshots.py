"""Screenshots of the UI for the README (docs/screenshots/), from a real `dagster dev`.

Not a test: ``.venv/bin/python -m tests.capture_screenshots [PORT]`` (default 3105) starts
`dagster dev` on the embedded defaults in a scratch home, launches three jobs the way the
README's "Rehearse a failure" section does (the Launchpad's ``resources.batch_engine.config.
local_commands`` override, sent here through the UI's GraphQL API), cancels one with the
partition's cancel job, and photographs with headless Chromium (playwright, from its own
virtualenv: ``PLAYWRIGHT_PYTHON``, default /tmp/visui-pw/bin/python):

- a RUNNING job's partition with its progress (a stand-in container writing its manifest);
- a FAILED job's partition (exit code 3 and the end of its log);
- a CANCELLED job's partition;
- the cancel job's Launchpad with the partition picked.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from robotoff_batch.job_types import load_registry
from robotoff_batch.paths import PROJECT_ROOT
from tests import dagster_dev_harness
from tests.dagster_dev_harness import LAUNCH, LOCATION, DagsterDev, is_finish_of

OUT = PROJECT_ROOT / "docs" / "screenshots"
IMAGE = load_registry()["ingredients-spellcheck"].config.resources.container_image_uri
PY = sys.executable

FAILING = [
    PY,
    "-c",
    "import sys, time\n"
    "for i in range(40): print(f'spellcheck: batch {i} of 40 corrected', flush=True)\n"
    "time.sleep(3)\n"
    "print('RuntimeError: CUDA error: no CUDA-capable device is detected', file=sys.stderr)\n"
    "sys.exit(3)\n",
]
SLEEPING = [PY, "-c", "import time; print('working', flush=True); time.sleep(3000)"]
# A stand-in container: 40 products, 1 every 4 s, its manifest rewritten after each chunk.
PROGRESSING = [
    PY,
    "-c",
    "import json, os, pathlib, time, urllib.parse\n"
    "out = pathlib.Path(urllib.parse.urlparse(os.environ['OUTPUT_FILE_PATH']).path)\n"
    "task = out / 'task-00000'\n"
    "task.mkdir(parents=True, exist_ok=True)\n"
    "for done in range(0, 41, 2):\n"
    "    chunks = [{'uri': str(task / f'chunk-{k:05d}.parquet'), 'first_row': 2 * k, 'rows': 2,"
    " 'skipped': 0} for k in range(done // 2)]\n"
    "    (task / 'manifest.json').write_text(json.dumps({'format': 1, 'task_index': 0,"
    " 'task_count': 1, 'shard': [0, 40], 'chunk_rows': 2, 'complete': False,"
    " 'chunks': chunks}))\n"
    "    print(f'{done} of 40 products', flush=True)\n"
    "    time.sleep(8)\n"
    "time.sleep(3000)\n",
]


def launch(dev: DagsterDev, command: list[str], limit: int = 40) -> str:
    data = dev.graphql(
        LAUNCH,
        {
            "p": {
                "selector": {
                    "repositoryLocationName": LOCATION,
                    "repositoryName": "__repository__",
                    "jobName": "launch_ingredients_spellcheck",
                },
                "runConfigData": {
                    "ops": {"ingredients_spellcheck__launch": {"config": {"limit": limit}}},
                    "resources": {"batch_engine": {"config": {"local_commands": {IMAGE: command}}}},
                },
            }
        },
    )
    assert data["launchRun"]["__typename"] == "LaunchRunSuccess", data
    return dev.launched_job_id(str(data["launchRun"]["run"]["runId"]), timeout_s=300)


def cancel(dev: DagsterDev, job_id: str) -> None:
    """The partition's cancel job, as the Launchpad launches it (partition tag)."""
    data = dev.graphql(
        LAUNCH,
        {
            "p": {
                "selector": {
                    "repositoryLocationName": LOCATION,
                    "repositoryName": "__repository__",
                    "jobName": "cancel_ingredients_spellcheck",
                },
                "executionMetadata": {"tags": [{"key": "dagster/partition", "value": job_id}]},
                "runConfigData": {},
            }
        },
    )
    assert data["launchRun"]["__typename"] == "LaunchRunSuccess", data


def shoot(port: int, shots: list[tuple[str, str, str | None]]) -> None:
    """``(url path, file name, text to wait for)`` each, in headless Chromium."""
    script = f"""
import sys
from playwright.sync_api import sync_playwright
shots = {shots!r}
with sync_playwright() as p:
    browser = p.chromium.launch(executable_path="/usr/bin/chromium", args=["--no-sandbox"])
    page = browser.new_page(viewport={{"width": 1500, "height": 2600}})
    for path, name, wait in shots:
        page.goto("http://127.0.0.1:{port}" + path, wait_until="networkidle", timeout=90000)
        skip = page.get_by_role("button", name="Skip")  # Dagster's community dialog
        try:
            skip.wait_for(timeout=5000)
            skip.click()
        except Exception:
            pass
        if wait:
            try:
                page.get_by_text(wait).first.wait_for(timeout=30000)
            except Exception as exc:
                print("not seen:", wait, "on", path, type(exc).__name__, flush=True)
        page.wait_for_timeout(2500)
        page.screenshot(path="{OUT}/" + name, full_page=True)
        print("shot", name, flush=True)
    browser.close()
"""
    python = os.environ.get("PLAYWRIGHT_PYTHON", "/tmp/visui-pw/bin/python")
    subprocess.run([python, "-c", script], check=True, timeout=600)


def main(port: int) -> None:
    OUT.mkdir(parents=True, exist_ok=True)
    scratch = Path(tempfile.mkdtemp(prefix="screens-", dir=PROJECT_ROOT / ".robotoff-batch"))
    dagster_dev_harness.free_port = lambda: port  # the port asked for, not a free one
    dev = DagsterDev(scratch, "", sensor_interval_s=5)
    dev.env.pop("ROBOTOFF_DATABASE_URL", None)  # the embedded PostgreSQL of the scratch home
    dev.start()
    print(f"dagster dev on http://127.0.0.1:{port} (pid {dev.proc.pid if dev.proc else '?'})")
    try:
        failed = launch(dev, FAILING)
        cancelled = launch(dev, SLEEPING)
        running = launch(dev, PROGRESSING)
        print("jobs:", json.dumps({"failed": failed, "cancelled": cancelled, "running": running}))
        time.sleep(15)  # the sensor registers the partitions
        cancel(dev, cancelled)
        for job_id in (failed, cancelled):
            dev.wait_for_run(
                is_finish_of(job_id, "FAILURE", "SUCCESS"), timeout_s=300, what="finish run"
            )
        time.sleep(65)  # a second progress reading of the running job (once a minute)
        # The Events tab of the partition: its newest event (an observation) with its metadata.
        # (The Partitions tab shows only a materialization's metadata: AssetPartitionDetail.tsx)
        asset = "/assets/ingredients_spellcheck/batch_job?view=events&partition="
        shoot(
            port,
            [
                (asset + running, "running-job-progress.png", "products_done"),
                (asset + failed, "failed-partition.png", "log_tail"),
                (asset + cancelled, "cancelled-partition.png", "outcome"),
                (
                    f"/locations/{LOCATION}/jobs/cancel_ingredients_spellcheck/playground",
                    "cancel-launchpad.png",
                    None,
                ),
            ],
        )
    finally:
        dev.stop()


if __name__ == "__main__":
    main(int(sys.argv[1]) if len(sys.argv) > 1 else 3105)
