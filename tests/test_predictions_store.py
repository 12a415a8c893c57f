"""The prediction store and the embedded PostgreSQL, against a real server (no mocks)."""

from __future__ import annotations

import json
import shutil
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from datetime import datetime
from pathlib import Path

import psycopg
import pyarrow as pa
import pytest

from robotoff_batch.predictions.embedded import (
    _socket_dir_for,
    ensure_embedded_postgres,
    stop_embedded_postgres,
)
from robotoff_batch.predictions.store import (
    ImportResult,
    PredictionImportError,
    PredictionStore,
    PredictionStoreError,
    PredictionStoreUnavailable,
)
from tests.pg_fixtures import private_tmp_dir

JOB = "ingredients-spellcheck-20261124t101500-ab12"
TS = datetime(2026, 11, 24, 10, 15)


def make_batch(start: int, n: int, *, null_barcode_at: int | None = None) -> pa.RecordBatch:
    """``n`` spellcheck-like predictions, barcodes numbered from ``start``."""
    barcodes: list[str | None] = [f"{3000000000000 + i}" for i in range(start, start + n)]
    if null_barcode_at is not None:
        barcodes[null_barcode_at] = None
    data = [
        json.dumps({"original": f"sucre {i}", "correction": f"sucre{i}", "lang": "fr"})
        for i in range(start, start + n)
    ]
    return pa.RecordBatch.from_pydict(
        {
            "barcode": pa.array(barcodes, pa.string()),
            "type": pa.array(["ingredient_spellcheck"] * n, pa.string()),
            "data": pa.array(data, pa.string()),
            "timestamp": pa.array([TS] * n, pa.timestamp("us")),
            "value_tag": pa.array(["en:fr"] * n, pa.string()),
            "value": pa.array([None] * n, pa.string()),
            "source_image": pa.array([None] * n, pa.string()),
            "automatic_processing": pa.array([False] * n, pa.bool_()),
            "predictor": pa.array(["lexicon-cpu"] * n, pa.string()),
            "predictor_version": pa.array([f"lexicon-cpu-1.0@{JOB}"] * n, pa.string()),
            "confidence": pa.array([0.5] * n, pa.float64()),
            "server_type": pa.array(["off"] * n, pa.string()),
        }
    )


def batches(total: int, size: int) -> Iterator[pa.RecordBatch]:
    for start in range(0, total, size):
        yield make_batch(start, min(size, total - start))


def rows_in(url: str) -> int:
    with psycopg.connect(url) as conn:
        row = conn.execute("SELECT count(*) FROM prediction").fetchone()
    assert row is not None
    return int(row[0])


def ledger_rows(url: str) -> list[tuple[object, ...]]:
    with psycopg.connect(url) as conn:
        return conn.execute(
            "SELECT batch_job_id, job_type, predictions, source_rows, skipped_rows "
            "FROM batch_job_import ORDER BY batch_job_id"
        ).fetchall()


@pytest.fixture
def store(pg_db: str) -> PredictionStore:
    s = PredictionStore(conninfo=pg_db)
    s.ensure_schema()
    return s


def test_schema_is_idempotent(pg_db: str) -> None:
    store = PredictionStore(conninfo=pg_db)
    store.ensure_schema()
    store.ensure_schema()
    PredictionStore(conninfo=pg_db).ensure_schema()
    with psycopg.connect(pg_db) as conn:
        cols = {
            r[0]
            for r in conn.execute(
                "SELECT column_name FROM information_schema.columns WHERE table_name = 'prediction'"
            )
        }
        indexes = {r[0] for r in conn.execute("SELECT indexname FROM pg_indexes")}
    assert {"barcode", "type", "data", "timestamp", "predictor_version", "server_type"} <= cols
    assert {"prediction_barcode", "prediction_type", "prediction_server_type"} <= indexes


def test_schema_on_existing_robotoff_table_keeps_it(pg_db: str) -> None:
    """An older Robotoff table with extra columns: nothing dropped, missing ones added."""
    with psycopg.connect(pg_db) as conn:
        conn.execute(
            "CREATE TABLE prediction (id serial PRIMARY KEY, barcode varchar(100) NOT NULL, "
            "type varchar(256) NOT NULL, data jsonb NOT NULL, timestamp timestamp NOT NULL, "
            "value_tag text, value text, source_image text, automatic_processing boolean, "
            "predictor varchar(100), predictor_version varchar(100), image_id integer)"
        )
    PredictionStore(conninfo=pg_db).ensure_schema()
    with psycopg.connect(pg_db) as conn:
        cols = {
            r[0]
            for r in conn.execute(
                "SELECT column_name FROM information_schema.columns WHERE table_name = 'prediction'"
            )
        }
        indexes = {r[0] for r in conn.execute("SELECT indexname FROM pg_indexes")}
    assert {"image_id", "confidence", "server_type"} <= cols
    assert "prediction_barcode" not in indexes  # an existing table's indexes are its own


