"""The import's steps inside its transaction: output and facts copied in, checked, turned into
Robotoff's predictions with the dedup rule, the job type's insight SQL, or the rows handed
to Robotoff's own importer."""

from __future__ import annotations

import logging
import tempfile
import time
from collections.abc import Callable, Iterable, Sequence
from datetime import datetime
from pathlib import Path
from typing import Any

import psycopg
import pyarrow as pa
import pyarrow.csv as pacsv
import pyarrow.parquet as pq
from psycopg import sql

from robotoff_batch.predictions.arrow_copy import (
    copy_facts,
    copy_output,
)
from robotoff_batch.predictions.dedup import (
    insert_sql,
    job_constants,
    kept_sql,
    replace_sql,
    stored_sql,
)
from robotoff_batch.predictions.model import (
    MAX_LENGTHS,
    ImportSpec,
    OutputChunk,
    PredictionImportError,
    named_statements,
)
from robotoff_batch.predictions.queries import (
    CREATE_PREDICTION_VIEW,
    DUPLICATE_PREDICTION_SQL,
    LEDGER_COLUMNS,
    ROW_CHECK_SQL,
)

logger = logging.getLogger(__name__)


def work_mem_mb(rows: int) -> int:
    """``work_mem`` for a job of ``rows`` output rows: about 256 bytes a row (its keys in a
    hash table or a sort), 64 MB to 1 GB."""
    return max(64, min(1024, (rows * 256) >> 20))


def import_steps(
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
    """The import's statements, inside the caller's transaction; returns the ledger's
    counts."""

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

    source_rows = copy_output(cur, spec=spec, outputs=outputs, where=where)
    # hash tables and sorts over the job's keys in memory, sized from its row count
    cur.execute(f"SET LOCAL work_mem = '{work_mem_mb(source_rows)}MB'")
    phase("copy_output")
    if source_rows == 0:
        raise PredictionImportError(
            f"the output of {batch_job_id} has no rows ({', '.join(files) or 'no files'}): "
            "an empty output is refused, not recorded as imported"
        )
    for column in spec.unique:
        c = sql.Identifier(column)
        # one hash aggregate; the self-join naming the first repeated row only when one repeats
        repeated = cur.execute(
            sql.SQL("SELECT 1 FROM batch_output GROUP BY {c} HAVING count(*) > 1 LIMIT 1").format(
                c=c
            )
        ).fetchone()
        row = (
            repeated
            and cur.execute(
                sql.SQL(
                    "SELECT a._file, a._row, b._file, b._row, a.{c} FROM batch_output a "
                    "JOIN batch_output b ON a.{c} = b.{c} "
                    "AND (a._file, a._row) < (b._file, b._row) "
                    "ORDER BY b._file, b._row LIMIT 1"
                ).format(c=c)
            ).fetchone()
        )
        if row:
            raise PredictionImportError(
                f"{column} {row[4]!r} appears twice in the output: {where(row[0], row[1])} "
                f"and {where(row[2], row[3])}; nothing was imported"
            )
    phase("check_unique")
    if spec.facts_schema is not None:
        copy_facts(cur, spec.facts_schema, facts)
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
    cur.execute(CREATE_PREDICTION_VIEW.replace("{select}", select))
    # the count and the job's constant key columns, in one pass (the dedup SQL is written
    # with those as literals: estimated from the statistics, where a join is estimated at 1)
    candidates, constants = job_constants(cur)
    phase("to_predictions")
    bad = cur.execute(ROW_CHECK_SQL).fetchone()
    if bad and bad[2]:
        raise PredictionImportError(
            f"{where(bad[0], bad[1])}: null or empty {bad[2]!r}; nothing was imported"
        )
    if bad:
        raise PredictionImportError(
            f"{where(bad[0], bad[1])}: {bad[3]!r} is longer than "
            f"{MAX_LENGTHS[bad[3]]} characters: {str(bad[4])[:120]!r}; nothing was imported"
        )
    implied = spec.one_prediction_per_product and spec.key_column in spec.unique
    dup = None if implied else cur.execute(DUPLICATE_PREDICTION_SQL).fetchone()
    if dup:
        raise PredictionImportError(
            f"two predictions for product {dup[4]!r} with the same Robotoff key: "
            f"{where(dup[0], dup[1])} and {where(dup[2], dup[3])}; nothing was imported"
        )
    phase("check_predictions")
    if deliver is not None:
        handed = hand_over(
            cur, spec=spec, job_type=job_type, batch_job_id=batch_job_id, deliver=deliver
        )
        phase("hand_over")
        logger.info("hand-over of %s, seconds per step: %s", batch_job_id, phases)
        return {
            **dict.fromkeys(LEDGER_COLUMNS[3:13], 0),
            "source_rows": source_rows,
            "skipped_rows": source_rows - candidates,
            "candidates": candidates,
            "predictions": handed,
        }
    # the dedup rule, by the job's barcodes (predictions/dedup.py); Robotoff's table by its
    # indexes only: its statistics may lag far behind its rows (an embedded database's first
    # imports: never analysed), and a sequential scan would test `= ANY(ARRAY(...))` row by
    # row, linearly (only constant arrays are hashed)
    cur.execute("SET LOCAL enable_seqscan = off")
    # from here on every join is a set operation between the job's rows and the stored rows of
    # its products (analysed temporary tables): hash joins, never a loop, whose cost would be
    # the product of the two (their join conditions are correlated, barcode with text and
    # lang, and PostgreSQL multiplies their selectivities: estimated at 1 row for 50,000)
    cur.execute("SET LOCAL enable_nestloop = off")
    cur.execute(stored_sql(constants))
    stored = max(cur.rowcount, 0)
    cur.execute("ANALYZE batch_stored")
    phase("stored")
    replaced = 0
    if stored:
        cur.execute(replace_sql(constants))
        replaced = max(cur.rowcount, 0)
        stored -= replaced
    cur.execute("SET LOCAL enable_seqscan = on")
    phase("replace")
    if stored:
        cur.execute(kept_sql(constants))
        cur.execute("ANALYZE batch_kept")
    phase("kept")
    cur.execute(insert_sql(skip_kept=stored > 0), {"batch_job_id": batch_job_id})
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


def hand_over(
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
