"""Arrow to PostgreSQL: batches rendered to CSV by Arrow and streamed with ``COPY`` into the
import's temporary tables (no per-row Python), refused whole with file and row named."""

from __future__ import annotations

import io
import re
from collections.abc import Iterable, Iterator, Sequence
from typing import Any

import psycopg
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.csv as pacsv
from psycopg import sql

from robotoff_batch.predictions.model import (
    PREDICTION_COLUMNS,
    REQUIRED_COLUMNS,
    ImportSpec,
    OutputChunk,
    PredictionImportError,
    PredictionStoreError,
)

_COPY_LINE = re.compile(r"COPY \w+, line (\d+)")
#: Rows rendered to CSV per COPY chunk (bounded memory whatever the output size).
COPY_CHUNK_ROWS = 2_048

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


def copy_output(
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


def copy_facts(
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


def prediction_chunks(batches: Iterable[pa.RecordBatch]) -> Iterator[OutputChunk]:
    offset = 0
    for batch in batches:
        if isinstance(batch, pa.Table):
            for part in batch.to_batches():
                yield from prediction_chunks([part])
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
