"""End to end on embedded defaults: Dagster assets + sensor + local runner + real PostgreSQL.

The real spellcheck container entrypoint runs as local processes; nothing of ours is mocked.
"""

from __future__ import annotations

import json
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import dagster as dg
import psycopg
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from robotoff_batch.assets.launch import launch_op_name
from robotoff_batch.batch.engine import JobState
from robotoff_batch.definitions import build_definitions
from robotoff_batch.job_types import load_registry, local_commands
from robotoff_batch.job_types.ingredients_spellcheck import SpellcheckLaunch
from robotoff_batch.names import REFUSED_TAG, partitions_def_name
from robotoff_batch.paths import SAMPLE_DATA_DIR
from robotoff_batch.resources import (
    LocalBatchEngineResource,
    LocalStagingResource,
    PostgresPredictionStoreResource,
    ProductDumpResource,
    RobotoffApiPredictionStoreResource,
)

JOB_TYPE = "ingredients-spellcheck"
PARTITIONS = partitions_def_name(JOB_TYPE)


SLEEPING = [sys.executable, "-c", "import time; time.sleep(600)"]


def make_resources(
    tmp_path: Path,
    database_url: str,
    dump: Path | None = None,
    *,
    command: list[str] | None = None,
) -> dict[str, Any]:
    """The local resources on temporary directories; ``command`` plays the job type's image
    on the local runner instead of its container (a container that fails, or sleeps)."""
    image = load_registry()[JOB_TYPE].config.resources.container_image_uri
    return {
        "product_dump": ProductDumpResource(
            path=str(dump or SAMPLE_DATA_DIR / "food_sample_2026.parquet")
        ),
        "staging": LocalStagingResource(root_uri=(tmp_path / "staging").as_uri()),
        "batch_engine": LocalBatchEngineResource(
            job_type_commands=local_commands(),
            state_dir=str(tmp_path / "batch"),
            local_commands={image: command} if command else None,
        ),
        "prediction_store": PostgresPredictionStoreResource(database_url=database_url),
    }


def make_defs(resources: dict[str, Any]) -> dg.Definitions:
    """The real code location, on these resources."""
    return build_definitions(resources=resources)


