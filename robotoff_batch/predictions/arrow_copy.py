"""Arrow to PostgreSQL: batches rendered in COPY's binary format by Arrow and NumPy and
streamed with ``COPY`` into the import's temporary tables (no per-row Python), refused whole
with file and row named."""

from __future__ import annotations

import ctypes
import os
import re
from collections.abc import Iterable, Iterator, Sequence
from typing import Any

import numpy as np
import psycopg
import pyarrow as pa
import pyarrow.compute as pc
from psycopg import sql
from psycopg.copy import QueuedLibpqWriter

from robotoff_batch.predictions.model import (
    PREDICTION_COLUMNS,
    REQUIRED_COLUMNS,
    ImportSpec,
    OutputChunk,
    PredictionImportError,
    PredictionStoreError,
)

_COPY_LINE = re.compile(r"COPY \w+, line (\d+)")
#: Rows rendered per COPY chunk (bounded memory whatever the output size).
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


def _create_temp_table(
    cur: psycopg.Cursor[Any], name: str, schema: pa.Schema, extra: Sequence[str] = ()
) -> None:
    columns = [sql.SQL("_file integer NOT NULL"), sql.SQL("_row bigint NOT NULL")] + [
        sql.SQL("{} {}").format(sql.Identifier(f.name), sql.SQL(_pg_type(f.type))) for f in schema
    ]
    columns += [sql.SQL(c) for c in extra]
    cur.execute(
        sql.SQL("CREATE TEMP TABLE {} ({}) ON COMMIT DROP").format(
            sql.Identifier(name), sql.SQL(", ").join(columns)
        )
    )


def _copy_statement(name: str, columns: Sequence[str]) -> sql.Composed:
    return sql.SQL("COPY {} ({}) FROM STDIN (FORMAT binary)").format(
        sql.Identifier(name), sql.SQL(", ").join(sql.Identifier(c) for c in columns)
    )


# -- Arrow to COPY's binary format --------------------------------------------------------------
# The temporary tables are filled in COPY's binary format (PostgreSQL's "COPY", "Binary
# Format"): per row a 16-bit field count, then per field a 32-bit length (-1: NULL) and the
# value's bytes in the type's send format (big-endian integers and doubles, UTF-8 text as is,
# 1-byte booleans, timestamps as microseconds since 2000-01-01, uuids as their 16 bytes).
# Built column by column with Arrow and NumPy, joined row by row by Arrow (no per-row Python).
# The server then reads each value as it lies, where CSV made it find every delimiter and
# quote and parse every number, uuid and timestamp from text: at 1,000,000 rows the output's
# COPY 1.7-2.1 s against 2.6-2.8 s, the facts' 1.24 s against 2.1-2.2 s (benchmarks/README.md).
# What the text checks above let through, the server still verifies (UTF-8) and names its
# COPY line ("line" counts rows in this format too), as with CSV.

#: The binary format's header (signature, flags, no extension) and trailer.
COPY_BINARY_HEADER = b"PGCOPY\n\xff\r\n\x00" + bytes(8)
COPY_BINARY_TRAILER = b"\xff\xff"
_NULL_LENGTH = pa.scalar(b"\xff\xff\xff\xff", pa.binary())
_EMPTY = pa.scalar(b"", pa.binary())
_PG_EPOCH_US = 946_684_800_000_000  # 2000-01-01 in Unix microseconds
#: NumPy's big-endian dtype of each fixed-width type's send format.
_SEND_DTYPES = {
    "integer": ">i4",
    "bigint": ">i8",
    "double precision": ">f8",
    "boolean": "u1",
    "timestamp": ">i8",
}


def _fixed(values: np.ndarray) -> pa.Array:
    """One binary value per element of ``values``: its bytes (the array's dtype and order)."""
    width = values.dtype.itemsize
    fixed = pa.Array.from_buffers(
        pa.binary(width), len(values), [None, pa.py_buffer(values.tobytes())]
    )
    return fixed.cast(pa.binary())


