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
from robotoff_batch.predictions.model import (
    ImportResult,
    PredictionImportError,
    PredictionStoreError,
    PredictionStoreUnavailable,
)
from robotoff_batch.predictions.store import PredictionStore
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
            "predictor_version": pa.array(["lexicon-cpu-1.0"] * n, pa.string()),
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


# Robotoff's tables after its migrations (shared/reference/robotoff_import.md §3):
# column -> (type, nullable); no column has an SQL default.
ROBOTOFF_PREDICTION = {
    "id": ("integer", False),
    "barcode": ("character varying(100)", False),
    "type": ("character varying(256)", False),
    "data": ("jsonb", False),
    "timestamp": ("timestamp without time zone", False),
    "value_tag": ("text", True),
    "value": ("text", True),
    "source_image": ("text", True),
    "automatic_processing": ("boolean", True),
    "predictor": ("character varying(100)", True),
    "predictor_version": ("character varying(100)", True),
    "confidence": ("real", True),
    "server_type": ("character varying(10)", False),
}
ROBOTOFF_INSIGHT = {
    "id": ("uuid", False),
    "barcode": ("character varying(100)", False),
    "type": ("character varying(256)", False),
    "data": ("jsonb", False),
    "timestamp": ("timestamp without time zone", True),
    "completed_at": ("timestamp without time zone", True),
    "annotation": ("integer", True),
    "annotated_result": ("integer", True),
    "n_votes": ("integer", False),
    "username": ("text", True),
    "countries": ("jsonb", True),
    "brands": ("jsonb", True),
    "process_after": ("timestamp without time zone", True),
    "value_tag": ("text", True),
    "value": ("text", True),
    "source_image": ("text", True),
    "automatic_processing": ("boolean", False),
    "server_type": ("character varying(10)", True),
    "unique_scans_n": ("integer", False),
    "reserved_barcode": ("boolean", False),
    "predictor": ("character varying(100)", True),
    "predictor_version": ("character varying(100)", True),
    "campaign": ("jsonb", True),
    "confidence": ("real", True),
    "bounding_box": ("jsonb", True),
    "lc": ("character varying(255)[]", True),
    "with_image": ("boolean", True),
}
# Indexed columns after migrations 004/005/008/009 (GIN where Robotoff keeps a GIN index).
PREDICTION_INDEXES = {"barcode", "type", "timestamp", "server_type"}
INSIGHT_INDEXES = {
    "barcode", "type", "timestamp", "annotation", "n_votes", "countries:gin", "brands:gin",
    "value_tag", "value", "source_image", "automatic_processing", "server_type",
    "unique_scans_n", "reserved_barcode", "predictor", "campaign:gin", "lc:gin", "with_image",
}  # fmt: skip


def table_shape(url: str, table: str) -> tuple[dict[str, tuple[str, bool]], list[str], set[str]]:
    """(column -> (type, nullable), columns with a default other than a serial's, indexes)."""
    with psycopg.connect(url) as conn:
        columns = {
            name: (kind, not notnull)
            for name, kind, notnull in conn.execute(
                "SELECT attname, format_type(atttypid, atttypmod), attnotnull FROM pg_attribute "
                "WHERE attrelid = %s::regclass AND attnum > 0 AND NOT attisdropped",
                (table,),
            )
        }
        defaults = [
            name
            for name, default in conn.execute(
                "SELECT column_name, column_default FROM information_schema.columns "
                "WHERE table_name = %s AND column_default IS NOT NULL",
                (table,),
            )
            if not str(default).startswith("nextval(")
        ]
        indexes = set()
        for (definition,) in conn.execute(
            "SELECT indexdef FROM pg_indexes WHERE tablename = %s AND indexname NOT LIKE '%%_pkey'",
            (table,),
        ):
            column = definition.rsplit("(", 1)[1].rstrip(")").strip('"')
            indexes.add(f"{column}:gin" if "USING gin" in definition else column)
    return columns, defaults, indexes


