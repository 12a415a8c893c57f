"""``robotoff-batch relaunch JOB`` on the local runner with the CPU engine: a job whose VM dies
at 60 % on every attempt ends FAILED with 6 of 10 chunks; its relaunch computes only chunks
6..9 (the texts its engine was given are counted as it ran) and its import, after or without
an ``import --partial`` of the failed job, takes each product exactly once.

Real parts only: the Dagster launch and finish runs, the local runner running the real
container (tests/fixtures/task_spellcheck_dies.py kills it, as a preempted VM's), embedded
PostgreSQL."""

from __future__ import annotations

import json
import sys
from collections.abc import Iterator
from pathlib import Path

import dagster as dg
import psycopg
import pyarrow.parquet as pq
import pytest
from typer.testing import CliRunner

from robotoff_batch.batch.engine import JobState
from robotoff_batch.cli import app, operations
from robotoff_batch.cli.relaunch import relaunch
from robotoff_batch.job_types import load_registry
from robotoff_batch.names import RELAUNCH_OF_LABEL, partitions_def_name
from tests.test_e2e import make_defs, make_resources

FIXTURE = Path(__file__).parent / "fixtures" / "task_spellcheck_dies.py"
JOB_TYPE = "ingredients-spellcheck"
ROWS, CHUNK = 100, 10


