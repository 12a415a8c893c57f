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

from robotoff_batch.batch.engine import JobState
from robotoff_batch.definitions import build_definitions
from robotoff_batch.follow import partitions_def_name
from robotoff_batch.job_types import load_registry
from robotoff_batch.job_types.ingredients_spellcheck import SpellcheckLaunch
from robotoff_batch.paths import SAMPLE_DATA_DIR
from robotoff_batch.resources import (
    BatchEngineResource,
    LaunchSettingsResource,
    PredictionStoreResource,
    ProductDumpResource,
    StagingResource,
)

JOB_TYPE = "ingredients-spellcheck"
PARTITIONS = partitions_def_name(JOB_TYPE)


def make_resources(tmp_path: Path, database_url: str, dump: Path | None = None) -> dict[str, Any]:
    return {
        "product_dump": ProductDumpResource(
            path=str(dump or SAMPLE_DATA_DIR / "food_sample_2026.parquet")
        ),
        "staging": StagingResource(root_uri=(tmp_path / "staging").as_uri()),
        "batch_engine": BatchEngineResource(kind="local", state_dir=str(tmp_path / "batch")),
        "prediction_store": PredictionStoreResource(database_url=database_url),
        "launch_settings": LaunchSettingsResource(),
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
            ops={"ingredients_spellcheck__products": SpellcheckLaunch(**params)}
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
    """One sensor tick, its requests applied as the daemon would."""
    sensor = defs.get_sensor_def("batch_job_sensor")
    context = dg.build_sensor_context(instance=instance, cursor=cursor, resources=resources)
    result = sensor(context)
    assert isinstance(result, dg.SensorResult)
    for request in result.dynamic_partitions_requests or []:
        instance.add_dynamic_partitions(request.partitions_def_name, list(request.partition_keys))
    for event in result.asset_events or []:
        instance.report_runless_asset_event(event)
    return result


def tick_until_done(
    defs: dg.Definitions, instance: dg.DagsterInstance, resources: dict[str, Any]
) -> tuple[list[dg.RunRequest], list[str], str | None]:
    cursor: str | None = None
    states: list[str] = []
    requests: list[dg.RunRequest] = []
    for _ in range(240):
        result = tick(defs, instance, resources, cursor)
        cursor = result.cursor
        for event in result.asset_events or []:
            states.append(str(event.metadata["state"].value))
        requests += list(result.run_requests or [])
        if requests or any(s in ("FAILED", "DELETED") for s in states):
            return requests, states, cursor
        time.sleep(0.25)
    raise AssertionError(f"job did not finish; states seen: {states}")


def db_rows(database_url: str, job_id: str) -> list[dict[str, Any]]:
    with psycopg.connect(database_url) as conn:
        cur = conn.execute(
            "SELECT barcode, type, data, value_tag, predictor, predictor_version,"
            " automatic_processing, server_type FROM prediction WHERE predictor_version LIKE %s",
            (f"%@{job_id}",),
        )
        cols = [c.name for c in cur.description]
        return [dict(zip(cols, row, strict=True)) for row in cur.fetchall()]


def output_changes(staging_root: Path, job_id: str) -> dict[str, dict[str, Any]]:
    changed = {}
    for part in sorted((staging_root / JOB_TYPE / job_id / "output").glob("*.parquet")):
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

    requests, states, cursor = tick_until_done(defs, instance, resources)
    assert instance.has_dynamic_partition(PARTITIONS, job_id)
    assert states[-1] == "SUCCEEDED"
    order = ["QUEUED", "SCHEDULED", "RUNNING", "SUCCEEDED"]
    assert [order.index(s) for s in states] == sorted(order.index(s) for s in states)
    (request,) = requests
    assert request.run_key == f"import-{job_id}" and request.partition_key == job_id

    # a repeated tick changes nothing and requests nothing
    again = tick(defs, instance, resources, cursor)
    assert not again.run_requests and not again.asset_events

    # the batch job's partition carries its state history
    mat = instance.get_latest_materialization_event(
        dg.AssetKey(["ingredients_spellcheck", "batch_job"])
    )
    assert mat is not None and mat.asset_materialization.partition == job_id
    assert "SUCCEEDED" in str(mat.asset_materialization.metadata["state_history"].value)

    importer = defs.resolve_job_def("import_ingredients_spellcheck")
    imported = importer.execute_in_process(instance=instance, partition_key=job_id)
    assert imported.success
    checks = imported.get_asset_check_evaluations()
    assert {c.check_name: c.passed for c in checks} == {
        "rows_imported_match_output": True,
        "no_duplicate_predictions": True,
    }

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
        }
        assert row["type"] == "ingredient_spellcheck"
        assert row["value_tag"] == out["lang"]
        assert row["predictor"] == out["engine"]
        assert row["automatic_processing"] is False and row["server_type"] == "off"

    # importing the same job twice changes nothing
    twice = importer.execute_in_process(instance=instance, partition_key=job_id)
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


