"""The real Dagster processes: `dagster dev` (webserver + daemon) serving the code location, driven
through the UI's GraphQL API, and killed with SIGKILL where a crash would hurt: every launched
job still ends imported exactly once, with no operator, and a failed job shows as failed."""

from __future__ import annotations

import shutil
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import dagster as dg
import psycopg
import pytest
from typer.testing import CliRunner

from robotoff_batch.predictions.embedded import ensure_embedded_postgres, stop_embedded_postgres
from robotoff_batch.predictions.store import PredictionStore
from tests.dagster_dev_harness import DagsterDev, is_finish_of
from tests.pg_fixtures import private_tmp_dir

pytestmark = [pytest.mark.slow, pytest.mark.dagster_dev]
FIXTURES = Path(__file__).parent / "fixtures"
# the CPU engine (in its argv, so the extraction stages its lexicon), started 6 s late
SLOW_TASK = [sys.executable, str(FIXTURES / "task_slow_spellcheck.py"), "--engine", "lexicon-cpu"]


@pytest.fixture
def dev(tmp_path: Path, pg_db: str, request: pytest.FixtureRequest) -> Iterator[DagsterDev]:
    command = getattr(request, "param", None)
    harness = DagsterDev(tmp_path, pg_db, command=command)
    try:
        yield harness
    finally:
        harness.stop()


def imported_once(pg_db: str, job_id: str) -> int:
    """Predictions of the job, asserting the ledger holds it exactly once."""
    store = PredictionStore(conninfo=pg_db)
    assert store.imported_jobs([job_id]) == {job_id}
    with psycopg.connect(pg_db) as conn:
        row = conn.execute(
            "SELECT count(*) FROM batch_job_import WHERE batch_job_id = %s", (job_id,)
        ).fetchone()
    assert row == (1,)
    return store.count_predictions(batch_job_id=job_id)


def test_ui_launch_is_followed_by_the_daemon_and_imported(dev: DagsterDev, pg_db: str) -> None:
    dev.start()
    clicked = time.monotonic()
    launch_run = dev.launch(limit=40)
    job_id = dev.launched_job_id(launch_run)
    finish = dev.wait_for_run(is_finish_of(job_id, "SUCCESS", "FAILURE"), what="finish run")
    print(f"\nclick to imported: {time.monotonic() - clicked:.1f} s")
    assert finish["status"] == "SUCCESS"
    assert finish["tags"]["dagster/sensor_name"] == "batch_job_sensor"
    assert finish["tags"]["dagster/partition"] == job_id
    assert finish["tags"]["dagster/run_key"] == f"finish-{job_id}"
    (check,) = dev.check_executions(["ingredients_spellcheck", "batch_job"], "batch_job_succeeded")
    assert check["runId"] == finish["runId"] and check["evaluation"]["success"] is True
    assert imported_once(pg_db, job_id) > 0
    # launched at once (the DefaultRunCoordinator of the embedded instance's dagster.yaml): the
    # click's run and the sensor's finish run never waited in a run queue
    inst = dg.DagsterInstance.from_config(str(dev.home))
    try:
        for run_id in (launch_run, finish["runId"]):
            assert not inst.all_logs(run_id, of_type=dg.DagsterEventType.RUN_ENQUEUED), run_id
            assert inst.all_logs(run_id, of_type=dg.DagsterEventType.RUN_START), run_id
    finally:
        inst.dispose()


@pytest.mark.parametrize("dev", [[sys.executable, str(FIXTURES / "task_exit3.py")]], indirect=True)
def test_a_container_exiting_3_fails_the_check_visibly(dev: DagsterDev, pg_db: str) -> None:
    dev.start()
    job_id = dev.launched_job_id(dev.launch(limit=10))
    finish = dev.wait_for_run(is_finish_of(job_id, "SUCCESS", "FAILURE"), what="finish run")
    assert finish["status"] == "FAILURE"  # red in the run list
    (check,) = dev.check_executions(["ingredients_spellcheck", "batch_job"], "batch_job_succeeded")
    evaluation = check["evaluation"]
    assert check["runId"] == finish["runId"] and evaluation["success"] is False
    assert evaluation["severity"] == "ERROR" and "FAILED" in evaluation["description"]
    entries = {e["label"]: e.get("mdStr") or e.get("text") for e in evaluation["metadataEntries"]}
    assert "task failing with exit code 3" in entries["log_tail"]
    assert "exit code 3" in entries["reason"] and entries["exit_codes"] == "task 0: 3"
    assert PredictionStore(conninfo=pg_db).imported_jobs([job_id]) == set()


@pytest.mark.parametrize("dev", [SLOW_TASK], indirect=True)
def test_dagster_killed_while_the_job_runs_then_restarted(dev: DagsterDev, pg_db: str) -> None:
    dev.start()
    job_id = dev.launched_job_id(dev.launch(limit=40))
    dev.kill()  # the job goes on (Cloud Batch, or the local runner's detached supervisor)
    time.sleep(8)  # it ends while nothing follows it
    dev.start()
    finish = dev.wait_for_run(is_finish_of(job_id, "SUCCESS", "FAILURE"), what="finish run")
    assert finish["status"] == "SUCCESS"
    assert imported_once(pg_db, job_id) > 0
    time.sleep(3)  # a few more ticks: nothing more is requested
    assert len([r for r in dev.runs() if is_finish_of(job_id)(r)]) == 1


