"""Robotoff's ``prediction`` and ``product_insight`` tables, written once per batch job.

One transaction per batch job:

1. claim the job in the ledger ``batch_job_import`` (``INSERT ... ON CONFLICT DO NOTHING``; a
   concurrent import of the same job waits on that row, then finds it and answers from it);
2. stream the job's output into a temporary table with ``COPY ... (FORMAT csv)``, the CSV
   rendered by Arrow (no per-row Python), and its product facts into another;
3. refuse the whole output, naming file and row, if a key is duplicated, a value too long, a
   product unknown to the job's input (set-based checks on the temporary tables);
4. turn the output into Robotoff prediction rows with the job type's SQL, then apply the dedup
   rule: a stored prediction of the same product, type, server type, image and predictor but
   another ``predictor_version`` is replaced (deleted); a new prediction whose Robotoff key
   (type, server_type, source_image, value_tag, value, predictor, automatic_processing) is
   already stored (hence the same version) is skipped; the rest is inserted, and the ids it
   got are linked to the job in ``batch_job_prediction`` (as ranges of consecutive ids);
5. run the job type's insight SQL (Robotoff's importer rules, set-based) and record the counts.

Any error rolls all of it back: a job is imported entirely, once, or not at all. Robotoff's
tables are created only where they do not exist (then recorded in ``batch_schema_owner``),
never altered otherwise. All SQL is constant or composed from identifiers; values are bound
parameters. Messages never contain the password of the connection string.
"""

from __future__ import annotations

import io
import logging
import re
import tempfile
import time
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime
from importlib import resources
from pathlib import Path
from typing import Any

import psycopg
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.csv as pacsv
import pyarrow.parquet as pq
from psycopg import sql
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
#: Columns every prediction batch must have (the others default: timestamp = import time,
#: server_type = 'off', the rest NULL).
REQUIRED_COLUMNS: tuple[str, ...] = ("barcode", "type", "data")
#: varchar(n) limits of Robotoff's table, checked before the insert for a clear message.
MAX_LENGTHS: dict[str, int] = {
    "barcode": 100,
    "type": 256,
    "predictor": 100,
    "predictor_version": 100,
    "server_type": 10,
}
DEFAULT_SERVER_TYPE = "off"
#: Rows rendered to CSV per COPY chunk (bounded memory whatever the output size).
COPY_CHUNK_ROWS = 16_384

_SCHEMA_LOCK_KEY = 7_286_114_052_117_303  # pg_advisory_xact_lock key of ensure_schema
# Robotoff's tables: the columns the import writes (an existing table must have them).
_ROBOTOFF_COLUMNS: dict[str, tuple[str, ...]] = {
    "prediction": ("id", *PREDICTION_COLUMNS),
    "product_insight": (
        "id",
        "barcode",
        "type",
        "data",
        "timestamp",
        "completed_at",
        "annotation",
        "annotated_result",
        "n_votes",
        "username",
        "countries",
        "brands",
        "process_after",
        "value_tag",
        "value",
        "source_image",
        "automatic_processing",
        "server_type",
        "unique_scans_n",
        "reserved_barcode",
        "predictor",
        "predictor_version",
        "campaign",
        "confidence",
        "bounding_box",
        "lc",
        "with_image",
    ),
}
# The index that only robotoff-batch's first schema created (job id at the end of
# predictor_version): a table carrying it is our own embedded table of that time.
_LEGACY_INDEX = "prediction_batch_job_id"
_LEGACY_JOB_EXPR = "substring(predictor_version FROM '@([^@]+)$')"

_COLUMNS_SQL = """
SELECT table_name, column_name FROM information_schema.columns
WHERE table_schema = current_schema() AND table_name = ANY(%s)
"""
_OWNED_SQL = "SELECT table_name FROM batch_schema_owner"
_OWN_SQL = "INSERT INTO batch_schema_owner (table_name) VALUES (%s) ON CONFLICT DO NOTHING"
_INDEX_EXISTS_SQL = (
    "SELECT 1 FROM pg_indexes WHERE schemaname = current_schema() AND indexname = %s"
)
# Our own ledger: columns added after its first version (our table, so we may add them).
_LEDGER_UPGRADES: dict[str, str] = {
    name: f"ALTER TABLE batch_job_import ADD COLUMN IF NOT EXISTS {name} integer NOT NULL DEFAULT 0"
    for name in (
        "candidates",
        "predictions_kept",
        "predictions_replaced",
        "insights_created",
        "insights_updated",
        "insights_kept",
        "insights_deleted",
    )
}
_LEDGER_UPGRADES["target"] = (
    "ALTER TABLE batch_job_import ADD COLUMN IF NOT EXISTS target text NOT NULL DEFAULT 'postgres'"
)
_LEDGER_COLUMNS = (
    "batch_job_id",
    "job_type",
    "imported_at",
    "predictions",
    "source_rows",
    "skipped_rows",
    "candidates",
    "predictions_kept",
    "predictions_replaced",
    "insights_created",
    "insights_updated",
    "insights_kept",
    "insights_deleted",
    "target",
)

