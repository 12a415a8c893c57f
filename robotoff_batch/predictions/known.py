"""What a model has already seen (issue 22, incremental launches): the known set.

A launch with ``skip_unchanged`` leaves out every product whose text to process, in its
language, already has a verdict of the same job type from the same model identity
(``predictor``, ``predictor_version``). The known set is

* our own records, ``batch_known_text`` (schema.sql): every imported row with a verdict, the
  md5 of its text (never the text), written by :func:`record_known` in the import's
  transaction, whatever the target (the ``robotoff_api`` target has no read access to
  Robotoff's tables, and an unchanged text leaves no prediction there anyway);
* with the ``postgres`` target, Robotoff's ``prediction`` table too: the job type's
  ``known_predictions_sql`` (its predictions of that identity, e.g. made by an earlier import
  of ours before the records existed).

It is read ONCE, as one Arrow table of (code, lang, text_hash) (:func:`read_known`: one
``COPY ... TO STDOUT`` of one statement, no per-product query), and anti-joined in the
launch's DuckDB pass. ``text_hash`` is the lowercase hex md5 of the UTF-8 text, which both
PostgreSQL (``md5(convert_to(t, 'UTF8'))``) and DuckDB (``md5(t)``) compute; ``lang`` NULL is
stored and compared as ''.
"""

from __future__ import annotations

import io
import logging
import time
from dataclasses import dataclass
from typing import Any

import psycopg
import pyarrow as pa
import pyarrow.csv as pacsv
from psycopg import sql

logger = logging.getLogger(__name__)

#: The known set as a launch reads it.
KNOWN_SCHEMA = pa.schema(
    [
        pa.field("code", pa.string()),
        pa.field("lang", pa.string()),
        pa.field("text_hash", pa.string()),
    ]
)


@dataclass(frozen=True)
class ModelIdentity:
    """What makes two predictions the same model's: Robotoff's ``predictor`` and
    ``predictor_version`` (for vLLM, a hash of model, revision, quantization and prompt)."""

    predictor: str
    predictor_version: str

    def __str__(self) -> str:
        return f"{self.predictor} {self.predictor_version}"


# Upsert of the import's verdict rows ({known}: the job type's known_sql over batch_output).
# A product's newer text replaces its hash; the row's job is the last one that saw it.
# Written as an UPDATE of the stored keys, then a plain INSERT of the others, under a lock
# per job type (_LOCK_SQL): not INSERT ... ON CONFLICT, whose speculative insertion (an index
# probe, then a WAL record confirming each row) made it 1.8x a plain INSERT: 6.5 s against
# 3.7 s for 1,000,000 new rows (benchmarks/results/import.md). The lock stands in for what
# ON CONFLICT gave: two imports of one job type never write the same key side by side (the
# second waits for the first to commit, then its statement sees the first's rows).
_LOCK_SQL = "SELECT pg_advisory_xact_lock(hashtextextended('batch_known_text:' || %s, 0))"
_RECORD_SQL = """
WITH k AS MATERIALIZED (
    SELECT DISTINCT ON (predictor, predictor_version, barcode, coalesce(lang, ''))
        predictor, predictor_version, barcode, coalesce(lang, '') AS lang,
        decode(md5(convert_to(text, 'UTF8')), 'hex') AS text_md5
    FROM ({known}) AS k (barcode, lang, text, predictor, predictor_version)
    WHERE text IS NOT NULL AND predictor IS NOT NULL AND predictor_version IS NOT NULL
    ORDER BY predictor, predictor_version, barcode, coalesce(lang, '')
),
updated AS (
    UPDATE batch_known_text AS t
    SET text_md5 = k.text_md5, batch_job_id = %(batch_job_id)s
    FROM k
    WHERE t.job_type = %(job_type)s AND t.predictor = k.predictor
        AND t.predictor_version = k.predictor_version AND t.barcode = k.barcode
        AND t.lang = k.lang
    RETURNING t.predictor, t.predictor_version, t.barcode, t.lang
)
INSERT INTO batch_known_text
    (job_type, predictor, predictor_version, barcode, lang, text_md5, batch_job_id)
SELECT %(job_type)s, k.predictor, k.predictor_version, k.barcode, k.lang, k.text_md5,
    %(batch_job_id)s
FROM k
WHERE NOT EXISTS (
    SELECT 1 FROM updated u
    WHERE u.predictor = k.predictor AND u.predictor_version = k.predictor_version
        AND u.barcode = k.barcode AND u.lang = k.lang
)
"""

