"""The import's COPY in PostgreSQL's binary format (predictions/arrow_copy.py): every type the
temporary tables hold, NULLs, empty and awkward texts, sliced Arrow arrays, read back from a
real PostgreSQL exactly as they were sent."""

from __future__ import annotations

import datetime as dt
import uuid
from typing import Any

import psycopg
import pyarrow as pa
import pytest

from robotoff_batch.predictions.arrow_copy import (
    COPY_BINARY_HEADER,
    COPY_BINARY_TRAILER,
    COPY_CHUNK_ROWS,
    AscendingUuids,
    CopiedKeys,
    binary_rows,
    copy_output,
    random_uuids,
)
from robotoff_batch.predictions.model import (
    ImportSpec,
    OutputChunk,
    PredictionImportError,
    PredictionStoreError,
)

TEXTS = ['a,"b"\n\\N', "", None, "é🌾 crème", "null", "N/A", "\t\r;|", "x" * 70_000]
COLUMNS: list[tuple[str, str, pa.Array]] = [
    ("a", "integer", pa.array([0, -1, None, 2**31 - 1, -(2**31), 7, 8, 9], pa.int32())),
    ("b", "bigint", pa.array([2**40, -5, 3, None, 2**63 - 1, -(2**63), 0, 1], pa.int64())),
    ("c", "bigint", pa.array([1, None, -3, 4, 5, 6, 7, 8], pa.int16())),  # widened, as declared
    ("d", "text", pa.array(TEXTS, pa.string())),
    ("e", "text", pa.array(list(reversed(TEXTS)), pa.large_string())),
    ("f", "double precision", pa.array([1.5, -0.0, None, 1e300, -2.25, 3.0, 1e-300, 0.1])),
    ("g", "boolean", pa.array([True, False, None, True, True, False, None, False])),
    (
        "h",
        "timestamp",
        pa.array(
            [
                dt.datetime(2026, 1, 2, 3, 4, 5, 6),
                None,
                dt.datetime(1990, 1, 1),
                dt.datetime(2000, 1, 1),
                dt.datetime(1999, 12, 31, 23, 59, 59, 999_999),
                dt.datetime(2038, 1, 19, 3, 14, 8),
                dt.datetime(1900, 3, 1, 12),
                dt.datetime(2026, 12, 3, 17, 0),
            ],
            pa.timestamp("us"),
        ),
    ),
]


def _load(conn: psycopg.Connection[Any], batch: pa.RecordBatch, types: list[str]) -> list[tuple]:
    names = ", ".join(f"{n} {t}" for n, t in zip(batch.schema.names, types, strict=True))
    conn.execute(f"CREATE TEMP TABLE t (k serial, {names})")
    with (
        conn.cursor() as cur,
        cur.copy(f"COPY t ({', '.join(batch.schema.names)}) FROM STDIN (FORMAT binary)") as copy,
    ):
        copy.write(COPY_BINARY_HEADER)
        copy.write(binary_rows(batch, types))
        copy.write(COPY_BINARY_TRAILER)
    return [r[1:] for r in conn.execute("SELECT * FROM t ORDER BY k").fetchall()]


def test_every_type_comes_back_as_sent_nulls_and_awkward_texts_included(pg_db: str) -> None:
    batch = pa.RecordBatch.from_arrays([c for _, _, c in COLUMNS], [n for n, _, _ in COLUMNS])
    with psycopg.connect(pg_db) as conn:
        got = _load(conn, batch, [t for _, t, _ in COLUMNS])
    assert got == [tuple(row.values()) for row in batch.to_pylist()]
    assert got[2][3] is None and got[1][3] == ""  # NULL and the empty text stay apart


def test_a_sliced_batch_sends_only_its_own_rows(pg_db: str) -> None:
    """COPY's chunks are slices of a batch (offsets into its buffers)."""
    batch = pa.RecordBatch.from_arrays([c for _, _, c in COLUMNS], [n for n, _, _ in COLUMNS])
    part = batch.slice(3, 4)
    with psycopg.connect(pg_db) as conn:
        got = _load(conn, part, [t for _, t, _ in COLUMNS])
    assert got == [tuple(row.values()) for row in part.to_pylist()]


def test_uuids_are_random_version_4_as_16_bytes(pg_db: str) -> None:
    ids = random_uuids(1_000)
    batch = pa.RecordBatch.from_arrays([ids], ["u"])
    with psycopg.connect(pg_db) as conn:
        got = [r[0] for r in _load(conn, batch, ["uuid"])]
    assert got == [uuid.UUID(bytes=b) for b in ids.to_pylist()]
    assert {u.version for u in got} == {4} and {u.variant for u in got} == {uuid.RFC_4122}
    assert len(set(got)) == 1_000


def test_ascending_uuids_are_random_version_4_in_order_across_takes(pg_db: str) -> None:
    """Taken in uneven pieces, across strata: ascending in PostgreSQL's uuid order, unique,
    version 4, spread over the whole space; past the expected count, still random uuid4s."""
    ids = AscendingUuids(10_000, stratum_rows=512)
    pieces = [ids.take(n) for n in (1, 700, 3, 4_096, 5_200, 0, 300)]
    got_bytes = [b for piece in pieces for b in piece.to_pylist()]
    assert len(got_bytes) == 10_300
    first, extra = got_bytes[:10_000], got_bytes[10_000:]
    assert first == sorted(first) and len(set(got_bytes)) == 10_300
    batch = pa.RecordBatch.from_arrays([pa.array(first, pa.binary(16))], ["u"])
    with psycopg.connect(pg_db) as conn:
        got = [r[0] for r in _load(conn, batch, ["uuid"])]
        in_pg_order = conn.execute(
            "SELECT array_agg(u ORDER BY u) FROM unnest(%s::uuid[]) AS u", (got,)
        ).fetchone()[0]
    assert got == in_pg_order
    parsed = [uuid.UUID(bytes=b) for b in got_bytes]
    assert {u.version for u in parsed} == {4} and {u.variant for u in parsed} == {uuid.RFC_4122}
    # spread as uniform draws are: each sixteenth of the space holds about 625 of the 10,000
    # (a standard deviation of 24)
    per_sixteenth = [0] * 16
    for b in first:
        per_sixteenth[b[0] >> 4] += 1
    assert all(500 < n < 750 for n in per_sixteenth), per_sixteenth
    assert extra != sorted(extra)  # (300 random ids in order by chance: 1 in 300 factorial)