def _binary_field(column: pa.Array, pg_type: str) -> list[pa.Array | pa.Scalar]:
    """The length prefixes and the values of ``column`` as a ``pg_type`` field."""
    nulls = column.null_count > 0
    if pg_type == "text":
        data = column.cast(pa.string()).view(pa.binary())
        lengths = pc.binary_length(data).fill_null(-1).to_numpy(zero_copy_only=False)
        return [_fixed(lengths.astype(">i4")), data.fill_null(_EMPTY) if nulls else data]
    if pg_type == "uuid":  # (16-byte values: random_uuids)
        width, payload = 16, column.cast(pa.binary())
    else:
        if pg_type not in _SEND_DTYPES:
            raise PredictionStoreError(f"no binary COPY encoding for PostgreSQL type {pg_type}")
        if pg_type == "timestamp":
            micros = column.cast(pa.timestamp("us", column.type.tz)).cast(pa.int64())
            values = micros.fill_null(0).to_numpy(zero_copy_only=False) - _PG_EPOCH_US
        elif pg_type == "boolean":
            values = column.fill_null(False).to_numpy(zero_copy_only=False)
        else:
            values = column.fill_null(0).to_numpy(zero_copy_only=False)
        send = values.astype(_SEND_DTYPES[pg_type])
        width, payload = send.dtype.itemsize, _fixed(send)
    length = pa.scalar(width.to_bytes(4, "big"), pa.binary())
    if not nulls:
        return [length, payload]
    valid = column.is_valid()
    return [pc.if_else(valid, length, _NULL_LENGTH), pc.if_else(valid, payload, _EMPTY)]


def binary_rows(batch: pa.RecordBatch, pg_types: Sequence[str]) -> bytes:
    """``batch``'s rows in COPY's binary format (no header or trailer), column ``i`` as a
    field of type ``pg_types[i]`` (the temporary table's)."""
    n = batch.num_rows
    if n == 0:
        return b""
    parts: list[pa.Array | pa.Scalar] = [pa.scalar(len(pg_types).to_bytes(2, "big"), pa.binary())]
    for column, pg_type in zip(batch.columns, pg_types, strict=True):
        parts.extend(_binary_field(column, pg_type))
    rows = pc.binary_join_element_wise(*parts, _EMPTY)
    _, offsets, data = rows.buffers()
    ends = np.frombuffer(offsets, dtype=np.int32, count=n + 1, offset=4 * rows.offset)
    start, end = int(ends[0]), int(ends[n])
    return data.slice(start, end - start).to_pybytes()  # (one copy: the rows' bytes only)


def _column_types(schema: pa.Schema) -> list[str]:
    """The PostgreSQL types of ``_file``, ``_row`` and ``schema``'s columns, as
    :func:`_create_temp_table` declares them."""
    return ["integer", "bigint", *(_pg_type(f.type) for f in schema)]


#: ``default_statistics_target`` of the ANALYZE of the two large temporary tables: a sample
#: of 3,000 rows (300 x the target) instead of 30,000. What the planner reads of them, their
#: row counts (from their pages, not the sample), null fractions, the few languages and
#: engines, and codes all distinct, is as well known from 3,000 rows; the 30,000-row sample of
#: a 1,000,000-row output and its facts cost 0.3 s (the whole ANALYZE now 0.03 s).
TEMP_STATISTICS_TARGET = 10


def analyze_large(cur: psycopg.Cursor[Any], table: str) -> None:
    """ANALYZE ``table`` (a temporary table of the job's rows) on a smaller sample
    (:data:`TEMP_STATISTICS_TARGET`); the setting is the transaction's again afterwards."""
    cur.execute(f"SET LOCAL default_statistics_target = {TEMP_STATISTICS_TARGET}")
    cur.execute(sql.SQL("ANALYZE {}").format(sql.Identifier(table)))
    cur.execute("SET LOCAL default_statistics_target TO DEFAULT")


#: Buffers (of at most 128 KiB: psycopg splits larger writes) queued for the COPY's sending
#: thread: 8 MiB at most in flight, whatever the output's size.
COPY_QUEUE_BUFFERS = 64


