"""Real `dagster dev` (webserver + daemon) on a temporary DAGSTER_HOME, driven through the UI's
GraphQL API: started, stopped, killed with SIGKILL and restarted on the same instance.

Used by tests/test_dagster_dev.py and benchmarks/follow_benchmark.py. It serves the real code
location through ``tests/dev_location.py`` (the local runner may play the image with a test
command).
"""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path
from typing import Any

from robotoff_batch.cli.operations import DEFAULT_DAGSTER_YAML
from robotoff_batch.paths import PROJECT_ROOT

LOCATION = "tests.dev_location"
LAUNCH = """
mutation($p: ExecutionParams!) { launchRun(executionParams: $p) {
  __typename ... on LaunchRunSuccess { run { runId } } ... on PythonError { message } } }
"""
RUNS = """
{ runsOrError(limit: 50) { ... on Runs { results {
    runId jobName status creationTime startTime endTime tags { key value } } } } }
"""
CHECKS = """
query($key: AssetKeyInput!, $name: String!) {
  assetCheckExecutions(assetKey: $key, checkName: $name, limit: 5) {
    runId partition status
    evaluation { partition success severity description metadataEntries {
      label ... on MarkdownMetadataEntry { mdStr } ... on JsonMetadataEntry { jsonString }
      ... on TextMetadataEntry { text } } } } }
"""


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _default_signals() -> None:
    """In the child: SIGINT and SIGTERM as by default (a non-interactive shell's background
    job inherits them ignored, and `dagster dev` would then not stop)."""
    signal.signal(signal.SIGINT, signal.SIG_DFL)
    signal.signal(signal.SIGTERM, signal.SIG_DFL)


