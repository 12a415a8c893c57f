"""Robotoff's ``prediction`` table, written to once per batch job.

One transaction per batch job: it claims the job in the ledger table ``batch_job_import``
(``INSERT ... ON CONFLICT DO NOTHING``; a concurrent import of the same job waits on that row and
then finds it), streams the predictions with ``COPY ... FROM STDIN`` and records the counts. Any
error rolls all of it back, so a job is imported entirely, once, or not at all.

The link between a prediction and its batch job is the end of ``predictor_version``:
``"<version>@<batch job id>"`` (e.g. ``lexicon-cpu-1.0@ingredients-spellcheck-20261124t101500``);
the store appends ``@<batch job id>`` to a version that lacks it.

All SQL is constant (this module, ``schema.sql``, ``prediction_indexes.sql``); values are always
bound parameters. Messages never contain the password of the connection string.
"""

from __future__ import annotations

import json
import logging
import time
from collections.abc import Iterable, Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import UTC, datetime
from importlib import resources
from typing import Any

import psycopg
import pyarrow as pa
import pyarrow.compute as pc
from psycopg.conninfo import conninfo_to_dict
from psycopg.rows import dict_row

logger = logging.getLogger(__name__)

#: Columns of Robotoff's ``prediction`` table a batch may carry, in COPY order.
PREDICTION_COLUMNS: tuple[str, ...] = (
    "barcode",
    "type",
    "data",
    "timestamp",
    "value_tag",
    "value",
    "source_image",
    "automatic_processing",
    "predictor",
    "predictor_version",
    "confidence",
    "server_type",
)
#: Columns every batch must have (the others default: timestamp = import time, server_type =
#: 'off', predictor_version = '<job type>@<batch job id>', the rest NULL).
REQUIRED_COLUMNS: tuple[str, ...] = ("barcode", "type", "data")
#: Columns that may not hold a null.
NOT_NULL_COLUMNS: tuple[str, ...] = ("barcode", "type", "data")
#: varchar(n) limits of Robotoff's table, checked before COPY for a clear message.
MAX_LENGTHS: dict[str, int] = {
    "barcode": 100,
    "type": 256,
    "predictor": 100,
    "predictor_version": 100,
    "server_type": 10,
}
_TEXT_COLUMNS = (
    "barcode",
    "type",
    "value_tag",
    "value",
    "source_image",
    "predictor",
    "predictor_version",
    "server_type",
)
DEFAULT_SERVER_TYPE = "off"

_SCHEMA_LOCK_KEY = 7_286_114_052_117_303  # pg_advisory_xact_lock key of ensure_schema
_BATCH_JOB_EXPR = "substring(predictor_version FROM '@([^@]+)$')"  # same as the index

_IMPORTED_JOBS_SQL = "SELECT batch_job_id FROM batch_job_import WHERE batch_job_id = ANY(%s)"
_TABLE_EXISTS_SQL = "SELECT to_regclass('prediction') IS NOT NULL"
_EXISTING_COLUMNS_SQL = """
SELECT table_name, column_name FROM information_schema.columns
WHERE table_schema = current_schema() AND table_name IN ('prediction', 'batch_job_import')
"""
# Columns an older table may lack: added only when missing (never dropped or altered).
_UPGRADES: dict[tuple[str, str], str] = {
    ("prediction", "value_tag"): "ALTER TABLE prediction ADD COLUMN IF NOT EXISTS value_tag text",
    ("prediction", "value"): "ALTER TABLE prediction ADD COLUMN IF NOT EXISTS value text",
    ("prediction", "source_image"): (
        "ALTER TABLE prediction ADD COLUMN IF NOT EXISTS source_image text"
    ),
    ("prediction", "automatic_processing"): (
        "ALTER TABLE prediction ADD COLUMN IF NOT EXISTS automatic_processing boolean"
    ),
    ("prediction", "predictor"): (
        "ALTER TABLE prediction ADD COLUMN IF NOT EXISTS predictor varchar(100)"
    ),
    ("prediction", "predictor_version"): (
        "ALTER TABLE prediction ADD COLUMN IF NOT EXISTS predictor_version varchar(100)"
    ),
    ("prediction", "confidence"): (
        "ALTER TABLE prediction ADD COLUMN IF NOT EXISTS confidence double precision"
    ),
    ("prediction", "server_type"): (
        "ALTER TABLE prediction ADD COLUMN IF NOT EXISTS "
        "server_type varchar(10) NOT NULL DEFAULT 'off'"
    ),
    ("batch_job_import", "job_type"): (
        "ALTER TABLE batch_job_import ADD COLUMN IF NOT EXISTS job_type text NOT NULL DEFAULT ''"
    ),
    ("batch_job_import", "imported_at"): (
        "ALTER TABLE batch_job_import ADD COLUMN IF NOT EXISTS "
        "imported_at timestamptz NOT NULL DEFAULT now()"
    ),
    ("batch_job_import", "predictions"): (
        "ALTER TABLE batch_job_import ADD COLUMN IF NOT EXISTS "
        "predictions integer NOT NULL DEFAULT 0"
    ),
    ("batch_job_import", "source_rows"): (
        "ALTER TABLE batch_job_import ADD COLUMN IF NOT EXISTS "
        "source_rows integer NOT NULL DEFAULT 0"
    ),
    ("batch_job_import", "skipped_rows"): (
        "ALTER TABLE batch_job_import ADD COLUMN IF NOT EXISTS "
        "skipped_rows integer NOT NULL DEFAULT 0"
    ),
}