class _BoundedQueuedWriter(QueuedLibpqWriter):
    """psycopg's queued COPY writer, its queue bounded (psycopg's holds 1,024 buffers).

    A thread sends the rows while this one reads and renders the next ones (Arrow releases
    the GIL): the client's work (1.3 s of a 1,000,000-row output) runs beside the server's
    instead of before it, as it did with the default writer, which returns only once the
    socket took the chunk."""

    def __init__(self, cursor: psycopg.Cursor[Any]) -> None:
        super().__init__(cursor)
        self._queue = type(self._queue)(maxsize=COPY_QUEUE_BUFFERS)  # (psycopg's class)


#: Allocations from this size up get their own mapping from glibc's malloc, returned to the
#: system when freed (:func:`_bound_heap`).
COPY_MMAP_THRESHOLD_BYTES = 256 << 10
_M_MMAP_THRESHOLD = -3  # glibc's mallopt parameter (malloc.h)
_heap_bounded = False


def _bound_heap() -> None:
    """Fix glibc malloc's mmap threshold at :data:`COPY_MMAP_THRESHOLD_BYTES`, once per process.

    The rendered COPY chunks (a few hundred KB each) are made by this thread and freed by the
    writer's. glibc raises its mmap threshold each time such a block is freed, so after the
    first few the chunks come from the heap, whose freed blocks are kept, fragmented: the
    import's peak RSS grew with the output (+52 MiB over the process's baseline at 1,000,000
    rows, +32 MiB at 100,000; single runs, benchmarks/README.md). With the threshold fixed,
    each chunk is mapped and unmapped: +34 MiB and +21 MiB. Nothing happens where the C
    library has no ``mallopt`` (not glibc)."""
    global _heap_bounded
    if _heap_bounded:
        return
    _heap_bounded = True
    try:
        mallopt = ctypes.CDLL(None).mallopt
    except (OSError, AttributeError):  # pragma: no cover - not glibc
        return
    mallopt.argtypes = [ctypes.c_int, ctypes.c_int]
    mallopt(_M_MMAP_THRESHOLD, COPY_MMAP_THRESHOLD_BYTES)


def _writer(cur: psycopg.Cursor[Any]) -> _BoundedQueuedWriter:
    _bound_heap()
    return _BoundedQueuedWriter(cur)


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


def _empty_mask(column: pa.Array) -> pa.Array:
    """True where a value is null (or, for text, empty after trimming)."""
    mask = column.is_null()
    if pa.types.is_string(column.type):
        mask = pc.or_(mask, pc.equal(pc.utf8_trim_whitespace(column), ""))
    return pc.fill_null(mask, True)


def _any_nul(column: pa.Array) -> bool:
    """Whether a NUL byte is among the values' bytes: one memchr over the column's value
    buffer (the bytes its offsets span), several times faster than a per-value search."""
    if len(column) == 0 or column.null_count == len(column):
        return False
    _, offsets, data = column.buffers()
    if data is None:
        return False
    width = 8 if pa.types.is_large_string(column.type) else 4
    spans = memoryview(offsets).cast("q" if width == 8 else "i")
    start, end = spans[column.offset], spans[column.offset + len(column)]
    return data.slice(start, end - start).to_pybytes().find(b"\x00") >= 0


def _invalid_text(column: pa.Array) -> list[tuple[int, str]]:
    """(index, why) of the values PostgreSQL text cannot hold: a NUL byte, or bytes that are
    not UTF-8 (Parquet does not check them)."""
    bad: list[tuple[int, str]] = []
    if not pa.types.is_string(column.type):
        return bad
    if _any_nul(column):  # rare: find the rows
        nul = pc.fill_null(pc.match_substring(column.cast(pa.binary()), b"\x00"), False)
        bad.extend((int(i), "a NUL byte") for i in pc.indices_nonzero(nul).to_pylist())
    try:
        column.validate(full=True)
    except pa.ArrowInvalid:  # rare: find the rows, one by one
        for i, value in enumerate(column.cast(pa.binary()).to_pylist()):
            try:
                value is None or value.decode("utf-8")
            except UnicodeDecodeError:
                bad.append((i, "bytes that are not UTF-8"))
    return bad


