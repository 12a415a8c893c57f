"""The real Dagster processes: `dagster dev` (webserver + daemon) loads the code location; a
launch from the UI's API is followed by the daemon's sensor, which requests the import."""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from robotoff_batch.paths import PROJECT_ROOT

pytestmark = pytest.mark.slow
LOCATION = "robotoff_batch.definitions"


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _graphql(port: int, query: str, variables: dict[str, Any] | None = None) -> dict[str, Any]:
    body = json.dumps({"query": query, "variables": variables or {}}).encode()
    request = urllib.request.Request(
        f"http://127.0.0.1:{port}/graphql", data=body, headers={"content-type": "application/json"}
    )
    with urllib.request.urlopen(request, timeout=30) as response:
        return json.loads(response.read())["data"]  # type: ignore[no-any-return]


@pytest.fixture
def dagster_dev(tmp_path: Path, pg_db: str) -> Iterator[int]:
    port = _free_port()
    home = tmp_path / "dagster_home"
    home.mkdir()
    (home / "dagster.yaml").write_text("telemetry:\n  enabled: false\n")
    env = {
        **os.environ,
        "DAGSTER_HOME": str(home),
        "ROBOTOFF_BATCH_HOME": str(tmp_path / "home"),
        "ROBOTOFF_DATABASE_URL": pg_db,
        "ROBOTOFF_BATCH_SENSOR_INTERVAL_S": "1",
    }
    dagster = Path(sys.executable).parent / "dagster"
    log = (tmp_path / "dagster-dev.log").open("w")
    proc = subprocess.Popen(
        [str(dagster), "dev", "-w", "workspace.yaml", "-p", str(port)],
        cwd=PROJECT_ROOT,
        env=env,
        stdout=log,
        stderr=subprocess.STDOUT,
        start_new_session=True,  # one process group: stopped whole below
    )
    try:
        deadline = time.monotonic() + 120
        while True:
            try:
                data = _graphql(
                    port,
                    "{ workspaceOrError { ... on Workspace { locationEntries { loadStatus } } } }",
                )
                if data["workspaceOrError"]["locationEntries"][0]["loadStatus"] == "LOADED":
                    break
            except OSError:
                pass
            assert proc.poll() is None, (tmp_path / "dagster-dev.log").read_text()[-3000:]
            assert time.monotonic() < deadline, "dagster dev did not load the code location"
            time.sleep(1)
        yield port
    finally:
        os.killpg(proc.pid, signal.SIGTERM)
        try:
            proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait(timeout=10)
        log.close()


LAUNCH = """
mutation($p: ExecutionParams!) { launchRun(executionParams: $p) {
  __typename ... on LaunchRunSuccess { run { runId } } ... on PythonError { message } } }
"""
RUNS = (
    "{ runsOrError(limit: 10) { ... on Runs { results { jobName status tags { key value } } } } }"
)


def test_ui_launch_is_followed_by_the_daemon_and_imported(dagster_dev: int) -> None:
    launched = _graphql(
        dagster_dev,
        LAUNCH,
        {
            "p": {
                "selector": {
                    "repositoryLocationName": LOCATION,
                    "repositoryName": "__repository__",
                    "jobName": "launch_ingredients_spellcheck",
                },
                "runConfigData": {
                    "ops": {"ingredients_spellcheck__products": {"config": {"limit": 40}}}
                },
            }
        },
    )
    assert launched["launchRun"]["__typename"] == "LaunchRunSuccess", launched
    deadline = time.monotonic() + 240
    while time.monotonic() < deadline:
        runs = _graphql(dagster_dev, RUNS)["runsOrError"]["results"]
        imports = [r for r in runs if r["jobName"] == "import_ingredients_spellcheck"]
        if imports and imports[0]["status"] in ("SUCCESS", "FAILURE"):
            tags = {t["key"]: t["value"] for t in imports[0]["tags"]}
            assert imports[0]["status"] == "SUCCESS"
            assert tags["dagster/sensor_name"] == "batch_job_sensor"
            assert tags["dagster/partition"].startswith("ingredients-spellcheck-")
            launches = [r for r in runs if r["jobName"] == "launch_ingredients_spellcheck"]
            assert [r["status"] for r in launches] == ["SUCCESS"]
            return
        time.sleep(2)
    raise AssertionError(f"no import run requested by the daemon's sensor: {runs}")
