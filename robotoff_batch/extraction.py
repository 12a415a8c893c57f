"""Extract products from the Open Food Facts Parquet dump with DuckDB.

Generic, job-type-independent pieces:

* :func:`check_dump` validates a dump before anything runs: the file exists, is readable
  Parquet and has the columns a job type needs with compatible types. Only the Parquet footer
  is read, so it is cheap even on the multi-GB real dump.
* :func:`extract_to_parquet` runs a parameterised DuckDB query (named parameters such as
  ``$dump_path`` and ``$limit``, bound by DuckDB, never interpolated into the SQL) and streams
  the result as Arrow record batches into a Parquet file, with bounded memory.

A job type's selection (its SQL, its columns) lives in its own module (``job_types/``).
"""

from __future__ import annotations

import difflib
import logging
import os
import shutil
import tempfile
import threading
import time
from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import duckdb
import pyarrow as pa
import pyarrow.parquet as pq

logger = logging.getLogger(__name__)

# Type families understood by check_dump (the values of a required_columns mapping). DuckDB
# type names are accepted too and mapped to a family (see _FAMILY_ALIASES).
LANGUAGE_FIELD = "list<struct<lang: string, text: string>>"

DEFAULT_MEMORY_LIMIT = "2GB"
DEFAULT_MAX_THREADS = 4
DEFAULT_BATCH_SIZE = 100_000
_PROGRESS_POLL_S = 5.0

_FAMILY_ALIASES: Mapping[str, str] = {
    "string": "string",
    "str": "string",
    "text": "string",
    "varchar": "string",
    "integer": "integer",
    "int": "integer",
    "int32": "integer",
    "int64": "integer",
    "bigint": "integer",
    "smallint": "integer",
    "tinyint": "integer",
    "hugeint": "integer",
    "float": "float",
    "double": "float",
    "real": "float",
    "float32": "float",
    "float64": "float",
    "number": "number",
    "numeric": "number",
    "boolean": "boolean",
    "bool": "boolean",
    "list<string>": "list<string>",
    "varchar[]": "list<string>",
    "string[]": "list<string>",
    LANGUAGE_FIELD: "language_field",
    "language_field": "language_field",
    "list<struct<lang,text>>": "language_field",
    'struct(lang varchar, "text" varchar)[]': "language_field",
    "struct(lang varchar, text varchar)[]": "language_field",
}


class ExtractionError(ValueError):
    """The dump cannot be used, or the extraction query failed; the message says why."""


@dataclass(frozen=True)
class ExtractionResult:
    """What :func:`extract_to_parquet` wrote."""

    rows: int
    output_path: Path
    duration_s: float
    bytes: int


# --------------------------------------------------------------------------------------------
# check_dump
# --------------------------------------------------------------------------------------------


def _is_string(t: pa.DataType) -> bool:
    return bool(pa.types.is_string(t) or pa.types.is_large_string(t) or pa.types.is_string_view(t))


def _is_list(t: pa.DataType) -> bool:
    return bool(
        pa.types.is_list(t)
        or pa.types.is_large_list(t)
        or pa.types.is_list_view(t)
        or pa.types.is_large_list_view(t)
        or pa.types.is_fixed_size_list(t)
    )


def _type_matches(family: str, t: pa.DataType) -> bool:
    """Whether Arrow type ``t`` belongs to the type ``family``."""
    if pa.types.is_dictionary(t):
        t = t.value_type
    if family == "string":
        return _is_string(t)
    if family == "integer":
        return bool(pa.types.is_integer(t))
    if family == "float":
        return bool(pa.types.is_floating(t))
    if family == "number":
        return bool(pa.types.is_integer(t) or pa.types.is_floating(t) or pa.types.is_decimal(t))
    if family == "boolean":
        return bool(pa.types.is_boolean(t))
    if family == "list<string>":
        return _is_list(t) and _is_string(t.value_type)
    if family == "language_field":
        if not _is_list(t) or not pa.types.is_struct(t.value_type):
            return False
        struct = t.value_type
        names = {struct.field(i).name: struct.field(i).type for i in range(struct.num_fields)}
        return all(k in names and _is_string(names[k]) for k in ("lang", "text"))
    return True  # a free-text description: presence only