_IMPORTED_JOBS_SQL = "SELECT batch_job_id FROM batch_job_import WHERE batch_job_id = ANY(%s)"
_CLAIM_SQL = """
INSERT INTO batch_job_import (batch_job_id, job_type, predictions, source_rows, skipped_rows,
    target)
VALUES (%s, %s, 0, 0, 0, %s)
ON CONFLICT (batch_job_id) DO NOTHING
RETURNING batch_job_id
"""
_RECORD_SQL = """
UPDATE batch_job_import SET predictions = %(predictions)s, source_rows = %(source_rows)s,
    skipped_rows = %(skipped_rows)s, candidates = %(candidates)s,
    predictions_kept = %(predictions_kept)s, predictions_replaced = %(predictions_replaced)s,
    insights_created = %(insights_created)s, insights_updated = %(insights_updated)s,
    insights_kept = %(insights_kept)s, insights_deleted = %(insights_deleted)s,
    imported_at = now()
WHERE batch_job_id = %(batch_job_id)s
"""
_LEDGER_SQL = f"SELECT {', '.join(_LEDGER_COLUMNS)} FROM batch_job_import WHERE batch_job_id = %s"

# The job's predictions, as a view over batch_output (the job type's SELECT, typed here):
# nothing is materialised, and each statement below computes only the columns it reads.
_CREATE_PREDICTION_VIEW = """
CREATE TEMP VIEW batch_prediction AS
SELECT _file::integer AS _file, _row::bigint AS _row, barcode::text AS barcode,
    type::text AS type, data::jsonb AS data, "timestamp"::timestamp AS "timestamp",
    value_tag::text AS value_tag, value::text AS value, source_image::text AS source_image,
    automatic_processing::boolean AS automatic_processing, predictor::text AS predictor,
    predictor_version::text AS predictor_version, confidence::real AS confidence,
    server_type::text AS server_type
FROM ({select}) AS p (_file, _row, barcode, type, data, "timestamp", value_tag, value,
    source_image, automatic_processing, predictor, predictor_version, confidence, server_type)
"""
_NULL_PREDICTION_SQL = """
SELECT _file, _row, CASE WHEN barcode IS NULL OR barcode = '' THEN 'barcode'
    WHEN type IS NULL OR type = '' THEN 'type' WHEN data IS NULL THEN 'data'
    ELSE 'server_type' END
FROM batch_prediction
WHERE barcode IS NULL OR barcode = '' OR type IS NULL OR type = '' OR data IS NULL
    OR server_type IS NULL OR "timestamp" IS NULL
ORDER BY _file, _row LIMIT 1
"""
_TOO_LONG_SQL = """
SELECT _file, _row, CASE WHEN length(barcode) > 100 THEN 'barcode'
        WHEN length(type) > 256 THEN 'type' WHEN length(predictor) > 100 THEN 'predictor'
        WHEN length(predictor_version) > 100 THEN 'predictor_version' ELSE 'server_type' END,
    CASE WHEN length(barcode) > 100 THEN barcode WHEN length(type) > 256 THEN type
        WHEN length(predictor) > 100 THEN predictor
        WHEN length(predictor_version) > 100 THEN predictor_version ELSE server_type END
FROM batch_prediction
WHERE length(barcode) > 100 OR length(type) > 256 OR length(predictor) > 100
    OR length(predictor_version) > 100 OR length(server_type) > 10
ORDER BY _file, _row LIMIT 1
"""
# Two predictions of one job with the same Robotoff key: Robotoff would keep one at random.
_DUPLICATE_PREDICTION_SQL = """
SELECT a._file, a._row, b._file, b._row, a.barcode FROM batch_prediction a
JOIN batch_prediction b ON a.barcode = b.barcode AND a.type = b.type
    AND a.server_type = b.server_type
    AND a.source_image IS NOT DISTINCT FROM b.source_image
    AND a.value_tag IS NOT DISTINCT FROM b.value_tag AND a.value IS NOT DISTINCT FROM b.value
    AND a.predictor IS NOT DISTINCT FROM b.predictor
    AND a.automatic_processing IS NOT DISTINCT FROM b.automatic_processing
    AND (a._file, a._row) < (b._file, b._row)
ORDER BY b._file, b._row LIMIT 1
"""
# The dedup rule, step 1: an older (another) version of the same predictor is replaced.
_REPLACE_SQL = """
DELETE FROM prediction p USING batch_prediction n
WHERE p.barcode = n.barcode AND p.type = n.type AND p.server_type = n.server_type
    AND p.source_image IS NOT DISTINCT FROM n.source_image
    AND p.predictor IS NOT DISTINCT FROM n.predictor
    AND p.predictor_version IS DISTINCT FROM n.predictor_version
"""
# Step 2: insert what Robotoff's key does not already hold (what remains is the same version),
# and link the new ids to the job as ranges of consecutive ids (one range unless another writer
# interleaved its rows: gaps and islands over the ids the insert returned).
_INSERT_SQL = """
WITH inserted AS (
    INSERT INTO prediction (barcode, type, data, "timestamp", value_tag, value, source_image,
        automatic_processing, predictor, predictor_version, confidence, server_type)
    SELECT n.barcode, n.type, n.data, n."timestamp", n.value_tag, n.value, n.source_image,
        n.automatic_processing, n.predictor, n.predictor_version, n.confidence, n.server_type
    FROM batch_prediction n
    WHERE NOT EXISTS (
        SELECT 1 FROM prediction p
        WHERE p.barcode = n.barcode AND p.type = n.type AND p.server_type = n.server_type
            AND p.source_image IS NOT DISTINCT FROM n.source_image
            AND p.value_tag IS NOT DISTINCT FROM n.value_tag
            AND p.value IS NOT DISTINCT FROM n.value
            AND p.predictor IS NOT DISTINCT FROM n.predictor
            AND p.automatic_processing IS NOT DISTINCT FROM n.automatic_processing
    )
    ORDER BY n._file, n._row
    RETURNING id
),
islands AS (SELECT id, id - row_number() OVER (ORDER BY id) AS island FROM inserted)
INSERT INTO batch_job_prediction (batch_job_id, first_id, last_id)
SELECT %(batch_job_id)s, min(id), max(id) FROM islands GROUP BY island
RETURNING last_id - first_id + 1
"""
_JOB_ROWS = (
    "FROM batch_job_prediction l JOIN prediction p "
    "ON p.id BETWEEN l.first_id AND l.last_id WHERE l.batch_job_id = %s"
)
_COUNT_SQL = f"SELECT count(*) {_JOB_ROWS}"
_DUPLICATES_BY_JOB_SQL = f"""
SELECT count(*) FROM (
    SELECT 1 {_JOB_ROWS}
    GROUP BY p.barcode, p.type, p.value_tag, p.predictor, p.predictor_version
    HAVING count(*) > 1
) AS duplicate_groups
"""
_DUPLICATES_BY_VERSION_SQL = """
SELECT count(*) FROM (
    SELECT 1 FROM prediction WHERE predictor_version LIKE %s
    GROUP BY barcode, type, value_tag, predictor, predictor_version HAVING count(*) > 1
) AS duplicate_groups
"""
_EXAMPLES_SQL = f"""
SELECT p.id, p.barcode, p.type, p.data, p."timestamp", p.value_tag, p.value, p.source_image,
    p.automatic_processing, p.predictor, p.predictor_version, p.confidence, p.server_type
{_JOB_ROWS} ORDER BY p.id LIMIT %s
"""
_COPY_LINE = re.compile(r"COPY \w+, line (\d+)")