#: A row held back from the import: (file index, 0-based row in its file, key value, why).
BadRow = tuple[int, int, Any, str]


#: Outputs of more rows than this keep no copy of their keys (:class:`CopiedKeys`: 8 bytes a
#: row, 32 MB here): their row checks run in SQL.
COPIED_KEYS_MAX_ROWS = 4_000_000
#: A key of 1 to 17 ASCII digits (every Open Food Facts barcode) is held as one int64.
_MAX_DIGITS = 17
_LENGTH_SHIFT = 57  # 10**17 < 2**57: the digits' value below, their count above


def _is_digit_key(column: pa.Array) -> pa.Array:
    """True where a value is 1-17 ASCII digits (false for an empty text, null for a null)."""
    return pc.and_(
        pc.ascii_is_decimal(column), pc.less_equal(pc.binary_length(column), _MAX_DIGITS)
    )


def _digit_keys(column: pa.Array) -> np.ndarray | None:
    """Each key as one int64, its digit count in the top bits and its value below (one-to-one
    on strings of 1-17 ASCII digits: "0012" and "12" differ); None if a key is not one."""
    if column.null_count or not pc.all(_is_digit_key(column)).as_py():
        return None
    lengths = pc.binary_length(column).to_numpy(zero_copy_only=False).astype(np.int64)
    values = pc.cast(column, pa.int64()).to_numpy(zero_copy_only=False)
    return (lengths << _LENGTH_SHIFT) | values


class CopiedKeys:
    """What the client saw of the rows it copied, so that the row checks (row_checks.py) run
    their SQL only where there is something to find.

    Filled while the rows stream: the output's keys, each held as one int64 when it is a
    barcode of 1-17 digits (8 bytes a row, 8 MB at 1,000,000 rows; none kept past
    :data:`COPIED_KEYS_MAX_ROWS` or once a key is not such a barcode), the JSON columns that
    hold a value, how many facts mark a product deleted. Once the output is copied the keys
    are sorted (NumPy, 0.1 s at 1,000,000 rows), each once, and each facts batch, as it
    streams, marks the keys it holds (a binary search of its codes), none of its codes
    kept. :meth:`keys_distinct` and :meth:`keys_all_products` then say whether the unique
    check of the key and the facts check can find anything: their SQL (a hash aggregate of
    ``batch_output``, a hash anti-join with ``batch_product``) cost 0.5-0.9 s each on the
    server at 1,000,000 rows. What they learn holds for every subset of the copied rows (rows
    only leave ``batch_output`` before those checks), and each answers False whenever it
    cannot be sure: only a statement that would have found nothing is skipped."""

    def __init__(
        self,
        key_column: str | None,
        json_columns: Sequence[str] = (),
        *,
        max_rows: int = COPIED_KEYS_MAX_ROWS,
    ) -> None:
        self.key_column = key_column
        self.max_rows = max_rows
        self.json_columns = tuple(json_columns)
        self.json_filled: set[str] = set()
        self.deleted = 0
        self._rows = 0
        self._keys: list[np.ndarray] | None = [] if key_column is not None else None
        self._sorted: np.ndarray | None = None  # the distinct keys, ascending
        self._distinct = False
        self._found: np.ndarray | None = None  # per sorted key: among the facts' codes
        self._facts_seen = False

    def add_output(self, batch: pa.RecordBatch) -> None:
        """The copied rows of one output batch (the held-back ones already left out)."""
        if self._keys is not None and self.key_column is not None:
            self._rows += batch.num_rows
            keys = _digit_keys(batch.column(self.key_column))
            if keys is None or self._rows > self.max_rows:
                self._keys = None  # (the SQL checks run)
            else:
                self._keys.append(keys)
        for name in self.json_columns:
            if batch.column(name).null_count < batch.num_rows:
                self.json_filled.add(name)

    def output_done(self) -> None:
        """The output is copied: sort its keys."""
        if self._keys is not None:
            keys = np.concatenate(self._keys) if self._keys else np.empty(0, np.int64)
            self._keys = None
            keys.sort()  # (in place: no third copy)
            repeats = keys[1:] == keys[:-1]
            self._distinct = not bool(repeats.any())
            self._sorted = keys if self._distinct else keys[1:][~repeats]  # (each key once)
            if not self._distinct and len(keys):
                self._sorted = np.concatenate([keys[:1], self._sorted])
            self._found = np.zeros(len(self._sorted), dtype=np.bool_)

    def add_facts(self, batch: pa.RecordBatch) -> None:
        """One batch of the facts copied into ``batch_product``."""
        self._facts_seen = True
        if "deleted" in batch.schema.names:
            self.deleted += int(pc.sum(pc.fill_null(batch.column("deleted"), False)).as_py() or 0)
        if self._sorted is None or self._found is None or len(self._sorted) == 0:
            return
        codes = batch.column("code")
        digits = pc.fill_null(_is_digit_key(codes), False)
        if not pc.all(digits).as_py():  # (other codes cannot equal a key held here)
            codes = codes.filter(digits)
        if len(codes) == 0:
            return
        encoded = _digit_keys(codes)
        assert encoded is not None
        at = np.minimum(np.searchsorted(self._sorted, encoded), len(self._sorted) - 1)
        self._found[at[self._sorted[at] == encoded]] = True

    def keys_distinct(self) -> bool:
        """Whether no copied key repeats (False where the keys were not kept)."""
        return self._sorted is not None and self._distinct

    def keys_all_products(self) -> bool:
        """Whether every copied key is among the facts' codes (False before any facts)."""
        return self._facts_seen and self._found is not None and bool(np.all(self._found))