def test_dagster_killed_in_the_middle_of_the_import(dev: DagsterDev, pg_db: str) -> None:
    """The import blocks on a table lock; Dagster is killed; after the restart the dead run is
    failed and a new attempt imports the job, once."""
    PredictionStore(conninfo=pg_db).ensure_schema()
    dev.start()
    with psycopg.connect(pg_db) as blocker:
        blocker.execute("LOCK TABLE prediction IN ACCESS EXCLUSIVE MODE")
        job_id = dev.launched_job_id(dev.launch(limit=40))
        dev.wait_for_run(is_finish_of(job_id, "STARTED"), what="started finish run")
        time.sleep(3)  # inside the import, waiting for the lock
        dev.kill()
        blocker.rollback()
    dev.start()
    retried = dev.wait_for_run(is_finish_of(job_id, "SUCCESS"), what="successful finish run")
    assert retried["tags"]["dagster/run_key"] == f"finish-{job_id}-retry-1"
    runs = {
        r["tags"]["dagster/run_key"]: r["status"] for r in dev.runs() if is_finish_of(job_id)(r)
    }
    assert runs == {f"finish-{job_id}": "FAILURE", f"finish-{job_id}-retry-1": "SUCCESS"}
    assert imported_once(pg_db, job_id) > 0


def test_database_down_during_the_import_then_back(tmp_path: Path) -> None:
    """Robotoff's database goes down in the middle of the import and comes back 20 s later:
    the failed finish run is retried (with backoff) until the job is imported, once."""
    data_dir = private_tmp_dir("robotoff-batch-down-pg-") / "data"
    url = ensure_embedded_postgres(data_dir)
    dev = DagsterDev(tmp_path, url)
    try:
        PredictionStore(conninfo=url).ensure_schema()
        dev.start()
        blocker = psycopg.connect(url)
        blocker.execute("LOCK TABLE prediction IN ACCESS EXCLUSIVE MODE")
        job_id = dev.launched_job_id(dev.launch(limit=40))
        dev.wait_for_run(is_finish_of(job_id, "STARTED"), what="started finish run")
        time.sleep(2)  # inside the import, waiting for the lock
        stop_embedded_postgres(data_dir)  # every connection is cut, the import's included
        blocker.close()
        failed = dev.wait_for_run(is_finish_of(job_id, "FAILURE"), what="failed finish run")
        assert failed["tags"]["dagster/run_key"] == f"finish-{job_id}"
        time.sleep(20)
        ensure_embedded_postgres(data_dir)  # back, same socket and URL
        done = dev.wait_for_run(is_finish_of(job_id, "SUCCESS"), what="successful finish run")
        assert done["tags"]["dagster/run_key"].startswith(f"finish-{job_id}-retry-")
        assert imported_once(url, job_id) > 0
        time.sleep(3)
        statuses = [r["status"] for r in dev.runs() if is_finish_of(job_id)(r)]
        assert statuses.count("SUCCESS") == 1 and "STARTED" not in statuses
    finally:
        dev.stop()
        stop_embedded_postgres(data_dir)
        shutil.rmtree(data_dir.parent, ignore_errors=True)


@pytest.mark.parametrize("dev", [SLOW_TASK], indirect=True)
def test_cli_wait_timing_out_without_a_daemon_then_the_daemon_imports(
    dev: DagsterDev, pg_db: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    from robotoff_batch.cli import app, operations

    for key in ("DAGSTER_HOME", "ROBOTOFF_BATCH_HOME", "ROBOTOFF_DATABASE_URL"):
        monkeypatch.setenv(key, dev.env[key])
    monkeypatch.setenv("ROBOTOFF_BATCH_TEST_COMMAND", dev.env["ROBOTOFF_BATCH_TEST_COMMAND"])
    monkeypatch.setattr(operations.Workspace, "from_env", _dev_workspace)
    out = CliRunner().invoke(
        app, ["launch", "ingredients-spellcheck", "limit=40", "--wait", "--timeout-s", "1"]
    )
    assert out.exit_code == 1 and "nothing is lost" in out.output, out.output
    job_id = out.output.split("launched batch job ", 1)[1].split()[0]
    dev.start()
    finish = dev.wait_for_run(is_finish_of(job_id, "SUCCESS", "FAILURE"), what="finish run")
    assert finish["status"] == "SUCCESS"
    assert imported_once(pg_db, job_id) > 0


def _dev_workspace():  # type: ignore[no-untyped-def]
    """The CLI on the same code location `dagster dev` serves (the test command included)."""
    import importlib

    import tests.dev_location
    from robotoff_batch.cli import operations
    from robotoff_batch.job_types import load_registry

    defs = importlib.reload(tests.dev_location).defs
    return operations.Workspace(defs, operations.instance(), list(load_registry().values()))