def test_schema_is_robotoffs_and_idempotent(pg_db: str) -> None:
    store = PredictionStore(conninfo=pg_db)
    store.ensure_schema()
    store.ensure_schema()
    PredictionStore(conninfo=pg_db).ensure_schema()
    assert table_shape(pg_db, "prediction") == (ROBOTOFF_PREDICTION, [], PREDICTION_INDEXES)
    assert table_shape(pg_db, "product_insight") == (ROBOTOFF_INSIGHT, [], INSIGHT_INDEXES)
    assert store.owned_tables() == {"prediction", "product_insight"}


def catalog_snapshot(url: str) -> list[tuple[object, ...]]:
    """Every column, default and index of Robotoff's tables, to compare before/after."""
    with psycopg.connect(url) as conn:
        return conn.execute(
            "SELECT c.table_name, c.column_name, c.data_type, c.is_nullable, c.column_default, "
            "(SELECT string_agg(indexdef, '; ' ORDER BY indexname) FROM pg_indexes i "
            " WHERE i.tablename = c.table_name) "
            "FROM information_schema.columns c "
            "WHERE c.table_name IN ('prediction', 'product_insight') "
            "ORDER BY c.table_name, c.column_name"
        ).fetchall()


ROBOTOFF_LIKE_DDL = (
    # Robotoff's own tables, with a column and an index of their own that we must not touch.
    "CREATE TABLE prediction (id serial PRIMARY KEY, barcode varchar(100) NOT NULL, "
    "type varchar(256) NOT NULL, data jsonb NOT NULL, timestamp timestamp NOT NULL, "
    "value_tag text, value text, source_image text, automatic_processing boolean, "
    "predictor varchar(100), predictor_version varchar(100), confidence real, "
    "server_type varchar(10) NOT NULL, image_id integer);"
    "CREATE INDEX robotoff_own ON prediction (predictor_version);"
    "CREATE TABLE product_insight (id uuid PRIMARY KEY, barcode varchar(100) NOT NULL, "
    "type varchar(256) NOT NULL, data jsonb NOT NULL, timestamp timestamp, completed_at "
    "timestamp, annotation integer, annotated_result integer, n_votes integer NOT NULL, "
    "username text, countries jsonb, brands jsonb, process_after timestamp, value_tag text, "
    "value text, source_image text, automatic_processing boolean NOT NULL, server_type "
    "varchar(10), unique_scans_n integer NOT NULL, reserved_barcode boolean NOT NULL, "
    "predictor varchar(100), predictor_version varchar(100), campaign jsonb, confidence real, "
    "bounding_box jsonb, lc varchar(255)[], with_image boolean)"
)


def test_existing_robotoff_tables_are_never_altered(pg_db: str) -> None:
    with psycopg.connect(pg_db) as conn:
        conn.execute(ROBOTOFF_LIKE_DDL)
    before = catalog_snapshot(pg_db)
    store = PredictionStore(conninfo=pg_db)
    store.ensure_schema()
    assert catalog_snapshot(pg_db) == before
    assert store.owned_tables() == set()
    result = store.import_predictions(batch_job_id=JOB, job_type="x", batches=batches(10, 10))
    assert result.predictions == 10 and store.count_predictions(batch_job_id=JOB) == 10
    assert catalog_snapshot(pg_db) == before


def test_table_lacking_columns_is_refused_not_altered(pg_db: str) -> None:
    with psycopg.connect(pg_db) as conn:
        conn.execute(
            "CREATE TABLE prediction (id serial PRIMARY KEY, barcode varchar(100) NOT NULL, "
            "type varchar(256) NOT NULL, data jsonb NOT NULL, timestamp timestamp NOT NULL)"
        )
    before = catalog_snapshot(pg_db)
    with pytest.raises(
        PredictionStoreError, match=r"lacks column\(s\) \['value_tag'.*never alters"
    ):
        PredictionStore(conninfo=pg_db).ensure_schema()
    assert catalog_snapshot(pg_db) == before