def copy_output(
    cur: psycopg.Cursor[Any],
    *,
    spec: ImportSpec,
    outputs: Iterable[OutputChunk],
    where: Any,
    bad_rows: list[BadRow] | None = None,
    seen: CopiedKeys | None = None,
) -> int:
    """COPY the output into ``batch_output``; returns its row count (held-back rows included).
    ``seen`` collects the copied rows' keys (:class:`CopiedKeys`).

    With ``bad_rows``, a row with a null or empty required value, or a text PostgreSQL cannot
    hold (NUL byte, not UTF-8), is appended there instead of copied (the caller quarantines
    it); without, it refuses the whole output naming file and row."""
    schema = spec.output_schema
    _create_temp_table(cur, "batch_output", schema)
    full = pa.schema([pa.field("_file", pa.int32()), pa.field("_row", pa.int64()), *schema])
    lines: list[tuple[int, int, int]] = []  # (first COPY line, file, first row) per chunk
    total = 0
    line = 0  # COPY lines written
    try:
        types = _column_types(schema)
        with cur.copy(_copy_statement("batch_output", full.names), writer=_writer(cur)) as copy:
            copy.write(COPY_BINARY_HEADER)
            for chunk in outputs:
                batch = _conform(chunk.batch, schema, where(chunk.file_index, chunk.offset))
                n = batch.num_rows
                if n == 0:
                    continue
                bad: dict[int, str] = {}
                for name in spec.not_null:
                    mask = _empty_mask(batch.column(name))
                    if pc.any(mask).as_py():
                        for i in pc.indices_nonzero(mask).to_pylist():
                            bad.setdefault(int(i), f"null or empty {name!r}")
                for f in schema:
                    for i, why in _invalid_text(batch.column(f.name)):
                        bad.setdefault(i, f"{f.name!r} holds {why}")
                if bad and bad_rows is None:
                    i = min(bad)
                    raise PredictionImportError(
                        f"{where(chunk.file_index, chunk.offset + i)}: {bad[i]}; nothing was "
                        "imported"
                    )
                key = batch.column(spec.key_column) if spec.key_column in schema.names else None
                rows = pa.array(range(chunk.offset, chunk.offset + n), pa.int64())
                ids = pa.array([chunk.file_index] * n, pa.int32())
                framed = pa.RecordBatch.from_arrays([ids, rows, *batch.columns], schema=full)
                if bad and bad_rows is not None:
                    for i, why in sorted(bad.items()):
                        value = key[i].as_py() if key is not None else None
                        if isinstance(value, str):
                            value = value.replace("\x00", "")
                        bad_rows.append((chunk.file_index, chunk.offset + i, value, why))
                    keep = pa.array([i not in bad for i in range(n)])
                    framed = framed.filter(keep)
                if seen is not None:
                    seen.add_output(framed)
                for start in range(0, framed.num_rows, COPY_CHUNK_ROWS):
                    part = framed.slice(start, COPY_CHUNK_ROWS)
                    lines.append((line + 1, chunk.file_index, int(part.column(1)[0].as_py())))
                    copy.write(binary_rows(part, types))
                    line += part.num_rows
                total += n
            copy.write(COPY_BINARY_TRAILER)
        if seen is not None:
            seen.output_done()
    except psycopg.Error as exc:
        match = _COPY_LINE.search(str(exc))
        # A row the database refuses (its data) names the COPY line; a connection the server
        # cut meanwhile (OperationalError: an outage, e.g. "terminating connection due to
        # administrator command") names it too, and is not the row's fault: retried.
        if match and lines and not isinstance(exc, psycopg.OperationalError):
            at = int(match.group(1))
            first, file_index, row = max((e for e in lines if e[0] <= at), default=lines[0])
            raise PredictionImportError(
                f"{where(file_index, row + at - first)}: refused by the database: "
                f"{str(exc).strip().splitlines()[0]}; nothing was imported"
            ) from exc
        raise
    analyze_large(cur, "batch_output")
    return total