_CLAIM_SQL = """
INSERT INTO batch_job_import (batch_job_id, job_type, predictions, source_rows, skipped_rows)
VALUES (%s, %s, 0, 0, 0)
ON CONFLICT (batch_job_id) DO NOTHING
RETURNING batch_job_id
"""
_RECORD_SQL = """
UPDATE batch_job_import SET predictions = %s, source_rows = %s, skipped_rows = %s,
    imported_at = now()
WHERE batch_job_id = %s
"""
_LEDGER_SQL = """
SELECT batch_job_id, job_type, imported_at, predictions, source_rows, skipped_rows
FROM batch_job_import WHERE batch_job_id = %s
"""
_COPY_SQL = (
    'COPY prediction (barcode, type, data, "timestamp", value_tag, value, source_image, '
    "automatic_processing, predictor, predictor_version, confidence, server_type) FROM STDIN"
)
_COUNT_SQL = f"SELECT count(*) FROM prediction WHERE {_BATCH_JOB_EXPR} = %s"
_DUPLICATES_BY_JOB_SQL = f"""
SELECT count(*) FROM (
    SELECT 1 FROM prediction WHERE {_BATCH_JOB_EXPR} = %s
    GROUP BY barcode, type, predictor_version HAVING count(*) > 1
) AS duplicate_groups
"""
_DUPLICATES_BY_VERSION_SQL = """
SELECT count(*) FROM (
    SELECT 1 FROM prediction WHERE predictor_version LIKE %s
    GROUP BY barcode, type, predictor_version HAVING count(*) > 1
) AS duplicate_groups
"""
_EXAMPLES_SQL = f"""
SELECT id, barcode, type, data, "timestamp", value_tag, value, source_image,
    automatic_processing, predictor, predictor_version, confidence, server_type
FROM prediction WHERE {_BATCH_JOB_EXPR} = %s ORDER BY id LIMIT %s
"""


class PredictionStoreError(Exception):
    """Base error of the prediction store."""


class PredictionStoreUnavailable(PredictionStoreError):
    """The database is down, unreachable or refused the connection."""


class PredictionImportError(PredictionStoreError):
    """The predictions were refused (nothing of the job was imported)."""


@dataclass(frozen=True)
class ImportResult:
    """Outcome of one job's import (or of the earlier import of that job)."""

    batch_job_id: str
    predictions: int
    already_imported: bool
    duration_s: float
    job_type: str = ""
    source_rows: int = 0
    skipped_rows: int = 0
    imported_at: datetime | None = None


def _load_sql(name: str) -> str:
    return resources.files(__package__ or "robotoff_batch.predictions").joinpath(name).read_text()


def describe_conninfo(conninfo: str) -> str:
    """Where ``conninfo`` points (host or socket, port, database, user), never the password."""
    try:
        params = conninfo_to_dict(conninfo)
    except psycopg.Error:
        return "an unparsable connection string"
    host = params.get("host") or params.get("hostaddr") or "the default socket"
    parts = [f"host={host}"]
    for key in ("port", "dbname", "user"):
        if params.get(key):
            parts.append(f"{key}={params[key]}")
    return " ".join(parts)


def _password_of(conninfo: str) -> str | None:
    try:
        password = conninfo_to_dict(conninfo).get("password")
    except psycopg.Error:
        return None
    return str(password) if password else None