class DagsterDev:
    """One `dagster dev` at a time on one Dagster instance (``home``)."""

    def __init__(
        self,
        tmp_path: Path,
        database_url: str,
        command: list[str] | None = None,
        *,
        sensor_interval_s: int | None = 1,
    ) -> None:
        self.tmp_path = tmp_path
        self.home = tmp_path / "dagster_home"
        self.home.mkdir(parents=True, exist_ok=True)
        (self.home / "dagster.yaml").write_text(DEFAULT_DAGSTER_YAML)
        self.env = {
            **os.environ,
            "DAGSTER_HOME": str(self.home),
            "ROBOTOFF_BATCH_HOME": str(tmp_path / "home"),
            "ROBOTOFF_DATABASE_URL": database_url,
            "ROBOTOFF_BATCH_IMPORT_RETRY_DELAY_S": "1",
        }
        self.env.pop("ROBOTOFF_BATCH_ENV", None)
        self.env.pop("ROBOTOFF_BATCH_SENSOR_INTERVAL_S", None)
        if sensor_interval_s is not None:  # None: the code location's default (local: 1 s)
            self.env["ROBOTOFF_BATCH_SENSOR_INTERVAL_S"] = str(sensor_interval_s)
        if command:
            self.env["ROBOTOFF_BATCH_TEST_COMMAND"] = json.dumps(command)
        self.proc: subprocess.Popen[bytes] | None = None
        self.port = 0
        self.starts = 0

    @property
    def log_path(self) -> Path:
        return self.tmp_path / f"dagster-dev-{self.starts}.log"

    def start(self, timeout_s: float = 180) -> None:
        assert self.proc is None, "already running"
        self.starts += 1
        self.port = free_port()
        dagster = Path(sys.executable).parent / "dagster"
        log = self.log_path.open("w")
        self.proc = subprocess.Popen(
            [str(dagster), "dev", "-m", LOCATION, "-p", str(self.port)],
            cwd=PROJECT_ROOT,
            env=self.env,
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,  # one process group: stopped or killed whole
            preexec_fn=_default_signals,
        )
        log.close()
        deadline = time.monotonic() + timeout_s
        query = "{ workspaceOrError { ... on Workspace { locationEntries { loadStatus } } } }"
        while True:
            try:
                data = self.graphql(query)
                if data["workspaceOrError"]["locationEntries"][0]["loadStatus"] == "LOADED":
                    return
            except OSError:
                pass
            assert self.proc.poll() is None, self.log_path.read_text()[-3000:]
            assert time.monotonic() < deadline, "dagster dev did not load the code location"
            time.sleep(0.5)

    def kill(self) -> None:
        """SIGKILL the webserver, the daemon, the code server and their runs (a crash)."""
        assert self.proc is not None
        _kill_group(self.proc)
        self.proc = None

    def stop(self) -> None:
        """SIGTERM, then whatever is left of the process group (children of `dagster dev`
        can outlive it, or ignore SIGTERM when started from a non-interactive shell) is
        killed: nothing this harness started survives it."""
        if self.proc is None:
            return
        try:
            os.killpg(self.proc.pid, signal.SIGTERM)
            self.proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            pass
        except ProcessLookupError:
            pass
        _kill_group(self.proc)
        self.proc = None

    # -- the UI's API -------------------------------------------------------------------------

    def graphql(self, query: str, variables: dict[str, Any] | None = None) -> dict[str, Any]:
        body = json.dumps({"query": query, "variables": variables or {}}).encode()
        request = urllib.request.Request(
            f"http://127.0.0.1:{self.port}/graphql",
            data=body,
            headers={"content-type": "application/json"},
        )
        with urllib.request.urlopen(request, timeout=30) as response:
            payload = json.loads(response.read())
        assert "errors" not in payload, payload["errors"]
        return payload["data"]  # type: ignore[no-any-return]

    def launch(self, limit: int = 40) -> str:
        """Launch the spellcheck job as the UI's Launchpad does; the run id."""
        data = self.graphql(
            LAUNCH,
            {
                "p": {
                    "selector": {
                        "repositoryLocationName": LOCATION,
                        "repositoryName": "__repository__",
                        "jobName": "launch_ingredients_spellcheck",
                    },
                    "runConfigData": {
                        "ops": {"ingredients_spellcheck__launch": {"config": {"limit": limit}}}
                    },
                }
            },
        )
        assert data["launchRun"]["__typename"] == "LaunchRunSuccess", data
        return str(data["launchRun"]["run"]["runId"])

    def runs(self) -> list[dict[str, Any]]:
        results = self.graphql(RUNS)["runsOrError"]["results"]
        for run in results:
            run["tags"] = {t["key"]: t["value"] for t in run["tags"]}
        return results  # type: ignore[no-any-return]

    def wait_for_run(
        self, predicate: Any, *, timeout_s: float = 240, what: str = "a run"
    ) -> dict[str, Any]:
        """The first run (newest first) for which ``predicate(run)`` holds, polling."""
        deadline = time.monotonic() + timeout_s
        runs: list[dict[str, Any]] = []
        while time.monotonic() < deadline:
            runs = self.runs()
            for run in runs:
                if predicate(run):
                    return run
            time.sleep(0.5)
        summary = [(r["jobName"], r["status"], r["tags"].get("dagster/run_key")) for r in runs]
        raise AssertionError(f"no {what} after {timeout_s:.0f} s; runs: {summary}")

    def launched_job_id(self, run_id: str, timeout_s: float = 120) -> str:
        run = self.wait_for_run(
            lambda r: r["runId"] == run_id and r["status"] in ("SUCCESS", "FAILURE"),
            timeout_s=timeout_s,
            what="finished launch run",
        )
        assert run["status"] == "SUCCESS", run
        return str(run["tags"]["batch_job_id"])

    def check_executions(self, asset: list[str], check: str) -> list[dict[str, Any]]:
        data = self.graphql(CHECKS, {"key": {"path": asset}, "name": check})
        return data["assetCheckExecutions"]  # type: ignore[no-any-return]


def _kill_group(leader: subprocess.Popen[bytes], timeout_s: float = 10) -> None:
    """SIGKILL every process of the leader's group and wait until none is left (the leader
    reaped, so that its zombie does not keep the group alive)."""
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        try:
            os.killpg(leader.pid, signal.SIGKILL)
        except ProcessLookupError:
            return
        leader.poll()
        time.sleep(0.1)
    raise AssertionError(f"processes of group {leader.pid} survived SIGKILL")


def is_finish_of(job_id: str, *statuses: str) -> Any:
    """A run predicate: a finish run of this batch job, in one of these statuses."""

    def predicate(run: dict[str, Any]) -> bool:
        return (
            run["jobName"] == "finish_ingredients_spellcheck"
            and run["tags"].get("batch_job_id") == job_id
            and (not statuses or run["status"] in statuses)
        )

    return predicate