@pytest.fixture
def instance(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[dg.DagsterInstance]:
    monkeypatch.setenv("ROBOTOFF_BATCH_HOME", str(tmp_path / "home"))
    monkeypatch.setenv("ROBOTOFF_BATCH_IMPORT_RETRY_DELAY_S", "0")
    with dg.instance_for_test() as inst:
        yield inst


def workspace(tmp_path: Path, pg_db: str, instance: dg.DagsterInstance) -> operations.Workspace:
    """The real code location; its image played by the real container that dies before
    writing chunk 6 on every attempt, unless it carries chunks (a relaunch)."""
    command = [
        "env",
        "DIE_AT=before-chunk-6",
        "DIE_EVERY_ATTEMPT=1",
        f"COUNT_DIR={tmp_path / 'counts'}",
        "COUNT_PER_JOB=1",
        sys.executable,
        str(FIXTURE),
        "--engine",
        "lexicon-cpu",
        "--chunk-rows",
        str(CHUNK),
    ]
    (tmp_path / "counts").mkdir()
    resources = make_resources(tmp_path, pg_db, command=command)
    return operations.Workspace(make_defs(resources), instance, list(load_registry().values()))


def manifest(tmp_path: Path, job_id: str) -> dict:  # type: ignore[type-arg]
    path = tmp_path / "staging" / JOB_TYPE / job_id / "output" / "task-00000" / "manifest.json"
    return json.loads(path.read_text())  # type: ignore[no-any-return]


def sent_per_chunk(input_path: Path) -> list[int]:
    """Texts of each chunk the CPU engine is given: non-empty and within its length cap."""
    texts = pq.read_table(input_path).column("text").to_pylist()
    sent = [bool(t and t.strip()) and len(t) <= 10_000 for t in texts]
    return [sum(sent[k : k + CHUNK]) for k in range(0, len(texts), CHUNK)]


def counted(tmp_path: Path, job_id: str, attempt: int) -> int:
    path = tmp_path / "counts" / job_id / f"attempt-{attempt}"
    return sum(int(n) for n in path.read_text().split()) if path.exists() else 0


def check_results(ws: operations.Workspace, job_id: str) -> dict[str, bool]:
    """The asset checks of the job's last finish run (name -> passed)."""
    (last, *_) = ws.storage().finish_runs([job_id])[job_id]
    records = ws.instance.get_records_for_run(
        last.run_id, of_type=dg.DagsterEventType.ASSET_CHECK_EVALUATION
    ).records
    found = {}
    for record in records:
        data = record.event_log_entry.dagster_event.event_specific_data  # type: ignore[union-attr]
        found[data.check_name] = data.passed  # type: ignore[union-attr]
    return found


@pytest.mark.parametrize("partial_first", [True, False], ids=["after import --partial", "alone"])
def test_a_failed_job_relaunched_computes_the_rest_and_each_product_is_imported_once(
    tmp_path: Path, pg_db: str, instance: dg.DagsterInstance, partial_first: bool
) -> None:
    ws = workspace(tmp_path, pg_db, instance)
    launched = operations.launch(ws, job_type=JOB_TYPE, params={"limit": ROWS})
    failed = launched.job_id
    outcome = operations.follow_job(ws, job_id=failed, timeout_s=180, poll_s=0.2)
    assert outcome.status.state is JobState.FAILED
    first = manifest(tmp_path, failed)
    assert not first["complete"] and len(first["chunks"]) == 6

    partial_predictions = 0
    if partial_first:
        _, partial_predictions, _ = operations.run_import(ws, job_id=failed, partial=True)
        record = ws.store.imported_job(failed)
        assert record is not None and record.partial

    done = relaunch(ws, job_id=failed)
    new_id = done.new_job.job_id
    assert new_id == f"{failed}-r1" and done.alternative == 0
    assert done.new_job.labels[RELAUNCH_OF_LABEL] == failed
    assert instance.has_dynamic_partition(partitions_def_name(JOB_TYPE), new_id)
    finished = operations.follow_job(ws, job_id=new_id, timeout_s=180, poll_s=0.2)
    assert finished.status.state is JobState.SUCCEEDED, finished.status.failure_summary
    assert finished.imported is not None, finished.message

    # only the remainder was computed: chunks 6..9, by the relaunch's one attempt
    input_path = tmp_path / "staging" / JOB_TYPE / failed / "input.parquet"
    per_chunk = sent_per_chunk(input_path)
    assert len(per_chunk) == ROWS // CHUNK
    assert counted(tmp_path, new_id, 0) == sum(per_chunk[6:])
    assert counted(tmp_path, new_id, 1) == 0
    second = manifest(tmp_path, new_id)
    assert second["complete"]
    uris = [c["uri"] for c in second["chunks"]]
    assert uris[:6] == [c["uri"] for c in first["chunks"]]  # carried, not copied
    assert all(f"/{new_id}/" in u for u in uris[6:])

    # each product once, across the partial import (if any) and the relaunch's import
    rows = [r for u in uris for r in pq.read_table(u.removeprefix("file://")).to_pylist()]
    assert [r["code"] for r in rows] == pq.read_table(input_path).column("code").to_pylist()
    changed = {
        r["code"] for r in rows if r["correction"] is not None and r["correction"] != r["text"]
    }
    with psycopg.connect(pg_db) as conn:
        counts = conn.execute(
            "SELECT barcode, count(*) FROM prediction GROUP BY barcode"
        ).fetchall()
    assert {b for b, _ in counts} == changed
    assert all(n == 1 for _, n in counts)
    assert partial_predictions + finished.imported == len(changed)
    assert (partial_predictions > 0) is partial_first
    assert check_results(ws, new_id) and all(check_results(ws, new_id).values())

    # refused, nothing submitted: again, a SUCCEEDED job, an unknown one
    with pytest.raises(operations.OperationError, match=f"already relaunched as {new_id}"):
        relaunch(ws, job_id=failed)
    with pytest.raises(operations.OperationError, match="SUCCEEDED: nothing to relaunch"):
        relaunch(ws, job_id=new_id)
    with pytest.raises(operations.OperationError, match="no batch job 'nope-1'"):
        relaunch(ws, job_id="nope-1")
    assert {j.job_id for j in ws.engine.list_jobs(labels={})} == {failed, new_id}


def test_the_command_is_registered_and_says_why_it_refuses(
    tmp_path: Path, pg_db: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("ROBOTOFF_BATCH_HOME", str(tmp_path / "home"))
    monkeypatch.setenv("DAGSTER_HOME", str(tmp_path / "dagster_home"))
    monkeypatch.setenv("ROBOTOFF_DATABASE_URL", pg_db)
    monkeypatch.delenv("ROBOTOFF_BATCH_ENV", raising=False)
    result = CliRunner().invoke(app, ["relaunch", "nope-1"])
    assert result.exit_code == 1
    assert "relaunch failed: no batch job 'nope-1'" in result.output