class PredictionStore:
    """Robotoff's ``prediction`` table plus the ``batch_job_import`` ledger, in PostgreSQL."""

    def __init__(self, *, conninfo: str, connect_timeout: int = 10) -> None:
        self._conninfo = conninfo
        self._connect_timeout = connect_timeout
        self._target = describe_conninfo(conninfo)
        self._password = _password_of(conninfo)
        self._schema_ready = False

    def __repr__(self) -> str:
        return f"PredictionStore({self._target})"

    # -- connections and errors --------------------------------------------------------------

    def _scrub(self, text: str) -> str:
        if self._password:
            text = text.replace(self._password, "***")
        return text

    @contextmanager
    def _connection(self, action: str) -> Iterator[psycopg.Connection[Any]]:
        """A connection; psycopg errors become this module's errors (password removed)."""
        try:
            conn = psycopg.connect(self._conninfo, connect_timeout=self._connect_timeout)
        except psycopg.Error as exc:
            raise PredictionStoreUnavailable(
                f"predictions database unavailable ({self._target}) while trying to {action}: "
                f"{self._scrub(str(exc).strip())}"
            ) from None
        try:
            with conn:
                yield conn
        except PredictionStoreError:
            raise
        except psycopg.OperationalError as exc:
            raise PredictionStoreUnavailable(
                f"predictions database failed ({self._target}) while trying to {action}: "
                f"{self._scrub(str(exc).strip())}"
            ) from None
        except psycopg.Error as exc:
            raise PredictionStoreError(
                f"predictions database error ({self._target}) while trying to {action}: "
                f"{self._scrub(str(exc).strip())}"
            ) from exc

    def _ready(self) -> None:
        if not self._schema_ready:
            self.ensure_schema()

    # -- schema ------------------------------------------------------------------------------

    def ensure_schema(self) -> None:
        """Create or upgrade the tables (idempotent, safe from concurrent processes)."""
        started = time.monotonic()
        with self._connection("create the schema") as conn, conn.transaction():
            conn.execute("SELECT pg_advisory_xact_lock(%s)", (_SCHEMA_LOCK_KEY,))
            row = conn.execute(_TABLE_EXISTS_SQL).fetchone()
            existed = bool(row and row[0])
            conn.execute(_load_sql("schema.sql"))
            if not existed:
                logger.info("created the prediction table in %s", self._target)
                conn.execute(_load_sql("prediction_indexes.sql"))
            present = {(t, c) for t, c in conn.execute(_EXISTING_COLUMNS_SQL).fetchall()}
            for key, statement in _UPGRADES.items():
                if key not in present:
                    logger.info("adding column %s.%s", key[0], key[1])
                    conn.execute(statement)
        self._schema_ready = True
        logger.debug("schema ready in %.3f s", time.monotonic() - started)

    # -- import ------------------------------------------------------------------------------

    def import_predictions(
        self,
        *,
        batch_job_id: str,
        job_type: str,
        batches: Iterable[pa.RecordBatch],
        source_stats: Mapping[str, int] | None = None,
    ) -> ImportResult:
        """Import a job's predictions in one transaction, at most once per ``batch_job_id``.

        ``batches`` is consumed lazily (streamed with COPY). ``source_stats``, if given, is
        read after the stream is exhausted for the ledger's ``source_rows`` and
        ``skipped_rows`` (e.g. the dict the producer of ``batches`` updates); without it,
        source_rows = predictions and skipped_rows = 0. If the ledger already holds the job,
        nothing is read or written and the earlier result comes back with
        ``already_imported=True``. Raises :class:`PredictionImportError` (nothing imported)
        for a malformed batch, naming the column and the row (0-based, over the stream).
        """
        if not batch_job_id:
            raise PredictionImportError("batch_job_id must not be empty")
        self._ready()
        started = time.monotonic()
        with self._connection(f"import {batch_job_id}") as conn, conn.transaction():
            cur = conn.cursor()
            claimed = cur.execute(_CLAIM_SQL, (batch_job_id, job_type)).fetchone()
            if claimed is None:
                earlier = self._ledger_row(conn, batch_job_id)
                logger.info(
                    "batch job %s already imported (%s predictions); nothing to do",
                    batch_job_id,
                    earlier.predictions if earlier else "?",
                )
                if earlier is None:  # pragma: no cover - the conflict means the row exists
                    raise PredictionStoreError(f"ledger row of {batch_job_id} vanished")
                return _replace_duration(earlier, time.monotonic() - started)
            written = 0
            try:
                with cur.copy(_COPY_SQL) as copy:
                    for rows in _rows_of(batches, batch_job_id=batch_job_id, job_type=job_type):
                        for row in rows:
                            copy.write_row(row)
                        written += len(rows)
            except psycopg.OperationalError:
                raise
            except psycopg.Error as exc:
                raise PredictionImportError(
                    f"the database refused the predictions of {batch_job_id}; nothing was "
                    f"imported: {self._scrub(str(exc).strip())}"
                ) from exc
            stats = source_stats or {}
            source_rows = int(stats.get("source_rows", written))
            skipped_rows = int(stats.get("skipped_rows", 0))
            cur.execute(_RECORD_SQL, (written, source_rows, skipped_rows, batch_job_id))
        duration = time.monotonic() - started
        logger.info(
            "imported %d predictions of batch job %s in %.2f s (%.0f rows/s)",
            written,
            batch_job_id,
            duration,
            written / duration if duration > 0 else 0.0,
        )
        return ImportResult(
            batch_job_id=batch_job_id,
            predictions=written,
            already_imported=False,
            duration_s=duration,
            job_type=job_type,
            source_rows=source_rows,
            skipped_rows=skipped_rows,
            imported_at=datetime.now(UTC),
        )

    # -- queries -----------------------------------------------------------------------------

    @staticmethod
    def _ledger_row(conn: psycopg.Connection[Any], batch_job_id: str) -> ImportResult | None:
        row = conn.execute(_LEDGER_SQL, (batch_job_id,)).fetchone()
        if row is None:
            return None
        job_id, job_type, imported_at, predictions, source_rows, skipped_rows = row
        return ImportResult(
            batch_job_id=job_id,
            predictions=predictions,
            already_imported=True,
            duration_s=0.0,
            job_type=job_type,
            source_rows=source_rows,
            skipped_rows=skipped_rows,
            imported_at=imported_at,
        )

    def imported_job(self, batch_job_id: str) -> ImportResult | None:
        """The ledger's record of an imported job (``already_imported=True``), or None."""
        self._ready()
        with self._connection(f"look up the import of {batch_job_id}") as conn:
            return self._ledger_row(conn, batch_job_id)

    def imported_jobs(self, batch_job_ids: Iterable[str]) -> set[str]:
        """Which of these batch jobs the ledger records as imported (one query)."""
        ids = sorted(set(batch_job_ids))
        if not ids:
            return set()
        self._ready()
        with self._connection("look up imported batch jobs") as conn:
            rows = conn.execute(_IMPORTED_JOBS_SQL, (ids,)).fetchall()
        return {str(row[0]) for row in rows}

    def count_predictions(self, *, batch_job_id: str) -> int:
        """How many prediction rows carry ``@<batch_job_id>`` in predictor_version."""
        self._ready()
        with self._connection(f"count the predictions of {batch_job_id}") as conn:
            row = conn.execute(_COUNT_SQL, (batch_job_id,)).fetchone()
        return int(row[0]) if row else 0

    def duplicate_predictions(
        self, *, batch_job_id: str | None = None, predictor_version_like: str | None = None
    ) -> int:
        """Number of (barcode, type, predictor_version) groups holding more than one row.

        Restricted to one batch job, or to the rows whose predictor_version matches a LIKE
        pattern (e.g. ``'lexicon-cpu-%'``); exactly one of the two must be given.
        """
        if (batch_job_id is None) == (predictor_version_like is None):
            raise ValueError("give exactly one of batch_job_id and predictor_version_like")
        self._ready()
        with self._connection("count duplicate predictions") as conn:
            if batch_job_id is not None:
                row = conn.execute(_DUPLICATES_BY_JOB_SQL, (batch_job_id,)).fetchone()
            else:
                row = conn.execute(_DUPLICATES_BY_VERSION_SQL, (predictor_version_like,)).fetchone()
        return int(row[0]) if row else 0

    def fetch_examples(self, *, batch_job_id: str, limit: int = 5) -> list[dict[str, Any]]:
        """Up to ``limit`` predictions of a job (JSON-ready: timestamps as ISO strings)."""
        self._ready()
        with self._connection(f"fetch predictions of {batch_job_id}") as conn:
            cur = conn.cursor(row_factory=dict_row)
            rows = cur.execute(_EXAMPLES_SQL, (batch_job_id, limit)).fetchall()
        for row in rows:
            if isinstance(row.get("timestamp"), datetime):
                row["timestamp"] = row["timestamp"].isoformat()
        return rows