def test_import_rows_with_jsonb(store: PredictionStore, pg_db: str) -> None:
    stats = {"source_rows": 2600, "skipped_rows": 100}
    result = store.import_predictions(
        batch_job_id=JOB,
        job_type="ingredients-spellcheck",
        batches=batches(2500, 1000),
        source_stats=stats,
    )
    assert isinstance(result, ImportResult)
    assert (result.batch_job_id, result.predictions, result.already_imported) == (JOB, 2500, False)
    assert rows_in(pg_db) == 2500
    assert store.count_predictions(batch_job_id=JOB) == 2500
    assert store.count_predictions(batch_job_id="other-job") == 0
    assert store.duplicate_predictions(batch_job_id=JOB) == 0
    assert store.duplicate_predictions(predictor_version_like="lexicon-cpu-%") == 0
    with psycopg.connect(pg_db) as conn:
        row = conn.execute(
            "SELECT data->>'correction', jsonb_typeof(data), timestamp, server_type "
            "FROM prediction WHERE barcode = %s",
            ("3000000000007",),
        ).fetchone()
    assert row == ("sucre7", "object", TS, "off")
    examples = store.fetch_examples(batch_job_id=JOB, limit=3)
    assert len(examples) == 3
    assert examples[0]["data"]["lang"] == "fr"
    json.dumps(examples)  # JSON-ready for Dagster metadata
    assert ledger_rows(pg_db) == [(JOB, "ingredients-spellcheck", 2500, 2600, 100)]
    recorded = store.imported_job(JOB)
    assert recorded is not None and recorded.predictions == 2500 and recorded.already_imported
    assert store.imported_job("never-imported") is None


def test_second_import_of_same_job_changes_nothing(store: PredictionStore, pg_db: str) -> None:
    first = store.import_predictions(
        batch_job_id=JOB, job_type="ingredients-spellcheck", batches=batches(300, 100)
    )
    consumed = []

    def spy() -> Iterator[pa.RecordBatch]:
        for b in batches(300, 100):
            consumed.append(b)
            yield b

    second = store.import_predictions(
        batch_job_id=JOB, job_type="ingredients-spellcheck", batches=spy()
    )
    assert first.predictions == 300 and not first.already_imported
    assert second.already_imported and second.predictions == 300
    assert consumed == []  # the output is not even read again
    assert rows_in(pg_db) == 300
    assert len(ledger_rows(pg_db)) == 1


def test_null_barcode_in_third_batch_imports_nothing(store: PredictionStore, pg_db: str) -> None:
    def stream() -> Iterator[pa.RecordBatch]:
        yield make_batch(0, 100)
        yield make_batch(100, 100)
        yield make_batch(200, 100, null_barcode_at=42)

    with pytest.raises(PredictionImportError, match=r"null 'barcode' at row 242"):
        store.import_predictions(
            batch_job_id=JOB, job_type="ingredients-spellcheck", batches=stream()
        )
    assert rows_in(pg_db) == 0
    assert ledger_rows(pg_db) == []
    # and the job can be imported once fixed
    ok = store.import_predictions(
        batch_job_id=JOB, job_type="ingredients-spellcheck", batches=batches(300, 100)
    )
    assert ok.predictions == 300


def test_missing_column_is_named(store: PredictionStore, pg_db: str) -> None:
    bad = make_batch(0, 10).drop_columns(["data"])
    with pytest.raises(PredictionImportError, match=r"missing required column\(s\) 'data'"):
        store.import_predictions(batch_job_id=JOB, job_type="x", batches=[make_batch(10, 5), bad])
    assert rows_in(pg_db) == 0 and ledger_rows(pg_db) == []


def test_invalid_json_is_refused_whole(store: PredictionStore, pg_db: str) -> None:
    bad = make_batch(5, 5).set_column(2, "data", pa.array(["{not json"] * 5, pa.string()))
    with pytest.raises(PredictionImportError, match="nothing was imported"):
        store.import_predictions(batch_job_id=JOB, job_type="x", batches=[make_batch(0, 5), bad])
    assert rows_in(pg_db) == 0 and ledger_rows(pg_db) == []


def test_optional_columns_default_and_version_gets_job_suffix(
    store: PredictionStore, pg_db: str
) -> None:
    batch = make_batch(0, 3).select(["barcode", "type", "data", "predictor_version"])
    batch = batch.set_column(3, "predictor_version", pa.array(["v1", None, f"v2@{JOB}"]))
    store.import_predictions(batch_job_id=JOB, job_type="spell", batches=[batch])
    with psycopg.connect(pg_db) as conn:
        rows = conn.execute(
            "SELECT predictor_version, server_type, timestamp IS NOT NULL FROM prediction "
            "ORDER BY id"
        ).fetchall()
    assert rows == [
        (f"v1@{JOB}", "off", True),
        (f"spell@{JOB}", "off", True),
        (f"v2@{JOB}", "off", True),
    ]
    assert store.count_predictions(batch_job_id=JOB) == 3


def test_too_long_barcode_is_named(store: PredictionStore) -> None:
    batch = make_batch(0, 4)
    batch = batch.set_column(0, "barcode", pa.array(["1", "2", "3" * 101, "4"]))
    with pytest.raises(PredictionImportError, match=r"'barcode' at row 2 is longer than 100"):
        store.import_predictions(batch_job_id=JOB, job_type="x", batches=[batch])