def test_a_type_without_an_encoding_is_refused_by_name() -> None:
    batch = pa.RecordBatch.from_arrays([pa.array([1])], ["x"])
    with pytest.raises(
        PredictionStoreError, match="no binary COPY encoding for PostgreSQL type numeric"
    ):
        binary_rows(batch, ["numeric"])


def test_copy_output_loads_chunks_and_files_in_order_and_names_a_bad_row(pg_db: str) -> None:
    """Several files, each longer than a COPY chunk: every row lands with its file and row;
    a text PostgreSQL cannot hold names its file and row (the client's check, before COPY)."""
    schema = pa.schema([pa.field("code", pa.string()), pa.field("n", pa.int64())])
    spec = ImportSpec(output_schema=schema, predictions_sql="SELECT 1")
    rows = COPY_CHUNK_ROWS + 5
    chunks = [
        OutputChunk(
            file_index=f,
            offset=0,
            batch=pa.RecordBatch.from_pydict(
                {"code": [f"{f}-{i}" for i in range(rows)], "n": list(range(rows))}, schema
            ),
        )
        for f in range(2)
    ]
    with psycopg.connect(pg_db) as conn, conn.cursor() as cur:
        total = copy_output(cur, spec=spec, outputs=chunks, where=lambda f, r: f"f{f} row {r}")
        got = cur.execute("SELECT _file, _row, code, n FROM batch_output").fetchall()
    assert total == 2 * rows
    assert got == [(f, i, f"{f}-{i}", i) for f in range(2) for i in range(rows)]
    bad = pa.RecordBatch.from_pydict({"code": ["ok", "a\x00b"], "n": [1, 2]}, schema)
    with (
        psycopg.connect(pg_db) as conn,
        conn.cursor() as cur,
        pytest.raises(PredictionImportError, match="f1 row 7: 'code' holds a NUL byte"),
    ):
        copy_output(
            cur,
            spec=spec,
            outputs=[OutputChunk(file_index=1, offset=6, batch=bad)],
            where=lambda f, r: f"f{f} row {r}",
        )


def _seen(keys: list[str | None], facts: list[list[str]], **options: Any) -> CopiedKeys:
    """A CopiedKeys fed ``keys`` (as output batches of 3) and ``facts`` (one batch each)."""
    seen = CopiedKeys("code", **options)
    for start in range(0, len(keys), 3):
        seen.add_output(pa.record_batch([pa.array(keys[start : start + 3], pa.string())], ["code"]))
    seen.output_done()
    for codes in facts:
        seen.add_facts(pa.record_batch([pa.array(codes, pa.string())], ["code"]))
    return seen


FACTS = [["0001", "0002", "0040"], ["0050", "3017620422003", "b4"], ["40000012", "9" * 17]]


@pytest.mark.parametrize(
    ("keys", "facts", "distinct", "all_products"),
    [
        # every key a product, out of order, facts in several batches: nothing to check in SQL
        (["9" * 17, "0050", "0001", "40000012", "3017620422003", "0040"], FACTS, True, True),
        (["0040"], FACTS, True, True),  # (a subset of the products)
        (["0040", "0001", "0040"], FACTS, False, True),  # a repeat
        (["0001", "0003"], FACTS, True, False),  # not a product
        (["0001", "1"], FACTS, True, False),  # leading zeros count: "1" is not "0001"
        (["0001", "00001"], FACTS, True, False),
        (["0001", "0002"], [["0002"], ["0001"]], True, True),  # (any order)
        (["0001"], [], True, False),  # no facts at all
        # keys the client cannot hold as numbers (not 1-17 ASCII digits): the SQL checks decide
        (["0001", "b4"], FACTS, False, False),
        (["0001", "9" * 18], [["0001", "9" * 18]], False, False),
        (["0001", "١٢"], FACTS, False, False),  # (Unicode digits)
        (["0001", None], FACTS, False, False),
    ],
)
def test_copied_keys_skip_a_check_only_when_it_cannot_find_anything(
    keys: list[str | None], facts: list[list[str]], distinct: bool, all_products: bool
) -> None:
    seen = _seen(keys, facts)
    assert (seen.keys_distinct(), seen.keys_all_products()) == (distinct, all_products)


def test_copied_keys_keep_nothing_past_their_cap_and_count_deleted_products() -> None:
    keys = [f"{i:04d}" for i in range(7)]
    assert _seen(keys, [keys]).keys_all_products()
    capped = _seen(keys, [keys], max_rows=6)
    assert (capped.keys_distinct(), capped.keys_all_products()) == (False, False)
    seen = CopiedKeys("code", json_columns=("corrections", "other"))
    seen.add_output(
        pa.record_batch(
            [pa.array(["1", "2"]), pa.array([None, "[]"]), pa.array([None, None], pa.string())],
            ["code", "corrections", "other"],
        )
    )
    seen.add_facts(
        pa.record_batch([pa.array(["1", "2"]), pa.array([True, None])], ["code", "deleted"])
    )
    assert (seen.json_filled, seen.deleted) == ({"corrections"}, 1)