def _family(expected: str) -> str | None:
    """Normalise an expected type (family name or DuckDB type) to a family, or None."""
    key = " ".join(expected.strip().lower().split())
    if key in _FAMILY_ALIASES:
        return _FAMILY_ALIASES[key]
    if key.replace(" ", "") in _FAMILY_ALIASES:
        return _FAMILY_ALIASES[key.replace(" ", "")]
    return None


def _local_path(dump_path: str) -> Path | None:
    """The local filesystem path of ``dump_path``, or None for a remote URI (gs://, s3://...)."""
    if dump_path.startswith("file://"):
        return Path(dump_path[len("file://") :])
    if "://" in dump_path:
        return None
    return Path(dump_path)


def read_dump_schema(dump_path: str) -> pa.Schema:
    """Read the Arrow schema from the dump's Parquet footer, with errors naming the path
    (:class:`ExtractionError`)."""
    local = _local_path(dump_path)
    if local is None:
        # Remote dump: let DuckDB read the footer (needs its httpfs extension for http/s3).
        try:
            with duckdb.connect() as con:
                reader = con.sql(
                    "SELECT * FROM read_parquet($p) LIMIT 0", params={"p": dump_path}
                ).to_arrow_reader()
                return reader.schema
        except duckdb.Error as exc:
            raise ExtractionError(f"product dump {dump_path}: cannot read it ({exc})") from exc
    if not local.exists():
        raise ExtractionError(f"product dump {dump_path}: no such file")
    if local.is_dir():
        raise ExtractionError(f"product dump {dump_path}: is a directory, not a Parquet file")
    if not os.access(local, os.R_OK):
        raise ExtractionError(f"product dump {dump_path}: permission denied (not readable)")
    try:
        return pq.read_schema(local)
    except PermissionError as exc:
        raise ExtractionError(f"product dump {dump_path}: permission denied ({exc})") from exc
    except (pa.ArrowInvalid, pa.ArrowException, OSError) as exc:
        raise ExtractionError(
            f"product dump {dump_path}: not a readable Parquet file ({exc})"
        ) from exc


def check_dump(*, dump_path: str, required_columns: Mapping[str, str]) -> pa.Schema:
    """Check that ``dump_path`` is a readable Parquet file with the ``required_columns``
    (:func:`check_columns`); returns its schema, so the footer is read once.

    Only the Parquet footer is read. Raises :class:`ExtractionError` naming the path, and the
    columns at fault with close matches among the dump's columns.
    """
    schema = read_dump_schema(dump_path)
    check_columns(schema, dump_path=dump_path, required_columns=required_columns)
    return schema


def check_columns(
    schema: pa.Schema, *, dump_path: str, required_columns: Mapping[str, str]
) -> None:
    """Check that the dump's ``schema`` (its footer, read by :func:`read_dump_schema`) has the
    ``required_columns``.

    ``required_columns`` maps a column name to its expected type: a family (``"string"``,
    ``"integer"``, ``"float"``, ``"number"``, ``"boolean"``, ``"list<string>"``,
    :data:`LANGUAGE_FIELD`), a DuckDB type name (``"VARCHAR"``, ``"BIGINT"``, ``"VARCHAR[]"``,
    ...), or a free-text description (then only the column's presence is checked). Integer
    widths are compatible with each other (int32 and int64 are both "integer").

    Raises :class:`ExtractionError` naming ``dump_path``, and the columns at fault with close
    matches among the dump's columns.
    """
    names = list(schema.names)
    problems: list[str] = []
    for column, expected in required_columns.items():
        if column not in names:
            close = difflib.get_close_matches(column, names, n=3, cutoff=0.6)
            hint = f" (close matches: {', '.join(close)})" if close else ""
            problems.append(f"missing column {column!r}{hint}")
            continue
        family = _family(expected)
        if family is None:
            logger.debug("column %s: free-text expected type %r, presence only", column, expected)
            continue
        actual = schema.field(column).type
        if not _type_matches(family, actual):
            problems.append(f"column {column!r} has type {actual}, expected {expected}")
    if problems:
        raise ExtractionError(
            f"product dump {dump_path}: {'; '.join(problems)} ({len(names)} columns in the file)"
        )
    logger.info("product dump %s: %d columns, required columns present", dump_path, len(names))