_UUID_VERSION = bytes((b & 0x0F) | 0x40 for b in range(256))  # byte 6: version 4
_UUID_VARIANT = bytes((b & 0x3F) | 0x80 for b in range(256))  # byte 8: RFC 4122 variant


def random_uuids(n: int) -> pa.Array:
    """``n`` random version-4 UUIDs (as Python's ``uuid4()``: 122 bits from ``os.urandom``),
    as their 16 bytes (the uuid type's binary COPY format): for the ids of new insights, made
    here rather than by ``gen_random_uuid()``, which costs 3-4 µs a call on a server built
    without OpenSSL (the embedded one; 1.2 s of a 1,000,000-row import)."""
    raw = bytearray(os.urandom(16 * n))
    raw[6::16] = raw[6::16].translate(_UUID_VERSION)
    raw[8::16] = raw[8::16].translate(_UUID_VARIANT)
    return pa.Array.from_buffers(pa.binary(16), n, [None, pa.py_buffer(raw)])


#: Ids per stratum of :class:`AscendingUuids` (each stratum's ids are drawn and sorted at once).
UUID_STRATUM_ROWS = 4_096
_PREFIX_SPACE = 1 << 48  # bytes 0-5 of a uuid4: random, before its version nibble


class AscendingUuids:
    """Random version-4 UUIDs handed out in ascending order: ``expected`` of them, as a set
    distributed exactly as ``expected`` independent ``uuid4()``, then (past ``expected``)
    plain :func:`random_uuids`.

    Why: the id of a new insight is its product's uuid (``batch_product._uuid``, the facts in
    code order), and the created insights are inserted in the output's order. Where that is
    the barcodes' order (the benchmark's generated outputs), random ids would make every insert
    land on a random leaf of ``product_insight``'s primary-key index, which on a table the size
    of Robotoff's is larger than the shared buffers: a read and, later, a write of a dirty page
    for most rows (``benchmarks/README.md``: 28.0 s → 18.7 s of the insight INSERT at 1,000,000
    rows into 2,000,000 stored insights); ascending ids sweep the index once. The production
    spellcheck launch orders its input by popularity (selection.sql, ``input``), so its
    outputs, and its inserts, come in that order, to which these ids are as random as before
    (no gain measured: ``results/import_ascending_ids_popularity_order.log``); ids ascending
    in the output's order are the next step. The set of ids is distributed as independent
    ``uuid4()`` draws (Robotoff's ``uuid.uuid4()``, importer.py): only which product gets
    which of them follows the codes' order.

    Streamed, memory bounded by one stratum: the first 48 bits (bytes 0-5) of the uuid space
    are cut into ``ceil(expected / UUID_STRATUM_ROWS)`` strata; how many ids fall in each is
    drawn once (multinomial, as ``expected`` uniform draws would fall), and each stratum's ids
    are drawn (prefix uniform within the stratum, the other 74 random bits from
    ``os.urandom``) and sorted when reached."""

    def __init__(self, expected: int, *, stratum_rows: int = UUID_STRATUM_ROWS) -> None:
        self._rng = np.random.Generator(np.random.PCG64(int.from_bytes(os.urandom(16), "big")))
        strata = max(1, -(-max(expected, 0) // stratum_rows))
        edges = [(_PREFIX_SPACE * j) // strata for j in range(strata + 1)]
        self._edges = edges
        widths = np.diff(np.array(edges, dtype=np.float64))
        self._counts = (
            self._rng.multinomial(expected, widths / _PREFIX_SPACE).tolist() if expected > 0 else []
        )
        self._stratum = 0
        self._ready = b""  # sorted ids not yet handed out (16 bytes each)

    def _next_stratum(self) -> bytes:
        j, count = self._stratum, self._counts[self._stratum]
        self._stratum += 1
        if count == 0:
            return b""
        low, high = self._edges[j], self._edges[j + 1]
        prefixes = self._rng.integers(low, high, size=count, dtype=np.uint64)
        raw = np.frombuffer(random_uuids(count).buffers()[1], dtype=np.uint8)
        raw = raw.reshape(count, 16).copy()  # (writable)
        raw[:, :6] = prefixes.astype(">u8").view(np.uint8).reshape(count, 8)[:, 2:]
        return np.sort(raw.view("S16").ravel()).tobytes()

    def take(self, n: int) -> pa.Array:
        """The next ``n`` ids (ascending across calls while the ``expected`` last)."""
        while len(self._ready) < 16 * n and self._stratum < len(self._counts):
            self._ready += self._next_stratum()
        served, self._ready = self._ready[: 16 * n], self._ready[16 * n :]
        short = n - len(served) // 16
        if short:  # past ``expected``: random ids, in no order
            served += random_uuids(short).buffers()[1].to_pybytes()
        return pa.Array.from_buffers(pa.binary(16), n, [None, pa.py_buffer(served)])


def copy_facts(
    cur: psycopg.Cursor[Any],
    schema: pa.Schema,
    facts: Iterable[pa.RecordBatch],
    *,
    expected_rows: int = 0,
    seen: CopiedKeys | None = None,
) -> None:
    """COPY the job's product facts into ``batch_product`` (analysed, not indexed), each row
    with ``_uuid``, a random uuid4 (the id of an insight the job type creates for the
    product), ascending in the facts' order over the first ``expected_rows``
    (:class:`AscendingUuids`; the facts come in code order). ``seen`` collects their codes
    (:class:`CopiedKeys`)."""
    _create_temp_table(cur, "batch_product", schema, extra=("_uuid uuid NOT NULL",))
    full = pa.schema(
        [
            pa.field("_file", pa.int32()),
            pa.field("_row", pa.int64()),
            *schema,
            pa.field("_uuid", pa.binary(16)),
        ]
    )
    offset = 0
    types = [*_column_types(schema), "uuid"]
    ids = AscendingUuids(expected_rows)
    with cur.copy(_copy_statement("batch_product", full.names), writer=_writer(cur)) as copy:
        copy.write(COPY_BINARY_HEADER)
        for batch in facts:
            batch = _conform(batch, schema, f"product facts row {offset}")
            n = batch.num_rows
            if n == 0:
                continue
            if seen is not None:
                seen.add_facts(batch)
            framed = pa.RecordBatch.from_arrays(
                [
                    pa.array([0] * n, pa.int32()),
                    pa.array(range(offset, offset + n), pa.int64()),
                    *batch.columns,
                    ids.take(n),
                ],
                schema=full,
            )
            copy.write(binary_rows(framed, types))
            offset += n
        copy.write(COPY_BINARY_TRAILER)
    # no index: every join on the facts is a hash join (the import's joins are set operations
    # between its temporary tables), so an index on code would only cost its build
    analyze_large(cur, "batch_product")


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