@pytest.fixture
def instance(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[dg.DagsterInstance]:
    monkeypatch.setenv("ROBOTOFF_BATCH_HOME", str(tmp_path / "home"))
    monkeypatch.setenv("ROBOTOFF_BATCH_IMPORT_RETRY_DELAY_S", "0")
    with dg.instance_for_test() as inst:
        yield inst


def launch(defs: dg.Definitions, instance: dg.DagsterInstance, **params: Any) -> Any:
    job = defs.resolve_job_def("launch_ingredients_spellcheck")
    return job.execute_in_process(
        run_config=dg.RunConfig(
            ops={launch_op_name("ingredients_spellcheck"): SpellcheckLaunch(**params)}
        ),
        instance=instance,
        raise_on_error=False,
    )


def launched_job_id(result: Any) -> str:
    for event in result.get_asset_materialization_events():
        mat = event.materialization
        if mat.asset_key.path[-1] == "batch_job_submission":
            return str(mat.metadata["batch_job_id"].value)
    raise AssertionError("no submission materialization")


def failure_text(result: Any) -> str:
    texts = []
    for event in result.all_events:
        if event.is_step_failure:
            data = event.step_failure_data
            texts.append(
                (data.user_failure_data.description if data.user_failure_data else "")
                or data.error.message
            )
    return "\n".join(texts)


def tick(
    defs: dg.Definitions,
    instance: dg.DagsterInstance,
    resources: dict[str, Any],
    cursor: str | None,
) -> dg.SensorResult:
    """One sensor tick, its partitions and observations applied as the daemon would."""
    sensor = defs.get_sensor_def("batch_job_sensor")
    context = dg.build_sensor_context(instance=instance, cursor=cursor, resources=resources)
    result = sensor(context)
    assert isinstance(result, dg.SensorResult)
    for request in result.dynamic_partitions_requests or []:
        instance.add_dynamic_partitions(request.partitions_def_name, list(request.partition_keys))
    for event in result.asset_events or []:
        instance.report_runless_asset_event(event)
    return result


def run_request(defs: dg.Definitions, instance: dg.DagsterInstance, request: dg.RunRequest) -> Any:
    """Execute a run the sensor requested, as the daemon would (its key, tags, selection)."""
    job = defs.resolve_job_def(request.job_name)
    return job.execute_in_process(
        instance=instance,
        partition_key=request.partition_key,
        asset_selection=list(request.asset_selection or []),
        tags={**request.tags, "dagster/run_key": request.run_key},
        raise_on_error=False,
    )


def tick_until_done(
    defs: dg.Definitions, instance: dg.DagsterInstance, resources: dict[str, Any]
) -> tuple[list[dg.RunRequest], list[str], str | None]:
    """Tick until the job ends: its finish run requested (states seen in flight, cursor)."""
    cursor: str | None = None
    states: list[str] = []
    for _ in range(240):
        result = tick(defs, instance, resources, cursor)
        cursor = result.cursor
        for event in result.asset_events or []:
            states.append(str(event.metadata["state"].value))
        if result.run_requests:
            return list(result.run_requests), states, cursor
        time.sleep(0.25)
    raise AssertionError(f"job did not finish; states seen: {states}")


def check_evaluations(result: Any) -> dict[str, Any]:
    return {c.check_name: c for c in result.get_asset_check_evaluations()}


def db_rows(database_url: str, job_id: str) -> list[dict[str, Any]]:
    with psycopg.connect(database_url) as conn:
        if conn.execute("SELECT to_regclass('prediction')").fetchone() == (None,):
            return []  # nothing was ever imported into this database
        cur = conn.execute(  # the job's rows: our link table's id ranges
            "SELECT barcode, type, data, value_tag, predictor, predictor_version,"
            " automatic_processing, server_type FROM prediction p JOIN batch_job_prediction l"
            " ON p.id BETWEEN l.first_id AND l.last_id WHERE l.batch_job_id = %s",
            (job_id,),
        )
        cols = [c.name for c in cur.description]
        return [dict(zip(cols, row, strict=True)) for row in cur.fetchall()]


def output_changes(staging_root: Path, job_id: str) -> dict[str, dict[str, Any]]:
    changed = {}
    # the tasks' checkpointed chunks (output/task-<i>/chunk-<k>.parquet)
    for part in sorted(
        (staging_root / JOB_TYPE / job_id / "output").glob("task-*/chunk-*.parquet")
    ):
        for row in pq.read_table(part).to_pylist():
            if row["correction"] != row["text"]:
                changed[row["code"]] = row
    return changed


def test_launch_sensor_import_end_to_end(
    tmp_path: Path, instance: dg.DagsterInstance, pg_db: str
) -> None:
    resources = make_resources(tmp_path, pg_db)
    defs = make_defs(resources)

    result = launch(defs, instance, limit=120)
    assert result.success, failure_text(result)
    job_id = launched_job_id(result)
    staged = tmp_path / "staging" / JOB_TYPE / job_id
    assert pq.read_metadata(staged / "input.parquet").num_rows == 120
    # the launch run and the batch job name each other
    assert instance.get_run_by_id(result.run_id).tags["batch_job_id"] == job_id
    engine = resources["batch_engine"].get_engine()
    assert engine.get_job(job_id=job_id).labels["dagster-run-id"] == result.run_id

    requests, states, cursor = tick_until_done(defs, instance, resources)
    assert instance.has_dynamic_partition(PARTITIONS, job_id)
    order = ["QUEUED", "SCHEDULED", "RUNNING"]
    assert [order.index(s) for s in states] == sorted(order.index(s) for s in states)
    (request,) = requests
    assert request.run_key == f"finish-{job_id}" and request.partition_key == job_id
    assert request.job_name == "finish_ingredients_spellcheck"

    # until the finish run ran, a tick asks for nothing new (the run key dedups anyway)
    finished = run_request(defs, instance, request)
    assert finished.success, failure_text(finished)
    checks = check_evaluations(finished)
    assert {name: c.passed for name, c in checks.items()} == {
        "batch_job_succeeded": True,
        "rows_imported_match_output": True,
        "no_duplicate_predictions": True,
        "no_rows_quarantined": True,
    }
    # then the job is settled: a repeated tick changes nothing and requests nothing
    again = tick(defs, instance, resources, cursor)
    assert not again.run_requests and not again.asset_events
    # ... even with the cursor lost: it is a cache, rebuilt from partitions, runs and ledger
    lost = tick(defs, instance, resources, None)
    assert not lost.run_requests and not lost.asset_events

    # the batch job's partition is materialized with its outcome
    mat = instance.get_latest_materialization_event(
        dg.AssetKey(["ingredients_spellcheck", "batch_job"])
    )
    assert mat is not None and mat.asset_materialization.partition == job_id
    meta = mat.asset_materialization.metadata
    assert meta["state"].value == "SUCCEEDED" and meta["launch_run"].value == result.run_id
    events = [r["event"] for r in (r.data for r in meta["timeline"].value.records)]
    assert events[-1].endswith("SUCCEEDED") or "SUCCEEDED" in str(meta["timeline"].value)

    # its cost beside the ceiling: the local runner's task attempts x the configured machine
    config = load_registry()[JOB_TYPE].config
    runs = [r for t in engine.get_job(job_id=job_id).tasks for r in t.runs]
    seconds = sum(r.duration_s() or 0.0 for r in runs)
    assert runs and seconds > 0
    usd = seconds / 3600 * config.cost.hourly_usd  # STANDARD: no SPOT fraction
    assert meta["actual_cost_usd"].value == pytest.approx(usd, abs=1e-6)
    assert str(meta["actual_cost"].value).startswith(
        "would-be cost (local runner, nothing billed: the same run on the configured machine "
        "in Cloud Batch): $"
    )
    assert "(g2-standard-8 + 1 x nvidia-l4, STANDARD)" in str(meta["actual_cost"].value)
    assert meta["products"].value == 120
    assert meta["actual_cost_per_1000_products_usd"].value == pytest.approx(
        usd / 120 * 1000, abs=1e-5
    )
    assert meta["production_worst_case_ceiling_usd"].value == round(config.cost.total_usd, 2)
    assert "max_cost_usd $50.00" in str(meta["production_worst_case_ceiling"].value)
    (month,) = [r.data for r in meta["cost_per_month"].value.records]
    assert month["jobs"] == 1 and month["cost (USD)"] == meta["actual_cost_usd"].value

    expected = output_changes(tmp_path / "staging", job_id)
    assert expected, "the CPU engine corrected nothing in 120 real products"
    rows = db_rows(pg_db, job_id)
    assert len(rows) == len(expected)
    for row in rows:
        out = expected[row["barcode"]]
        data = row["data"] if isinstance(row["data"], dict) else json.loads(row["data"])
        assert data == {
            "original": out["text"],
            "correction": out["correction"],
            "lang": out["lang"],
            "lang_confidence": None,  # Robotoff's fastText confidence: no detector here
            # the CPU engine's corrections, each with its rule and confidence
            "corrections": json.loads(out["corrections"]),
        }
        assert all(0.0 < c["confidence"] <= 1.0 for c in data["corrections"])
        assert row["type"] == "ingredient_spellcheck"
        assert row["value_tag"] == out["lang"]
        assert row["predictor"] == out["engine"]
        assert row["predictor_version"] == out["engine_version"]  # the model's, not the job's
        assert row["automatic_processing"] is False and row["server_type"] == "off"

    # the examples table shows the changed words
    pred = instance.get_latest_materialization_event(
        dg.AssetKey(["ingredients_spellcheck", "predictions"])
    )
    examples = pred.asset_materialization.metadata["examples"].value.records
    assert examples and all(" → " in r.data["changes"] for r in examples)

    # importing the same job twice changes nothing
    twice = run_request(
        defs, instance, dg.RunRequest(**{**request._asdict(), "run_key": "manual-again"})
    )
    assert twice.success
    assert len(db_rows(pg_db, job_id)) == len(expected)


def test_selection_matching_nothing_launches_no_job(
    tmp_path: Path, instance: dg.DagsterInstance, pg_db: str
) -> None:
    resources = make_resources(tmp_path, pg_db)
    defs = make_defs(resources)
    result = launch(defs, instance, codes=["0000000000000-none"])
    assert not result.success
    assert "matched no product" in failure_text(result)
    engine = resources["batch_engine"].get_engine()
    assert engine.list_jobs(labels={"app": "robotoff-batch"}) == []


@pytest.mark.parametrize("dump", ["missing.parquet", "not-parquet.parquet"])
def test_bad_dump_is_refused_clearly(
    tmp_path: Path, instance: dg.DagsterInstance, pg_db: str, dump: str
) -> None:
    path = tmp_path / dump
    if dump.startswith("not"):
        path.write_text("code,text\n1,sugar\n")
    resources = make_resources(tmp_path, pg_db, dump=path)
    result = launch(make_defs(resources), instance, limit=5)
    assert not result.success
    assert str(path) in failure_text(result)
    assert resources["batch_engine"].get_engine().list_jobs(labels={"app": "robotoff-batch"}) == []


def test_failed_container_fails_the_check_with_exit_code_and_log_tail(
    tmp_path: Path, instance: dg.DagsterInstance, pg_db: str
) -> None:
    """A container that exits 3: the finish run fails the partition, the check says exit code
    3 with the end of the task's log, nothing is imported, and nothing is requested again."""
    script = "import sys; [print(f'line {i}') for i in range(50)]; "
    script += "print('CUDA error: no GPU found', file=sys.stderr); sys.exit(3)"
    resources = make_resources(tmp_path, pg_db, command=[sys.executable, "-c", script])
    defs = make_defs(resources)
    result = launch(defs, instance, limit=10)
    assert result.success, failure_text(result)
    job_id = launched_job_id(result)
    requests, _, cursor = tick_until_done(defs, instance, resources)
    (request,) = requests
    assert [k.path[-1] for k in request.asset_selection] == ["batch_job"]  # no import step

    finished = run_request(defs, instance, request)
    assert not finished.success
    message = failure_text(finished)
    assert "FAILED" in message and "exit code 3" in message
    assert "CUDA error: no GPU found" in message
    check = check_evaluations(finished)["batch_job_succeeded"]
    assert not check.passed and check.severity == dg.AssetCheckSeverity.ERROR
    assert "CUDA error: no GPU found" in str(check.metadata["log_tail"].value)
    assert check.metadata["exit_codes"].value == "task 0: 3"
    assert check.description.endswith("(exit code 3): CUDA error: no GPU found")
    # the failed job's cost counts both attempts (exit 3 is retried once)
    (failure,) = [e for e in finished.all_events if e.is_step_failure]
    cost_meta = failure.step_failure_data.user_failure_data.metadata
    assert len(cost_meta["cost_by_attempt"].value.records) == 2
    assert cost_meta["actual_cost_usd"].value > 0
    # ... and is on the partition (an observation: a failed step materializes nothing)
    seen = instance.fetch_observations(dg.AssetKey(["ingredients_spellcheck", "batch_job"]), 10)
    recorded = [r.asset_observation for r in seen.records if r.asset_observation]
    (outcome,) = [o for o in recorded if "actual_cost" in o.metadata]
    assert outcome.partition == job_id and outcome.metadata["state"].value == "FAILED"
    assert check.metadata["actual_cost"] == cost_meta["actual_cost"]
    engine = resources["batch_engine"].get_engine()
    assert engine.get_job(job_id=job_id).state == JobState.FAILED
    assert db_rows(pg_db, job_id) == []

    # the outcome is recorded: no new request, with or without the cursor
    for cur in (cursor, None):
        later = tick(defs, instance, resources, cur)
        assert not later.run_requests


def test_bad_output_is_refused_whole_and_database_down_is_retried_once(
    tmp_path: Path, instance: dg.DagsterInstance, pg_db: str
) -> None:
    resources = make_resources(tmp_path, pg_db)
    defs = make_defs(resources)
    result = launch(defs, instance, limit=40)
    assert result.success, failure_text(result)
    job_id = launched_job_id(result)
    (request,), _, cursor = tick_until_done(defs, instance, resources)
    output = tmp_path / "staging" / JOB_TYPE / job_id / "output"

    # a task file whose codes are null: nothing at all is imported (a stray extra file would
    # be refused too, as no task's: tests/test_spellcheck_import.py)
    part = sorted(output.glob("task-*/chunk-*.parquet"))[-1]
    good = part.read_bytes()
    table = pq.read_table(part)
    index = table.schema.get_field_index("code")
    bad = table.set_column(index, "code", pa.array([None] * table.num_rows, pa.string()))
    pq.write_table(bad, part)
    refused = run_request(defs, instance, request)
    assert not refused.success
    message = failure_text(refused)
    assert f"{part.name} row 0" in message and "null or empty 'code'" in message
    assert db_rows(pg_db, job_id) == []
    # refused output is not retried by the follower (it would fail the same way)
    after_refusal = tick(defs, instance, resources, cursor)
    assert not after_refusal.run_requests
    part.write_bytes(good)

    # the database is down: a clear error without the password, nothing imported
    down = dict(resources)
    down["prediction_store"] = PostgresPredictionStoreResource(
        database_url="postgresql://robotoff:s3cret-pw@127.0.0.1:9/robotoff?connect_timeout=2"
    )
    down_defs = make_defs(down)
    retry = dg.RunRequest(**{**request._asdict(), "run_key": "manual-retry"})
    failed = run_request(down_defs, instance, retry)
    assert not failed.success
    assert "s3cret-pw" not in failure_text(failed)

    # the follower requests a new attempt (new run key) once the database is back
    (attempt,) = tick(defs, instance, resources, None).run_requests
    assert attempt.run_key == f"finish-{job_id}-retry-2" and attempt.partition_key == job_id
    ok = run_request(defs, instance, attempt)
    assert ok.success, failure_text(ok)
    n = len(db_rows(pg_db, job_id))
    assert n == len(output_changes(tmp_path / "staging", job_id))
    # exactly once: settled, nothing more requested, nothing more imported
    assert not tick(defs, instance, resources, None).run_requests
    assert len(db_rows(pg_db, job_id)) == n


def test_refused_credentials_fail_with_the_reason_and_are_not_retried(
    tmp_path: Path, instance: dg.DagsterInstance, pg_db: str
) -> None:
    """Wrong database credentials do not heal by retrying: the finish run fails with the
    reason, is tagged refused, and the follower requests no new attempt."""
    from psycopg.conninfo import conninfo_to_dict, make_conninfo

    resources = make_resources(tmp_path, pg_db)
    defs = make_defs(resources)
    result = launch(defs, instance, limit=20)
    assert result.success, failure_text(result)
    job_id = launched_job_id(result)
    (request,), _, cursor = tick_until_done(defs, instance, resources)
    params = conninfo_to_dict(pg_db)
    params.update(user="no_such_role", password="s3cret-pw")
    wrong = dict(resources)
    wrong["prediction_store"] = PostgresPredictionStoreResource(
        database_url=make_conninfo(**params)
    )
    failed = run_request(make_defs(wrong), instance, request)
    assert not failed.success
    message = failure_text(failed)
    assert 'role "no_such_role" does not exist' in message and "s3cret-pw" not in message
    assert instance.get_run_by_id(failed.run_id).tags.get(REFUSED_TAG) == "true"
    assert not tick(defs, instance, resources, cursor).run_requests
    assert db_rows(pg_db, job_id) == []


def test_job_of_a_cancelled_run_is_cancelled(
    tmp_path: Path, instance: dg.DagsterInstance, pg_db: str
) -> None:
    """A batch job whose launching Dagster run was cancelled is cancelled: no orphan job."""
    # the image is played by a container that sleeps: the job runs when the sensor looks
    resources = make_resources(tmp_path, pg_db, command=SLEEPING)
    defs = make_defs(resources)
    result = launch(defs, instance, limit=10)
    assert result.success, failure_text(result)
    job_id = launched_job_id(result)
    engine = resources["batch_engine"].get_engine()
    run = instance.get_run_by_id(result.run_id)
    instance.report_run_canceled(run)
    first = tick(defs, instance, resources, None)
    assert engine.get_job(job_id=job_id).state in (
        JobState.CANCELLATION_IN_PROGRESS,
        JobState.CANCELLED,
    )
    (request,), _, _ = tick_until_done(defs, instance, resources)
    assert first.cursor is not None
    finished = run_request(defs, instance, request)
    assert not finished.success and "CANCELLED" in failure_text(finished)
    assert not check_evaluations(finished)["batch_job_succeeded"].passed
    assert engine.get_job(job_id=job_id).state == JobState.CANCELLED


def test_cancel_job_from_the_ui_cancels_once(
    tmp_path: Path, instance: dg.DagsterInstance, pg_db: str
) -> None:
    """The partition's cancel job: the first run cancels, a second one sends nothing."""
    resources = make_resources(tmp_path, pg_db, command=SLEEPING)
    defs = make_defs(resources)
    job_id = launched_job_id(launch(defs, instance, limit=10))
    tick(defs, instance, resources, None)  # registers the partition
    cancel = defs.resolve_job_def("cancel_ingredients_spellcheck")
    engine = resources["batch_engine"].get_engine()
    first = cancel.execute_in_process(instance=instance, partition_key=job_id)
    assert first.success
    assert engine.get_job(job_id=job_id).state.is_stopping or (
        engine.get_job(job_id=job_id).state == JobState.CANCELLED
    )
    second = cancel.execute_in_process(instance=instance, partition_key=job_id)
    said = [e.user_message for e in instance.all_logs(second.run_id) if e.user_message]
    assert second.success and any("not sent again" in m or "nothing to cancel" in m for m in said)
    assert not any(m.startswith(f"cancelled {job_id}") for m in said)  # not sent again
    (request,), _, _ = tick_until_done(defs, instance, resources)
    assert not run_request(defs, instance, request).success
    assert engine.get_job(job_id=job_id).state == JobState.CANCELLED


def test_robotoff_api_target_hands_the_output_to_robotoffs_importer(
    tmp_path: Path, instance: dg.DagsterInstance, pg_db: str
) -> None:
    """The finish run of a SUCCEEDED job hands its checked output to Robotoff's endpoint (a
    local server reproducing its contract), once; nothing is written to Robotoff's tables."""
    from tests.fakes.http_server import serving
    from tests.test_robotoff_api import KEY, RobotoffEndpoint

    received: list[dict[str, str]] = []
    handler = type("Handler", (RobotoffEndpoint,), {"received": received})
    with serving(handler) as server:
        resources = make_resources(tmp_path, pg_db)
        bucket = tmp_path / "robotoff-batch"
        bucket.mkdir()
        resources["prediction_store"] = RobotoffApiPredictionStoreResource(
            database_url=pg_db,
            robotoff_url=f"http://127.0.0.1:{server.server_port}",
            robotoff_bucket_uri=bucket.as_uri(),
            batch_job_key=KEY,
        )
        defs = make_defs(resources)
        result = launch(defs, instance, limit=30)
        assert result.success, failure_text(result)
        job_id = launched_job_id(result)
        (request,), _, cursor = tick_until_done(defs, instance, resources)
        assert [k.path[-1] for k in request.asset_selection] == ["batch_job", "predictions"]
        finished = run_request(defs, instance, request)
        assert finished.success, failure_text(finished)
    # every row with a correction, unchanged ones included (Robotoff's container sends them)
    expected = {
        row["code"]: row
        for part in sorted((tmp_path / "staging" / JOB_TYPE / job_id / "output").rglob("*.parquet"))
        for row in pq.read_table(part).to_pylist()
        if row["correction"] is not None
    }
    assert received == [{"job_type": "ingredients_spellcheck", "batch_dir": f"{JOB_TYPE}/{job_id}"}]
    handed = pq.read_table(bucket / JOB_TYPE / job_id / "postprocessed_data.parquet")
    assert sorted(handed.column("code").to_pylist()) == sorted(expected)
    assert db_rows(pg_db, job_id) == []
    with psycopg.connect(pg_db) as conn:
        assert conn.execute(
            "SELECT target, predictions FROM batch_job_import WHERE batch_job_id = %s", (job_id,)
        ).fetchone() == ("robotoff_api", len(expected))
    assert not tick(defs, instance, resources, cursor).run_requests  # settled, once


@pytest.mark.parametrize(
    ("original", "correction", "shown"),
    [
        ("VANULLIN: sugar", "VANILLIN: sugar", "VANULLIN: → VANILLIN:"),
        # a split word does not shift every later word into the table
        (
            "milk butteroil, lecithin (soy)",
            "milk butter oil, lecithin (soy)",
            "butteroil, → butter oil,",
        ),
        ("salt, sugar", "salt sugar", "salt, → salt"),
        ("a b", "a  b", "(whitespace only)"),
    ],
)
def test_examples_show_the_changed_words(original: str, correction: str, shown: str) -> None:
    from robotoff_batch.job_types.base import changed_words

    assert changed_words(original, correction) == shown


def test_example_excerpts_are_centred_on_the_change() -> None:
    from robotoff_batch.assets.imports import excerpts

    head = "sugar, " * 60  # 420 characters before the change
    original, correction = excerpts(head + "LECITHN (soy).", head + "LECITHIN (soy).")
    assert "LECITHN" in original and "LECITHIN" in correction
    assert original.startswith("…") and len(original) <= 202
    assert original.index("LECITHN") == correction.index("LECITHIN")  # the same window
    # a change near the start: no leading cut
    assert excerpts("sugr, salt", "sugar, salt") == ("sugr, salt", "sugar, salt")


def test_the_import_checks_fail_when_their_figures_disagree(
    tmp_path: Path, instance: dg.DagsterInstance, pg_db: str
) -> None:
    """Each check compares figures read apart: the task files' rows (their footers) with the
    rows the import read, and the job's stored rows among themselves."""
    resources = make_resources(tmp_path, pg_db)
    defs = make_defs(resources)
    job_id = launched_job_id(launch(defs, instance, limit=60))
    (request,) = tick_until_done(defs, instance, resources)[0]
    first = run_request(defs, instance, request)
    assert all(c.passed for c in check_evaluations(first).values())

    def checks_again(attempt: int) -> dict[str, bool]:
        again = dg.RunRequest(**{**request._asdict(), "run_key": f"{request.run_key}-{attempt}"})
        return {
            n: c.passed for n, c in check_evaluations(run_request(defs, instance, again)).items()
        }

    # a task file changed after the import (one more row): the files no longer say what was read
    (task_file, *_) = sorted(
        (tmp_path / "staging" / JOB_TYPE / job_id / "output").rglob("*.parquet")
    )
    table = pq.read_table(task_file)
    pq.write_table(pa.concat_tables([table, table.slice(0, 1)]), task_file)
    assert checks_again(1)["rows_imported_match_output"] is False
    pq.write_table(table, task_file)
    assert checks_again(2) == {
        "batch_job_succeeded": True,
        "rows_imported_match_output": True,
        "no_duplicate_predictions": True,
        "no_rows_quarantined": True,
    }
    # two of the job's stored predictions made the same (barcode, type, lang, predictor, version)
    with psycopg.connect(pg_db) as conn:
        rows = conn.execute(
            "SELECT id, barcode, value_tag FROM prediction ORDER BY id LIMIT 2"
        ).fetchall()
        (_, barcode, lang), (other, _, _) = rows
        conn.execute(
            "UPDATE prediction SET barcode = %s, value_tag = %s WHERE id = %s",
            (barcode, lang, other),
        )
    assert checks_again(3)["no_duplicate_predictions"] is False
    # one of the job's stored predictions gone from Robotoff's table (deleted by hand): the
    # database no longer holds what the import inserted
    with psycopg.connect(pg_db) as conn:
        conn.execute("DELETE FROM prediction WHERE id = %s", (other,))
    assert checks_again(4)["rows_imported_match_output"] is False