class PredictionStoreError(Exception):
    """Base error of the prediction store."""


class PredictionStoreUnavailable(PredictionStoreError):
    """The database is down or unreachable (worth retrying later)."""


class PredictionStoreAuthError(PredictionStoreError):
    """The database refused our credentials or role: retrying cannot help."""


class PredictionImportError(PredictionStoreError):
    """The output was refused (nothing of the job was imported)."""


@dataclass(frozen=True)
class ImportSpec:
    """How a job type's output becomes Robotoff rows, in SQL the store runs.

    ``output_schema``: the columns read from each task file, loaded into the temporary table
    ``batch_output`` (plus ``_file``, ``_row``). ``predictions_sql``: a SELECT over
    ``batch_output`` giving, in this order, _file, _row and the columns of
    :data:`PREDICTION_COLUMNS`, one row per prediction (parameter ``%(now)s``: the import time,
    naive UTC); it becomes the view ``batch_prediction``. ``unique``: output columns whose
    values must not repeat over the whole output.
    ``facts_schema``: the product facts (``batch_product``, keyed by ``code``) the insights
    read; every output ``key_column`` value must be there. ``insights_sql``: statements
    separated by ``-- name: <name>`` lines; the row counts of those named ``created``,
    ``updated``, ``deleted`` and ``kept`` are the insight counts. None: no insights.
    """

    output_schema: pa.Schema
    predictions_sql: str
    not_null: tuple[str, ...] = ()
    unique: tuple[str, ...] = ()
    key_column: str = "code"
    facts_schema: pa.Schema | None = None
    insights_sql: str | None = None
    # A SELECT over batch_output / batch_prediction giving the rows, with Robotoff's columns,
    # of the postprocessed_data.parquet handed to Robotoff's importer (robotoff_api target).
    handover_sql: str | None = None
    # True when an output row gives at most one prediction, for the product its unique
    # key_column names: two predictions of the job cannot share Robotoff's key, so that
    # (self-join) check is skipped.
    one_prediction_per_product: bool = False


@dataclass(frozen=True)
class OutputChunk:
    """Rows of one output file, ``offset`` = the index of the first one in its file."""

    file_index: int
    offset: int
    batch: pa.RecordBatch


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
    candidates: int = 0  # predictions the output gave, before the dedup rule
    predictions_kept: int = 0  # already stored with the same predictor version: skipped
    predictions_replaced: int = 0  # another version of the same predictor: deleted
    insights: Mapping[str, int] = field(default_factory=dict)  # created/updated/kept/deleted
    target: str = "postgres"


def _load_sql(name: str) -> str:
    return resources.files(__package__ or "robotoff_batch.predictions").joinpath(name).read_text()


def named_statements(text: str) -> list[tuple[str, str]]:
    """Split a SQL file on ``-- name: <name>`` lines into (name, statement) pairs."""
    out: list[tuple[str, str]] = []
    name: str | None = None
    lines: list[str] = []
    for line in text.splitlines():
        match = re.match(r"--\s*name:\s*(\w+)", line)
        if match:
            if name is not None:
                out.append((name, "\n".join(lines).strip()))
            name, lines = match.group(1), []
        elif name is not None:
            lines.append(line)
    if name is not None:
        out.append((name, "\n".join(lines).strip()))
    return out


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


def _is_auth_error(exc: psycopg.Error) -> bool:
    """Wrong password, unknown role, no pg_hba entry (SQLSTATE class 28) or no permission."""
    state = getattr(exc, "sqlstate", None) or ""
    if state.startswith("28") or state == "42501":
        return True
    text = str(exc)
    return (
        "authentication failed" in text
        or "no pg_hba.conf entry" in text
        or ('role "' in text and "does not exist" in text)
    )