def _replace_duration(result: ImportResult, duration: float) -> ImportResult:
    return ImportResult(
        batch_job_id=result.batch_job_id,
        predictions=result.predictions,
        already_imported=result.already_imported,
        duration_s=duration,
        job_type=result.job_type,
        source_rows=result.source_rows,
        skipped_rows=result.skipped_rows,
        imported_at=result.imported_at,
    )


# -- batch validation and conversion ------------------------------------------------------------


def _first(mask: pa.Array | pa.ChunkedArray) -> int:
    """Index of the first true value of a boolean mask (the caller knows there is one)."""
    return int(pc.index(mask, True).as_py())


def _text_column(name: str, column: pa.Array, offset: int) -> pa.Array:
    if pa.types.is_string(column.type):
        return column
    try:
        return column.cast(pa.string())
    except (pa.ArrowInvalid, pa.ArrowNotImplementedError) as exc:
        raise PredictionImportError(
            f"column {name!r} (rows {offset}..) has type {column.type}, not text: {exc}"
        ) from exc


def _check_lengths(name: str, column: pa.Array, offset: int) -> None:
    limit = MAX_LENGTHS.get(name)
    if limit is None or len(column) == 0:
        return
    too_long = pc.fill_null(pc.greater(pc.utf8_length(column), limit), False)
    if pc.any(too_long).as_py():
        row = _first(too_long)
        raise PredictionImportError(
            f"column {name!r} at row {offset + row} is longer than {limit} characters: "
            f"{str(column[row].as_py())[:120]!r}"
        )