_OWN_KNOWN_SQL = """
SELECT barcode, lang, encode(text_md5, 'hex')
FROM batch_known_text
WHERE job_type = %(job_type)s AND predictor = %(predictor)s
  AND predictor_version = %(predictor_version)s
"""


def record_known(
    cur: psycopg.Cursor[Any], *, known_sql: str, job_type: str, batch_job_id: str
) -> int:
    """Inside the import's transaction: record the hashes of the texts the job gave a verdict
    on (``known_sql``, a SELECT over ``batch_output``). Returns the rows inserted (the keys
    not stored before)."""
    statement = _RECORD_SQL.replace("{known}", known_sql.strip().rstrip(";"))
    cur.execute(_LOCK_SQL, (job_type,))
    cur.execute(statement, {"job_type": job_type, "batch_job_id": batch_job_id})  # type: ignore[arg-type]
    return max(cur.rowcount, 0)


def known_query(*, predictions_sql: str | None) -> sql.Composed:
    """The one statement of the known set (parameters ``job_type``, ``predictor``,
    ``predictor_version``): our records and, with ``predictions_sql`` (the job type's SELECT
    of barcode, lang, hex md5 over Robotoff's ``prediction``, same parameters), Robotoff's
    predictions. UNION ALL: a text both in our records and in Robotoff's table comes twice
    (the launch semi-joins it, so a repeat changes nothing), and PostgreSQL sorts nothing."""
    parts = [sql.SQL(_OWN_KNOWN_SQL)]
    if predictions_sql:
        parts.append(sql.SQL(predictions_sql.strip().rstrip(";")))  # type: ignore[arg-type]
    return sql.SQL(
        "SELECT barcode, coalesce(lang, ''), hash FROM ({}) AS k (barcode, lang, hash)"
    ).format(sql.SQL(" UNION ALL ").join(parts))


def read_known(
    conn: psycopg.Connection[Any],
    *,
    job_type: str,
    identity: ModelIdentity,
    predictions_sql: str | None = None,
) -> pa.Table:
    """The known set (:data:`KNOWN_SCHEMA`), read in one ``COPY (...) TO STDOUT`` as CSV and
    parsed by Arrow (no per-row Python). Codes, languages and hex hashes hold no NUL and no
    line break that CSV could not carry; NULL never reaches it (coalesced)."""
    started = time.monotonic()
    statement = sql.SQL("COPY ({}) TO STDOUT (FORMAT csv)").format(
        known_query(predictions_sql=predictions_sql)
    )
    params = {
        "job_type": job_type,
        "predictor": identity.predictor,
        "predictor_version": identity.predictor_version,
    }
    buffer = io.BytesIO()
    # psycopg merges COPY's parameters client-side (COPY itself takes none)
    with conn.cursor() as cur, cur.copy(statement, params) as copy:
        for block in copy:
            buffer.write(block)
    data = buffer.getvalue()
    if not data:
        return KNOWN_SCHEMA.empty_table()
    table = pacsv.read_csv(
        io.BytesIO(data),
        read_options=pacsv.ReadOptions(column_names=KNOWN_SCHEMA.names),
        convert_options=pacsv.ConvertOptions(column_types=KNOWN_SCHEMA, strings_can_be_null=False),
    )
    logger.info(
        "known set of %s (%s): %d texts in %.2f s",
        job_type,
        identity,
        table.num_rows,
        time.monotonic() - started,
    )
    return table