def test_our_earlier_embedded_table_is_upgraded(pg_db: str) -> None:
    """The table robotoff-batch itself created before (GIN index, job id in the version)."""
    with psycopg.connect(pg_db) as conn:
        conn.execute(
            "CREATE TABLE prediction (id serial PRIMARY KEY, barcode varchar(100) NOT NULL, "
            "type varchar(256) NOT NULL, data jsonb NOT NULL, timestamp timestamp NOT NULL, "
            "value_tag text, value text, source_image text, automatic_processing boolean, "
            "predictor varchar(100), predictor_version varchar(100), confidence double "
            "precision, server_type varchar(10) NOT NULL DEFAULT 'off');"
            "CREATE INDEX prediction_barcode ON prediction (barcode);"
            "CREATE INDEX prediction_type ON prediction (type);"
            "CREATE INDEX prediction_data ON prediction USING gin (data);"
            "CREATE INDEX prediction_timestamp ON prediction (timestamp);"
            "CREATE INDEX prediction_source_image ON prediction (source_image);"
            "CREATE INDEX prediction_server_type ON prediction (server_type);"
            "CREATE INDEX prediction_batch_job_id "
            "ON prediction ((substring(predictor_version FROM '@([^@]+)$')));"
            "INSERT INTO prediction (barcode, type, data, timestamp, predictor_version) "
            "SELECT i::text, 'ingredient_spellcheck', '{}', now(), "
            "CASE WHEN i % 3 = 0 THEN 'lexicon-cpu-1@other-job' ELSE 'lexicon-cpu-1@old-job' END "
            "FROM generate_series(1, 10) AS i"  # interleaved ids: ranges with gaps
        )
    store = PredictionStore(conninfo=pg_db)
    store.ensure_schema()
    assert table_shape(pg_db, "prediction") == (ROBOTOFF_PREDICTION, [], PREDICTION_INDEXES)
    assert store.count_predictions(batch_job_id="old-job") == 7
    assert store.count_predictions(batch_job_id="other-job") == 3
    assert {r["barcode"] for r in store.fetch_examples(batch_job_id="other-job")} == {"3", "6", "9"}
    assert store.fetch_examples(batch_job_id="old-job")[0]["predictor_version"] == "lexicon-cpu-1"


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
    assert store.count_predictions(batch_job_id="other-job") == 0
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

    with pytest.raises(
        PredictionImportError, match=r"predictions row 242: null or empty 'barcode'"
    ):
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


def test_optional_columns_default(store: PredictionStore, pg_db: str) -> None:
    batch = make_batch(0, 3).select(["barcode", "type", "data", "predictor_version"])
    batch = batch.set_column(3, "predictor_version", pa.array(["v1", None, "v2"]))
    store.import_predictions(batch_job_id=JOB, job_type="spell", batches=[batch])
    with psycopg.connect(pg_db) as conn:
        rows = conn.execute(
            "SELECT predictor_version, server_type, timestamp IS NOT NULL FROM prediction "
            "ORDER BY id"
        ).fetchall()
    assert rows == [("v1", "off", True), (None, "off", True), ("v2", "off", True)]
    assert store.count_predictions(batch_job_id=JOB) == 3


def test_too_long_barcode_is_named(store: PredictionStore) -> None:
    batch = make_batch(0, 4)
    batch = batch.set_column(0, "barcode", pa.array(["1", "2", "3" * 101, "4"]))
    with pytest.raises(PredictionImportError, match=r"row 2: 'barcode' is longer than 100"):
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


def test_refused_credentials_are_an_auth_error_not_an_outage(pg_db: str) -> None:
    """Retrying cannot fix a wrong role or password: a distinct error, the reason kept."""
    from psycopg.conninfo import conninfo_to_dict, make_conninfo

    from robotoff_batch.predictions.model import PredictionStoreAuthError

    params = conninfo_to_dict(pg_db)
    params.update(user="no_such_role", password="s3cret-pw")
    store = PredictionStore(conninfo=make_conninfo(**params))
    with pytest.raises(
        PredictionStoreAuthError, match='role "no_such_role" does not exist'
    ) as info:
        store.ensure_schema()
    assert not isinstance(info.value, PredictionStoreUnavailable)
    assert "s3cret-pw" not in str(info.value)