# --------------------------------------------------------------------------------------------
# extract_to_parquet
# --------------------------------------------------------------------------------------------


def _default_threads() -> int:
    return max(1, min(os.cpu_count() or 1, DEFAULT_MAX_THREADS))


def _poll_progress(
    con: duckdb.DuckDBPyConnection,
    stop: threading.Event,
    progress: Callable[[str], None],
    started: float,
) -> None:
    """Report DuckDB's query progress every few seconds until ``stop`` is set."""
    last = -1.0
    while not stop.wait(_PROGRESS_POLL_S):
        try:
            pct = float(con.query_progress())
        except Exception:  # progress is best effort, never fail the query for it
            return
        if pct >= 0 and pct != last:
            progress(f"query {pct:.0f}% after {time.monotonic() - started:.0f}s")
            last = pct


# A text PostgreSQL can store: its ``text`` type cannot hold the NUL character (U+0000; every
# other character of valid UTF-8, which is all DuckDB and Arrow strings can be, it can). The
# one rule every staged text goes through (``pg_text(x)``, a DuckDB macro: see
# :func:`connect`), and its test (``has_nul(x)``).
PG_TEXT_MACROS = (
    "CREATE OR REPLACE TEMP MACRO pg_text(s) AS replace(s, chr(0), '')",
    "CREATE OR REPLACE TEMP MACRO has_nul(s) AS coalesce(contains(s, chr(0)), false)",
)


@contextmanager
def connect(
    *,
    memory_limit: str = DEFAULT_MEMORY_LIMIT,
    threads: int | None = None,
    spill_parent: Path,
    progress: Callable[[str], None] | None = None,
    label: str = "",
) -> Iterator[duckdb.DuckDBPyConnection]:
    """A DuckDB connection bounded by ``memory_limit`` (spilling to a temporary directory
    under ``spill_parent``, removed afterwards), with :data:`PG_TEXT_MACROS` defined and,
    when ``progress`` is given, the running statement's progress reported every few seconds.
    """
    threads = threads or _default_threads()
    spill_dir = tempfile.mkdtemp(prefix=".duckdb-spill-", dir=spill_parent)
    stop = threading.Event()
    poller: threading.Thread | None = None
    started = time.monotonic()
    try:
        with duckdb.connect(
            config={"memory_limit": memory_limit, "threads": threads, "temp_directory": spill_dir}
        ) as con:
            for macro in PG_TEXT_MACROS:
                con.execute(macro)
            if progress is not None:
                progress(f"{label or 'extracting'} (threads={threads}, memory={memory_limit})")
                con.execute("SET enable_progress_bar = true")
                con.execute("SET enable_progress_bar_print = false")
                poller = threading.Thread(
                    target=_poll_progress,
                    args=(con, stop, progress, started),
                    name="duckdb-progress",
                    daemon=True,
                )
                poller.start()
            else:
                con.execute("SET enable_progress_bar = false")
            try:
                yield con
            finally:
                stop.set()
                if poller is not None:
                    poller.join()
    finally:
        stop.set()
        shutil.rmtree(spill_dir, ignore_errors=True)


def conform(data: pa.RecordBatch | pa.Table, schema: pa.Schema) -> pa.RecordBatch | pa.Table:
    """``data`` as ``schema``: its columns relabelled when their types already are the
    schema's (what DuckDB's result usually is: no cast, and no import of pyarrow.compute, which
    a cast needs and which costs a fresh launch process ~0.15 s of CPU), else cast. A NULL in a
    column the schema declares non-nullable is refused either way (ValueError), as a cast
    refuses it."""
    if data.schema.names != schema.names or data.schema.types != schema.types:
        return data.cast(schema)
    for column, target in zip(data.columns, schema, strict=True):
        if not target.nullable and column.null_count:
            raise ValueError(f"Casting field {target.name!r} with null values to non-nullable")
    if isinstance(data, pa.RecordBatch):
        return pa.RecordBatch.from_arrays(data.columns, schema=schema)
    return pa.Table.from_arrays(data.columns, schema=schema)