_PG_TYPES = {
    "string": "text",
    "large_string": "text",
    "int64": "bigint",
    "int32": "bigint",
    "int16": "bigint",
    "double": "double precision",
    "float": "double precision",
    "bool": "boolean",
}


def _pg_type(arrow_type: pa.DataType) -> str:
    if pa.types.is_timestamp(arrow_type):
        return "timestamp"
    name = str(arrow_type)
    if name not in _PG_TYPES:
        raise PredictionStoreError(f"no PostgreSQL type for Arrow type {arrow_type}")
    return _PG_TYPES[name]


class PredictionStore:
    """Robotoff's ``prediction`` and ``product_insight`` tables plus our ledger, in PostgreSQL."""

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
            reason = self._scrub(str(exc).strip())
            if _is_auth_error(exc):
                raise PredictionStoreAuthError(
                    f"predictions database refused the credentials ({self._target}) while "
                    f"trying to {action}: {reason}"
                ) from None
            raise PredictionStoreUnavailable(
                f"predictions database unavailable ({self._target}) while trying to {action}: "
                f"{reason}"
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
            if _is_auth_error(exc):
                raise PredictionStoreAuthError(
                    f"predictions database denied ({self._target}) while trying to {action}: "
                    f"{self._scrub(str(exc).strip())}"
                ) from None
            raise PredictionStoreError(
                f"predictions database error ({self._target}) while trying to {action}: "
                f"{self._scrub(str(exc).strip())}"
            ) from exc

    def _ready(self) -> None:
        if not self._schema_ready:
            self.ensure_schema()

    # -- schema ------------------------------------------------------------------------------

    def ensure_schema(self) -> None:
        """Create our tables, and Robotoff's where they do not exist (idempotent, safe from
        concurrent processes). An existing Robotoff table is never altered: it must have the
        columns the import writes, else this fails naming them."""
        started = time.monotonic()
        with self._connection("create the schema") as conn, conn.transaction():
            conn.execute("SELECT pg_advisory_xact_lock(%s)", (_SCHEMA_LOCK_KEY,))
            conn.execute(_load_sql("schema.sql"))
            ledger_columns = {c for _, c in conn.execute(_COLUMNS_SQL, (["batch_job_import"],))}
            for column, statement in _LEDGER_UPGRADES.items():
                if column not in ledger_columns:
                    conn.execute(statement)
            owned = {row[0] for row in conn.execute(_OWNED_SQL)}
            present: dict[str, set[str]] = {}
            for table, column in conn.execute(_COLUMNS_SQL, (list(_ROBOTOFF_COLUMNS),)):
                present.setdefault(table, set()).add(column)
            if "prediction" in present and "prediction" not in owned:
                if conn.execute(_INDEX_EXISTS_SQL, (_LEGACY_INDEX,)).fetchone():
                    self._upgrade_legacy_table(conn)
                    owned.add("prediction")
            ddl = dict(named_statements(_load_sql("robotoff_schema.sql")))
            for table, wanted in _ROBOTOFF_COLUMNS.items():
                if table not in present:
                    logger.info("creating Robotoff's %s table in %s", table, self._target)
                    conn.execute(ddl[table])
                    conn.execute(_OWN_SQL, (table,))
                    continue
                missing = [c for c in wanted if c not in present[table]]
                if missing:
                    raise PredictionStoreError(
                        f"table {table} in {self._target} lacks column(s) {missing}: it is not "
                        "Robotoff's current schema, and robotoff-batch never alters a table it "
                        "did not create (run Robotoff's migrations)"
                    )
        self._schema_ready = True
        logger.debug("schema ready in %.3f s", time.monotonic() - started)

    def _upgrade_legacy_table(self, conn: psycopg.Connection[Any]) -> None:
        """Our own first embedded table: Robotoff's current shape, job links moved out of
        predictor_version into batch_job_prediction."""
        logger.info("upgrading robotoff-batch's earlier embedded prediction table")
        conn.execute(
            "INSERT INTO batch_job_prediction (batch_job_id, first_id, last_id) "
            "SELECT job, min(id), max(id) FROM ("
            f"  SELECT {_LEGACY_JOB_EXPR} AS job, id, id - row_number() OVER "
            f"  (PARTITION BY {_LEGACY_JOB_EXPR} ORDER BY id) AS island FROM prediction"
            f"  WHERE {_LEGACY_JOB_EXPR} IS NOT NULL"
            ") AS legacy GROUP BY job, island"
        )
        conn.execute(
            "UPDATE prediction SET predictor_version = "
            "regexp_replace(predictor_version, '@[^@]+$', '') "
            "WHERE predictor_version LIKE '%@%'"
        )
        for index in (_LEGACY_INDEX, "prediction_data", "prediction_source_image"):
            conn.execute(sql.SQL("DROP INDEX IF EXISTS {}").format(sql.Identifier(index)))
        conn.execute("ALTER TABLE prediction ALTER COLUMN confidence TYPE real")
        conn.execute("ALTER TABLE prediction ALTER COLUMN server_type DROP DEFAULT")
        conn.execute(_OWN_SQL, ("prediction",))

    def owned_tables(self) -> set[str]:
        """Robotoff tables this store created itself (empty against Robotoff's database)."""
        self._ready()
        with self._connection("read the schema owner") as conn:
            return {row[0] for row in conn.execute(_OWNED_SQL)}

    # -- import ------------------------------------------------------------------------------

    def import_output(
        self,
        *,
        batch_job_id: str,
        job_type: str,
        spec: ImportSpec,
        files: Sequence[str],
        outputs: Iterable[OutputChunk],
        facts: Iterable[pa.RecordBatch] = (),
        source_stats: Mapping[str, int] | None = None,
        deliver: Callable[..., str] | None = None,
    ) -> ImportResult:
        """Import a job's output in one transaction, at most once per ``batch_job_id``.

        ``outputs`` and ``facts`` are consumed lazily (streamed with COPY); ``files`` names the
        output files ``OutputChunk.file_index`` points into, for messages. If the ledger
        already holds the job, nothing is read or written and the earlier result comes back
        with ``already_imported=True``. Raises :class:`PredictionImportError` (nothing
        imported) for a refused output, naming the file and the row (0-based in its file).

        With ``deliver`` (see :meth:`hand_over_output`), the checked rows are handed over
        instead of written to Robotoff's tables.
        """
        target = "postgres" if deliver is None else "robotoff_api"
        if not batch_job_id:
            raise PredictionImportError("batch_job_id must not be empty")
        self._ready()
        started = time.monotonic()
        now = datetime.now(UTC).replace(tzinfo=None)
        with self._connection(f"import {batch_job_id}") as conn, conn.transaction():
            cur = conn.cursor()
            claimed = cur.execute(_CLAIM_SQL, (batch_job_id, job_type, target)).fetchone()
            # hash joins and sorts over the job's rows in memory, for this transaction only
            cur.execute("SET LOCAL work_mem = '64MB'")
            # the temporary tables' buffers (settable before the session's first temp table)
            cur.execute("SET LOCAL temp_buffers = '256MB'")
            if claimed is None:
                earlier = self._ledger_row(conn, batch_job_id)
                if earlier is None:  # pragma: no cover - the conflict means the row exists
                    raise PredictionStoreError(f"ledger row of {batch_job_id} vanished")
                logger.info(
                    "batch job %s already imported (%d predictions); nothing to do",
                    batch_job_id,
                    earlier.predictions,
                )
                return replace(earlier, duration_s=time.monotonic() - started)
            try:
                counts = self._import_in(
                    cur,
                    batch_job_id=batch_job_id,
                    job_type=job_type,
                    spec=spec,
                    files=files,
                    outputs=outputs,
                    facts=facts,
                    now=now,
                    deliver=deliver,
                )
            except psycopg.OperationalError:
                raise
            except psycopg.Error as exc:
                raise PredictionImportError(
                    f"the database refused the output of {batch_job_id}; nothing was "
                    f"imported: {self._scrub(str(exc).strip())}"
                ) from exc
            for key in ("source_rows", "skipped_rows"):
                if source_stats and key in source_stats:  # read once the stream is consumed
                    counts[key] = int(source_stats[key])
            cur.execute(_RECORD_SQL, {**counts, "batch_job_id": batch_job_id})
        duration = time.monotonic() - started
        result = ImportResult(
            batch_job_id=batch_job_id,
            predictions=counts["predictions"],
            already_imported=False,
            duration_s=duration,
            job_type=job_type,
            source_rows=counts["source_rows"],
            skipped_rows=counts["skipped_rows"],
            imported_at=datetime.now(UTC),
            candidates=counts["candidates"],
            predictions_kept=counts["predictions_kept"],
            predictions_replaced=counts["predictions_replaced"],
            insights=_insight_counts(counts),
            target=target,
        )
        logger.info(
            "imported batch job %s in %.2f s: %d output rows, %d predictions inserted, %d kept, "
            "%d replaced; insights %s",
            batch_job_id,
            duration,
            result.source_rows,
            result.predictions,
            result.predictions_kept,
            result.predictions_replaced,
            dict(result.insights),
        )
        return result

    def hand_over_output(self, *, deliver: Callable[..., str], **kwargs: Any) -> ImportResult:
        """Check a job's output as :meth:`import_output` does, then hand the rows of the job
        type's ``handover_sql`` to ``deliver(job_type=, batch_job_id=, parquet=)`` (Robotoff's
        importer) instead of writing them; the ledger records the job (target
        ``robotoff_api``) only once ``deliver`` returned, in the same transaction."""
        return self.import_output(deliver=deliver, **kwargs)

    def _import_in(
        self,
        cur: psycopg.Cursor[Any],
        *,
        batch_job_id: str,
        job_type: str,
        spec: ImportSpec,
        files: Sequence[str],
        outputs: Iterable[OutputChunk],
        facts: Iterable[pa.RecordBatch],
        now: datetime,
        deliver: Callable[..., str] | None = None,
    ) -> dict[str, int]:
        """The import's statements, inside the caller's transaction."""

        phases: dict[str, float] = {}
        mark = time.monotonic()

        def phase(name: str) -> None:
            nonlocal mark
            now_ = time.monotonic()
            phases[name] = round(phases.get(name, 0.0) + now_ - mark, 3)
            mark = now_

        def where(file_index: int, row: int) -> str:
            name = files[file_index] if 0 <= file_index < len(files) else f"file {file_index}"
            return f"{name} row {row}"

        source_rows = _copy_output(cur, spec=spec, outputs=outputs, where=where)
        phase("copy_output")
        if source_rows == 0:
            raise PredictionImportError(
                f"the output of {batch_job_id} has no rows ({', '.join(files) or 'no files'}): "
                "an empty output is refused, not recorded as imported"
            )
        for column in spec.unique:
            row = cur.execute(
                sql.SQL(
                    "SELECT a._file, a._row, b._file, b._row, a.{c} FROM batch_output a "
                    "JOIN batch_output b ON a.{c} = b.{c} "
                    "AND (a._file, a._row) < (b._file, b._row) "
                    "ORDER BY b._file, b._row LIMIT 1"
                ).format(c=sql.Identifier(column))
            ).fetchone()
            if row:
                raise PredictionImportError(
                    f"{column} {row[4]!r} appears twice in the output: {where(row[0], row[1])} "
                    f"and {where(row[2], row[3])}; nothing was imported"
                )
        phase("check_unique")
        if spec.facts_schema is not None:
            _copy_facts(cur, spec.facts_schema, facts)
            phase("copy_facts")
            row = cur.execute(
                sql.SQL(
                    "SELECT o._file, o._row, o.{k} FROM batch_output o "
                    "WHERE NOT EXISTS (SELECT 1 FROM batch_product f WHERE f.code = o.{k}) "
                    "ORDER BY o._file, o._row LIMIT 1"
                ).format(k=sql.Identifier(spec.key_column))
            ).fetchone()
            if row:
                raise PredictionImportError(
                    f"{where(row[0], row[1])}: {spec.key_column} {row[2]!r} is not a product of "
                    "the job's input; nothing was imported"
                )
        phase("check_facts")
        select = psycopg.ClientCursor(cur.connection).mogrify(
            spec.predictions_sql.strip().rstrip(";"), {"now": now}
        )
        cur.execute(_CREATE_PREDICTION_VIEW.replace("{select}", select))
        row = cur.execute("SELECT count(*) FROM batch_prediction").fetchone()
        candidates = int(row[0]) if row else 0
        phase("to_predictions")
        bad = cur.execute(_NULL_PREDICTION_SQL).fetchone()
        if bad:
            raise PredictionImportError(
                f"{where(bad[0], bad[1])}: null or empty {bad[2]!r}; nothing was imported"
            )
        bad = cur.execute(_TOO_LONG_SQL).fetchone()
        if bad:
            raise PredictionImportError(
                f"{where(bad[0], bad[1])}: {bad[2]!r} is longer than "
                f"{MAX_LENGTHS[bad[2]]} characters: {str(bad[3])[:120]!r}; nothing was imported"
            )
        implied = spec.one_prediction_per_product and spec.key_column in spec.unique
        dup = None if implied else cur.execute(_DUPLICATE_PREDICTION_SQL).fetchone()
        if dup:
            raise PredictionImportError(
                f"two predictions for product {dup[4]!r} with the same Robotoff key: "
                f"{where(dup[0], dup[1])} and {where(dup[2], dup[3])}; nothing was imported"
            )
        phase("check_predictions")
        if deliver is not None:
            handed = _hand_over(
                cur, spec=spec, job_type=job_type, batch_job_id=batch_job_id, deliver=deliver
            )
            phase("hand_over")
            logger.info("hand-over of %s, seconds per step: %s", batch_job_id, phases)
            return {
                **dict.fromkeys(_LEDGER_COLUMNS[3:13], 0),
                "source_rows": source_rows,
                "skipped_rows": source_rows - candidates,
                "candidates": candidates,
                "predictions": handed,
            }
        cur.execute(_REPLACE_SQL)
        replaced = max(cur.rowcount, 0)
        phase("replace")
        cur.execute(_INSERT_SQL, {"batch_job_id": batch_job_id})
        inserted = sum(int(row[0]) for row in cur.fetchall())
        phase("insert")
        counts = {
            "source_rows": source_rows,
            "skipped_rows": source_rows - candidates,
            "candidates": candidates,
            "predictions": inserted,
            "predictions_kept": candidates - inserted,
            "predictions_replaced": replaced,
            "insights_created": 0,
            "insights_updated": 0,
            "insights_kept": 0,
            "insights_deleted": 0,
        }
        if spec.insights_sql:
            for name, statement in named_statements(spec.insights_sql):
                cur.execute(statement, {"now": now})
                if name in ("created", "updated", "deleted"):
                    counts[f"insights_{name}"] = max(cur.rowcount, 0)
                elif name == "kept":
                    row = cur.fetchone()
                    counts["insights_kept"] = int(row[0]) if row else 0
                phase(f"insights_{name}")
        logger.info("import of %s, seconds per step: %s", batch_job_id, phases)
        return counts

    def import_predictions(
        self,
        *,
        batch_job_id: str,
        job_type: str,
        batches: Iterable[pa.RecordBatch],
        source_stats: Mapping[str, int] | None = None,
    ) -> ImportResult:
        """Import ready-made prediction rows (columns of :data:`PREDICTION_COLUMNS`, ``data``
        as JSON text), with the same transaction, checks and dedup rule as
        :meth:`import_output`; rows are numbered over the whole stream."""
        return self.import_output(
            batch_job_id=batch_job_id,
            job_type=job_type,
            spec=PREDICTION_SPEC,
            files=["predictions"],
            outputs=_prediction_chunks(batches),
            source_stats=source_stats,
        )

    # -- queries -----------------------------------------------------------------------------

    @staticmethod
    def _ledger_row(conn: psycopg.Connection[Any], batch_job_id: str) -> ImportResult | None:
        cur = conn.cursor(row_factory=dict_row)
        row = cur.execute(_LEDGER_SQL, (batch_job_id,)).fetchone()
        if row is None:
            return None
        return ImportResult(
            batch_job_id=row["batch_job_id"],
            predictions=row["predictions"],
            already_imported=True,
            duration_s=0.0,
            job_type=row["job_type"],
            source_rows=row["source_rows"],
            skipped_rows=row["skipped_rows"],
            imported_at=row["imported_at"],
            candidates=row["candidates"],
            predictions_kept=row["predictions_kept"],
            predictions_replaced=row["predictions_replaced"],
            insights=_insight_counts(row),
            target=row["target"],
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
        """How many stored predictions the job inserted (those since replaced not counted)."""
        self._ready()
        with self._connection(f"count the predictions of {batch_job_id}") as conn:
            row = conn.execute(_COUNT_SQL, (batch_job_id,)).fetchone()
        return int(row[0]) if row else 0

    def duplicate_predictions(
        self, *, batch_job_id: str | None = None, predictor_version_like: str | None = None
    ) -> int:
        """Number of (barcode, type, value_tag, predictor, predictor_version) groups holding
        more than one row, among one job's predictions or those whose predictor_version
        matches a LIKE pattern (e.g. ``'lexicon-cpu-%'``); exactly one of the two is given."""
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


def _insight_counts(row: Mapping[str, Any]) -> dict[str, int]:
    return {k: int(row[f"insights_{k}"]) for k in ("created", "updated", "kept", "deleted")}


def _hand_over(
    cur: psycopg.Cursor[Any],
    *,
    spec: ImportSpec,
    job_type: str,
    batch_job_id: str,
    deliver: Callable[..., str],
) -> int:
    """Write the job type's hand-over rows to a Parquet file (COPY out as CSV, Arrow reads
    it back: no per-row Python) and give it to ``deliver``; returns the row count."""
    if not spec.handover_sql:
        raise PredictionImportError(
            f"job type {job_type} declares no hand-over to Robotoff (handover_sql); "
            "use the postgres target"
        )
    with tempfile.TemporaryDirectory(prefix="robotoff-batch-handover-") as tmp:
        csv_path = Path(tmp) / "rows.csv"
        copy_out = sql.SQL("COPY ({}) TO STDOUT (FORMAT csv, HEADER)").format(
            sql.SQL(spec.handover_sql.strip().rstrip(";"))  # type: ignore[arg-type]
        )
        with open(csv_path, "wb") as out, cur.copy(copy_out) as copy:
            for data in copy:
                out.write(data)
        names = open(csv_path, encoding="utf-8").readline().strip().split(",")
        table = pacsv.read_csv(
            csv_path,
            parse_options=pacsv.ParseOptions(newlines_in_values=True),
            convert_options=pacsv.ConvertOptions(
                column_types=dict.fromkeys(names, pa.string()),
                strings_can_be_null=True,
                quoted_strings_can_be_null=False,
            ),
        )
        parquet = Path(tmp) / "postprocessed_data.parquet"
        pq.write_table(table, parquet)
        batch_dir = deliver(job_type=job_type, batch_job_id=batch_job_id, parquet=parquet)
    logger.info("handed %d rows of %s to Robotoff (%s)", table.num_rows, batch_job_id, batch_dir)
    return int(table.num_rows)


# -- Arrow to COPY ------------------------------------------------------------------------------


def _create_temp_table(cur: psycopg.Cursor[Any], name: str, schema: pa.Schema) -> None:
    columns = [sql.SQL("_file integer NOT NULL"), sql.SQL("_row bigint NOT NULL")] + [
        sql.SQL("{} {}").format(sql.Identifier(f.name), sql.SQL(_pg_type(f.type))) for f in schema
    ]
    cur.execute(
        sql.SQL("CREATE TEMP TABLE {} ({}) ON COMMIT DROP").format(
            sql.Identifier(name), sql.SQL(", ").join(columns)
        )
    )


def _copy_statement(name: str, columns: Sequence[str]) -> sql.Composed:
    return sql.SQL("COPY {} ({}) FROM STDIN (FORMAT csv)").format(
        sql.Identifier(name), sql.SQL(", ").join(sql.Identifier(c) for c in columns)
    )


def _csv(table: pa.Table | pa.RecordBatch) -> bytes:
    sink = io.BytesIO()
    pacsv.write_csv(table, sink, pacsv.WriteOptions(include_header=False, batch_size=4096))
    return sink.getvalue()


def _conform(batch: pa.RecordBatch, schema: pa.Schema, where: str) -> pa.RecordBatch:
    """``batch`` with exactly ``schema``'s columns and types; refuse what does not fit."""
    arrays = []
    for f in schema:
        index = batch.schema.get_field_index(f.name)
        if index < 0:
            arrays.append(pa.nulls(batch.num_rows, f.type))
            continue
        column = batch.column(index)
        if not column.type.equals(f.type):
            if pa.types.is_string(f.type) and not (
                pa.types.is_string(column.type)
                or pa.types.is_large_string(column.type)
                or pa.types.is_dictionary(column.type)
            ):
                raise PredictionImportError(
                    f"{where}: column {f.name!r} has type {column.type}, not text; nothing was "
                    "imported"
                )
            try:
                column = column.cast(f.type)
            except (pa.ArrowInvalid, pa.ArrowNotImplementedError) as exc:
                raise PredictionImportError(
                    f"{where}: column {f.name!r} has type {column.type}, not {f.type}: {exc}"
                ) from exc
        arrays.append(column)
    return pa.RecordBatch.from_arrays(arrays, schema=schema)


def _first_empty(column: pa.Array) -> int | None:
    """Index of the first null (or, for text, empty after trimming) value, else None."""
    mask = column.is_null()
    if pa.types.is_string(column.type):
        mask = pc.or_(mask, pc.equal(pc.utf8_trim_whitespace(column), ""))
    mask = pc.fill_null(mask, True)
    if not pc.any(mask).as_py():
        return None
    return int(pc.index(mask, True).as_py())


def _copy_output(
    cur: psycopg.Cursor[Any],
    *,
    spec: ImportSpec,
    outputs: Iterable[OutputChunk],
    where: Any,
) -> int:
    """COPY the output into ``batch_output``; returns its row count."""
    schema = spec.output_schema
    _create_temp_table(cur, "batch_output", schema)
    full = pa.schema([pa.field("_file", pa.int32()), pa.field("_row", pa.int64()), *schema])
    lines: list[tuple[int, int, int]] = []  # (first COPY line, file, first row) per chunk
    total = 0
    try:
        with cur.copy(_copy_statement("batch_output", full.names)) as copy:
            for chunk in outputs:
                batch = _conform(chunk.batch, schema, where(chunk.file_index, chunk.offset))
                n = batch.num_rows
                if n == 0:
                    continue
                for name in spec.not_null:
                    row = _first_empty(batch.column(name))
                    if row is not None:
                        raise PredictionImportError(
                            f"{where(chunk.file_index, chunk.offset + row)}: null or empty "
                            f"{name!r}; nothing was imported"
                        )
                ids = pa.array([chunk.file_index] * n, pa.int32())
                rows = pa.array(range(chunk.offset, chunk.offset + n), pa.int64())
                framed = pa.RecordBatch.from_arrays([ids, rows, *batch.columns], schema=full)
                for start in range(0, n, COPY_CHUNK_ROWS):
                    part = framed.slice(start, COPY_CHUNK_ROWS)
                    lines.append((total + start + 1, chunk.file_index, chunk.offset + start))
                    copy.write(_csv(part))
                total += n
    except psycopg.Error as exc:
        match = _COPY_LINE.search(str(exc))
        if match and lines:
            line = int(match.group(1))
            first, file_index, row = max((e for e in lines if e[0] <= line), default=lines[0])
            raise PredictionImportError(
                f"{where(file_index, row + line - first)}: refused by the database: "
                f"{str(exc).strip().splitlines()[0]}; nothing was imported"
            ) from exc
        raise
    cur.execute("ANALYZE batch_output")
    return total


def _copy_facts(
    cur: psycopg.Cursor[Any], schema: pa.Schema, facts: Iterable[pa.RecordBatch]
) -> None:
    """COPY the job's product facts into ``batch_product`` (indexed by code)."""
    _create_temp_table(cur, "batch_product", schema)
    full = pa.schema([pa.field("_file", pa.int32()), pa.field("_row", pa.int64()), *schema])
    offset = 0
    with cur.copy(_copy_statement("batch_product", full.names)) as copy:
        for batch in facts:
            batch = _conform(batch, schema, f"product facts row {offset}")
            n = batch.num_rows
            if n == 0:
                continue
            framed = pa.RecordBatch.from_arrays(
                [
                    pa.array([0] * n, pa.int32()),
                    pa.array(range(offset, offset + n), pa.int64()),
                    *batch.columns,
                ],
                schema=full,
            )
            copy.write(_csv(framed))
            offset += n
    cur.execute("CREATE INDEX ON batch_product (code)")
    cur.execute("ANALYZE batch_product")


# -- ready-made prediction rows ------------------------------------------------------------------

PREDICTION_SCHEMA = pa.schema(
    [
        pa.field("barcode", pa.string()),
        pa.field("type", pa.string()),
        pa.field("data", pa.string()),  # JSON text, stored as jsonb
        pa.field("timestamp", pa.timestamp("us")),
        pa.field("value_tag", pa.string()),
        pa.field("value", pa.string()),
        pa.field("source_image", pa.string()),
        pa.field("automatic_processing", pa.bool_()),
        pa.field("predictor", pa.string()),
        pa.field("predictor_version", pa.string()),
        pa.field("confidence", pa.float64()),
        pa.field("server_type", pa.string()),
    ]
)

PREDICTION_SPEC = ImportSpec(
    output_schema=PREDICTION_SCHEMA,
    not_null=("barcode", "type", "data"),
    key_column="barcode",
    predictions_sql="""
SELECT _file, _row, barcode, type, data::jsonb, coalesce("timestamp", %(now)s), value_tag,
    value, source_image, automatic_processing, predictor, predictor_version, confidence,
    coalesce(nullif(server_type, ''), 'off')
FROM batch_output
""",
)


def _prediction_chunks(batches: Iterable[pa.RecordBatch]) -> Iterator[OutputChunk]:
    offset = 0
    for batch in batches:
        if isinstance(batch, pa.Table):
            for part in batch.to_batches():
                yield from _prediction_chunks([part])
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
        yield OutputChunk(file_index=0, offset=offset, batch=batch)
        offset += batch.num_rows