def _data_values(column: pa.Array, offset: int) -> list[Any]:
    if pa.types.is_string(column.type) or pa.types.is_large_string(column.type):
        return column.to_pylist()
    values = column.to_pylist()
    try:
        return [json.dumps(v, ensure_ascii=False) for v in values]
    except (TypeError, ValueError) as exc:
        raise PredictionImportError(
            f"column 'data' (rows {offset}..) holds values that are not JSON: {exc}"
        ) from exc


def _timestamps(column: pa.Array | None, n: int, now: datetime) -> list[Any]:
    if column is None:
        return [now] * n
    values = column.to_pylist()
    out: list[Any] = []
    for value in values:
        if value is None:
            out.append(now)
        elif isinstance(value, datetime) and value.tzinfo is not None:
            out.append(value.astimezone(UTC).replace(tzinfo=None))
        else:
            out.append(value)
    return out


def _rows_of(
    batches: Iterable[pa.RecordBatch], *, batch_job_id: str, job_type: str
) -> Iterator[list[tuple[Any, ...]]]:
    """Validate each batch and turn it into COPY rows; raise naming column and row."""
    suffix = f"@{batch_job_id}"
    now = datetime.now(UTC).replace(tzinfo=None)
    offset = 0
    for batch in batches:
        if isinstance(batch, pa.Table):
            batch = batch.combine_chunks().to_batches()[0] if batch.num_rows else None
            if batch is None:
                continue
        names = batch.schema.names
        missing = [c for c in REQUIRED_COLUMNS if c not in names]
        if missing:
            raise PredictionImportError(
                f"batch starting at row {offset} is missing required column(s) "
                f"{', '.join(repr(c) for c in missing)}; it has {names}"
            )
        unknown = [c for c in names if c not in PREDICTION_COLUMNS]
        if unknown:
            raise PredictionImportError(
                f"batch starting at row {offset} has unknown column(s) "
                f"{', '.join(repr(c) for c in unknown)}; allowed: {list(PREDICTION_COLUMNS)}"
            )
        n = batch.num_rows
        if n == 0:
            continue
        cols: dict[str, pa.Array] = {name: batch.column(name) for name in names}
        for name in NOT_NULL_COLUMNS:
            if cols[name].null_count:
                row = _first(cols[name].is_null())
                raise PredictionImportError(
                    f"null {name!r} at row {offset + row} (0-based, counted over all batches)"
                )
        values: dict[str, list[Any]] = {}
        for name in _TEXT_COLUMNS:
            if name in cols:
                col = _text_column(name, cols[name], offset)
                if name != "predictor_version":
                    _check_lengths(name, col, offset)
                values[name] = col.to_pylist()
            else:
                values[name] = [None] * n
        values["data"] = _data_values(cols["data"], offset)
        values["timestamp"] = _timestamps(cols.get("timestamp"), n, now)
        for name in ("automatic_processing", "confidence"):
            values[name] = cols[name].to_pylist() if name in cols else [None] * n
        values["server_type"] = [v or DEFAULT_SERVER_TYPE for v in values["server_type"]]
        versions = values["predictor_version"]
        for i, version in enumerate(versions):
            if version is None or version == "":
                version = f"{job_type}{suffix}"
            elif not version.endswith(suffix):
                version = f"{version}{suffix}"
            if len(version) > MAX_LENGTHS["predictor_version"]:
                raise PredictionImportError(
                    f"column 'predictor_version' at row {offset + i} is longer than "
                    f"{MAX_LENGTHS['predictor_version']} characters with the job suffix: "
                    f"{version!r}"
                )
            versions[i] = version
        yield list(zip(*(values[name] for name in PREDICTION_COLUMNS), strict=True))
        offset += n