def write_parquet(
    relation: duckdb.DuckDBPyRelation,
    output_path: Path,
    *,
    schema: pa.Schema | None = None,
    batch_size: int = DEFAULT_BATCH_SIZE,
    row_group_size: int | None = None,
    progress: Callable[[str], None] | None = None,
) -> int:
    """Stream ``relation`` as Arrow batches into ``output_path`` (zstd Parquet), written to a
    temporary name then renamed, so a failure leaves no partial file; ``schema``, when given,
    is the output schema the batches are cast to. Returns the rows written (0: a valid empty
    file)."""
    output_path = Path(output_path)
    output_path.parent.mkdir(parents=True, exist_ok=True)
    tmp_output = output_path.with_name(f".{output_path.name}.tmp")
    rows = 0
    try:
        reader = relation.to_arrow_reader(batch_size)
        out_schema = schema if schema is not None else reader.schema
        with pq.ParquetWriter(tmp_output, out_schema, compression="zstd") as writer:
            for batch in reader:
                if batch.num_rows == 0:
                    continue
                if schema is not None:
                    batch = conform(batch, schema)
                writer.write_batch(batch, row_group_size=row_group_size)
                rows += batch.num_rows
                if progress is not None:
                    progress(f"{rows} rows written to {output_path.name}")
        os.replace(tmp_output, output_path)
    finally:
        tmp_output.unlink(missing_ok=True)
    return rows


def extract_to_parquet(
    *,
    dump_path: str,
    sql: str,
    params: Mapping[str, object],
    output_path: Path,
    progress: Callable[[str], None] | None = None,
    memory_limit: str = DEFAULT_MEMORY_LIMIT,
    threads: int | None = None,
    schema: pa.Schema | None = None,
    batch_size: int = DEFAULT_BATCH_SIZE,
) -> ExtractionResult:
    """Run ``sql`` against the dump and write its result to ``output_path`` (Parquet).

    ``sql`` uses named parameters (``$dump_path``, ``$limit``, ...); ``params`` gives their
    values and ``dump_path`` is bound as ``$dump_path`` when the SQL uses it (DuckDB refuses
    parameters a statement does not use) unless ``params`` sets it. Values are
    bound by DuckDB, never interpolated into the SQL text.

    The result is streamed as Arrow record batches into a ``pq.ParquetWriter`` (memory bounded
    by DuckDB's ``memory_limit``, spilling to a temporary directory next to the output, plus one
    batch), written to a temporary file then renamed, so a failed run leaves no partial output.
    ``schema``, when given, is the output schema the batches are cast to (e.g. to declare a
    column non-nullable). A query that selects nothing writes a valid 0-row file.

    Raises :class:`ExtractionError` if the query fails.
    """
    started = time.monotonic()
    output_path = Path(output_path)
    output_path.parent.mkdir(parents=True, exist_ok=True)
    bound: dict[str, object] = dict(params)
    if "$dump_path" in sql:
        bound.setdefault("dump_path", dump_path)
    with connect(
        memory_limit=memory_limit,
        threads=threads,
        spill_parent=output_path.parent,
        progress=progress,
        label=f"extracting from {dump_path}",
    ) as con:
        try:
            relation = con.sql(sql, params=bound)
            if relation is None:
                raise ExtractionError("extraction SQL returned no result set")
            rows = write_parquet(
                relation, output_path, schema=schema, batch_size=batch_size, progress=progress
            )
        except duckdb.Error as exc:
            raise ExtractionError(f"extraction from {dump_path} failed: {exc}") from exc
        except (pa.ArrowInvalid, pa.ArrowTypeError) as exc:
            raise ExtractionError(
                f"extraction from {dump_path}: result does not fit the output schema ({exc})"
            ) from exc
    duration = time.monotonic() - started
    size = output_path.stat().st_size
    logger.info(
        "extracted %d rows from %s to %s (%d bytes) in %.2fs",
        rows,
        dump_path,
        output_path,
        size,
        duration,
    )
    if progress is not None:
        progress(f"done: {rows} rows, {size} bytes in {duration:.1f}s")
    return ExtractionResult(rows=rows, output_path=output_path, duration_s=duration, bytes=size)