def test_concurrent_imports_of_same_job_import_once(store: PredictionStore, pg_db: str) -> None:
    results: list[ImportResult] = []
    errors: list[BaseException] = []
    start = threading.Barrier(2)

    def slow_batches() -> Iterator[pa.RecordBatch]:
        for b in batches(2000, 500):
            time.sleep(0.05)  # keep the first transaction open while the other one arrives
            yield b

    def run() -> None:
        try:
            start.wait()
            s = PredictionStore(conninfo=pg_db)
            results.append(
                s.import_predictions(batch_job_id=JOB, job_type="x", batches=slow_batches())
            )
        except BaseException as exc:  # noqa: BLE001 - reported below
            errors.append(exc)

    threads = [threading.Thread(target=run) for _ in range(2)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(30)
    assert errors == []
    assert sorted(r.already_imported for r in results) == [False, True]
    assert all(r.predictions == 2000 for r in results)
    assert rows_in(pg_db) == 2000
    assert store.duplicate_predictions(batch_job_id=JOB) == 0


def _closed_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def test_unreachable_database_is_clear_and_hides_password() -> None:
    port = _closed_port()
    store = PredictionStore(
        conninfo=f"postgresql://robotoff:s3cret-pw@127.0.0.1:{port}/robotoff", connect_timeout=2
    )
    with pytest.raises(PredictionStoreUnavailable) as info:
        store.ensure_schema()
    message = str(info.value)
    assert "s3cret-pw" not in message
    assert "127.0.0.1" in message and str(port) in message
    assert isinstance(info.value, PredictionStoreError)
    assert info.value.__cause__ is None  # psycopg's exception (with the conninfo) not chained
    with pytest.raises(PredictionStoreUnavailable) as info2:
        store.import_predictions(batch_job_id=JOB, job_type="x", batches=[])
    assert "s3cret-pw" not in str(info2.value)
    assert "s3cret-pw" not in repr(store)


def test_embedded_server_is_reused(pg_conninfo: str, pg_data_dir: Path) -> None:
    pid_before = (pg_data_dir / "postmaster.pid").read_text().splitlines()[0]
    assert ensure_embedded_postgres(pg_data_dir) == pg_conninfo
    code = (
        "import sys; from pathlib import Path;"
        "from robotoff_batch.predictions.embedded import ensure_embedded_postgres;"
        "print(ensure_embedded_postgres(Path(sys.argv[1])))"
    )
    out = subprocess.run(
        [sys.executable, "-c", code, str(pg_data_dir)],
        capture_output=True,
        text=True,
        check=True,
        timeout=60,
    )
    assert out.stdout.strip() == pg_conninfo
    assert (pg_data_dir / "postmaster.pid").read_text().splitlines()[0] == pid_before
    with psycopg.connect(pg_conninfo) as conn:
        assert conn.execute("SELECT current_database()").fetchone() == ("robotoff",)


def test_embedded_server_outlives_its_starter_and_long_paths() -> None:
    """Started by two racing subprocesses that exit; a long data dir gets a short socket dir."""
    base = private_tmp_dir("robotoff-batch-test-pg-")
    data_dir = base / ("long-directory-name-" * 5) / "postgres"
    assert str(_socket_dir_for(data_dir)).startswith("/tmp/robotoff-batch-pg-")
    code = (
        "import sys; from pathlib import Path;"
        "from robotoff_batch.predictions.embedded import ensure_embedded_postgres;"
        "print(ensure_embedded_postgres(Path(sys.argv[1])))"
    )
    try:
        starters = [
            subprocess.Popen(
                [sys.executable, "-c", code, str(data_dir)],
                stdout=subprocess.PIPE,
                stderr=subprocess.PIPE,
                text=True,
            )
            for _ in range(2)
        ]  # two processes at once on a fresh data dir: one initdb, one server
        outputs = [p.communicate(timeout=90) for p in starters]
        assert [p.returncode for p in starters] == [0, 0], outputs
        urls = {out.strip() for out, _ in outputs}
        assert len(urls) == 1
        url = urls.pop()
        with psycopg.connect(url) as conn:  # the starter has exited; the server has not
            assert conn.execute("SELECT 1").fetchone() == (1,)
        assert ensure_embedded_postgres(data_dir) == url
        assert stop_embedded_postgres(data_dir)
        assert not stop_embedded_postgres(data_dir)
    finally:
        stop_embedded_postgres(data_dir)
        shutil.rmtree(base, ignore_errors=True)


def test_large_import(store: PredictionStore, pg_db: str) -> None:
    n = 100_000
    prepared = list(batches(n, 10_000))
    started = time.perf_counter()
    result = store.import_predictions(batch_job_id=JOB, job_type="x", batches=prepared)
    elapsed = time.perf_counter() - started
    assert result.predictions == n
    assert store.count_predictions(batch_job_id=JOB) == n
    print(f"\nimported {n} predictions in {elapsed:.2f} s: {n / elapsed:,.0f} rows/s")