def test_failed_container_is_recorded_and_nothing_imported(
    tmp_path: Path, instance: dg.DagsterInstance, pg_db: str
) -> None:
    from datetime import UTC, datetime

    from robotoff_batch import pipeline
    from robotoff_batch.batch.request import make_job_id

    resources = make_resources(tmp_path, pg_db)
    defs = make_defs(resources)
    registered = load_registry()[JOB_TYPE]
    engine = resources["batch_engine"].get_engine()
    job_id = make_job_id(JOB_TYPE, launched_at=datetime.now(UTC))
    missing = (tmp_path / "staging" / "nope" / "input.parquet").as_uri()
    pipeline.submit_job(
        engine=engine,
        config=registered.config,
        job_type=JOB_TYPE,
        job_id=job_id,
        project="local",
        environment={"INPUT_FILE_PATH": missing, "OUTPUT_FILE_PATH": (tmp_path / "out").as_uri()},
        labels={},
    )
    requests, states, _ = tick_until_done(defs, instance, resources)
    assert states[-1] == "FAILED" and not requests
    obs = (
        instance.fetch_observations(dg.AssetKey(["ingredients_spellcheck", "batch_job"]), limit=1)
        .records[0]
        .asset_observation
    )
    assert obs.partition == job_id
    failure = str(obs.metadata["failure"].value)
    assert "container exited with code" in failure
    assert engine.get_job(job_id=job_id).state == JobState.FAILED

    importer = defs.resolve_job_def("import_ingredients_spellcheck")
    refused = importer.execute_in_process(
        instance=instance, partition_key=job_id, raise_on_error=False
    )
    assert not refused.success and "not SUCCEEDED" in failure_text(refused)
    assert db_rows(pg_db, job_id) == []


def test_bad_output_is_refused_whole_and_database_down_is_retried_once(
    tmp_path: Path, instance: dg.DagsterInstance, pg_db: str
) -> None:
    resources = make_resources(tmp_path, pg_db)
    defs = make_defs(resources)
    result = launch(defs, instance, limit=40)
    assert result.success, failure_text(result)
    job_id = launched_job_id(result)
    tick_until_done(defs, instance, resources)
    output = tmp_path / "staging" / JOB_TYPE / job_id / "output"

    # an extra output file with a null code, after good files: nothing at all is imported
    table = pq.read_table(next(output.glob("*.parquet")))
    index = table.schema.get_field_index("code")
    bad = table.set_column(index, "code", pa.array([None] * table.num_rows, pa.string()))
    pq.write_table(bad, output / "part-99999.parquet")
    importer = defs.resolve_job_def("import_ingredients_spellcheck")
    refused = importer.execute_in_process(
        instance=instance, partition_key=job_id, raise_on_error=False
    )
    assert not refused.success
    message = failure_text(refused)
    assert "part-99999.parquet" in message and "row 0" in message
    assert db_rows(pg_db, job_id) == []
    (output / "part-99999.parquet").unlink()

    # the database is down: a clear error without the password, nothing imported
    down = dict(resources)
    down["prediction_store"] = PredictionStoreResource(
        database_url="postgresql://robotoff:s3cret-pw@127.0.0.1:9/robotoff?connect_timeout=2"
    )
    down_defs = make_defs(down)
    failed = down_defs.resolve_job_def("import_ingredients_spellcheck").execute_in_process(
        instance=instance, partition_key=job_id, raise_on_error=False
    )
    assert not failed.success
    assert "s3cret-pw" not in failure_text(failed)

    # later, with the database back, the import happens, and exactly once
    ok = importer.execute_in_process(instance=instance, partition_key=job_id)
    assert ok.success
    n = len(db_rows(pg_db, job_id))
    assert n == len(output_changes(tmp_path / "staging", job_id))
    importer.execute_in_process(instance=instance, partition_key=job_id)
    assert len(db_rows(pg_db, job_id)) == n


def test_job_of_a_cancelled_run_is_cancelled(
    tmp_path: Path, instance: dg.DagsterInstance, pg_db: str
) -> None:
    """A batch job whose launching Dagster run was cancelled is cancelled: no orphan job."""
    # the image is played by a container that sleeps: the job runs when the sensor looks
    resources = make_resources(tmp_path, pg_db)
    image = load_registry()[JOB_TYPE].config.resources.container_image_uri
    resources["batch_engine"] = BatchEngineResource(
        kind="local",
        state_dir=str(tmp_path / "batch"),
        local_commands={image: [sys.executable, "-c", "import time; time.sleep(600)"]},
    )
    defs = make_defs(resources)
    result = launch(defs, instance, limit=10)
    assert result.success, failure_text(result)
    job_id = launched_job_id(result)
    engine = resources["batch_engine"].get_engine()
    run = instance.get_run_by_id(result.run_id)
    instance.report_run_canceled(run)
    first = tick(defs, instance, resources, None)
    assert engine.get_job(job_id=job_id).state == JobState.DELETED
    states = [str(e.metadata["state"].value) for e in first.asset_events]
    assert states == ["DELETED"] and not first.run_requests


def test_with_a_webhook_robotoff_imports_and_the_sensor_requests_nothing(
    tmp_path: Path, instance: dg.DagsterInstance, pg_db: str
) -> None:
    resources = make_resources(tmp_path, pg_db)
    defs = make_defs(resources)
    result = launch(defs, instance, limit=10)
    assert result.success, failure_text(result)
    with_webhook = dict(resources)
    with_webhook["launch_settings"] = LaunchSettingsResource(
        webhook_url="https://robotoff.example/api/v1/batch/import"
    )
    cursor: str | None = None
    states: list[str] = []
    for _ in range(120):
        tick_result = tick(defs, instance, with_webhook, cursor)
        cursor = tick_result.cursor
        assert not tick_result.run_requests
        states += [str(e.metadata["state"].value) for e in tick_result.asset_events or []]
        if "SUCCEEDED" in states:
            break
        time.sleep(0.25)
    assert states[-1] == "SUCCEEDED"
