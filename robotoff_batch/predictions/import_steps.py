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
import pyarrow.parquet as pq

from robotoff_batch.predictions.arrow_copy import (
    BadRow,
    CopiedKeys,
    copy_facts,
    copy_output,
)
from robotoff_batch.predictions.dedup import (
    insert_sql,
    job_constants,
    kept_sql,
    new_view_sql,
    replace_sql,
    stored_filter,
    stored_sql,
)
from robotoff_batch.predictions.model import (
    ImportSpec,
    OutputChunk,
    PredictionImportError,
    named_statements,
)
from robotoff_batch.predictions.queries import (
    CREATE_PREDICTION_VIEW,
    CREATE_SCOPE_VIEW,
    DUPLICATE_PREDICTION_SQL,
    LEDGER_COLUMNS,
    SCOPE_FROM_PREDICTIONS,
)
from robotoff_batch.predictions.row_checks import DEFAULT_MAX_BAD_ROW_FRACTION, RowChecks

logger = logging.getLogger(__name__)


def work_mem_mb(rows: int) -> int:
    """``work_mem`` for a job of ``rows`` output rows: about 256 bytes a row (its keys in a
    hash table or a sort), 64 MB to 1 GB."""
    return max(64, min(1024, (rows * 256) >> 20))


def _keep_only(cur: psycopg.Cursor[Any], only: set[tuple[int, int]]) -> int:
    """Drop every output row but ``only``'s; returns how many remain."""
    cur.execute(
        "CREATE TEMP TABLE batch_retry (_file integer, _row bigint, PRIMARY KEY (_file, _row)) "
        "ON COMMIT DROP"
    )
    with cur.copy("COPY batch_retry (_file, _row) FROM STDIN") as copy:
        for key in sorted(only):
            copy.write_row(key)
    cur.execute(
        "DELETE FROM batch_output o WHERE NOT EXISTS "
        "(SELECT 1 FROM batch_retry r WHERE r._file = o._file AND r._row = o._row)"
    )
    cur.execute("ANALYZE batch_output")  # a few rows left of many: the planner must know
    row = cur.execute("SELECT count(*) FROM batch_output").fetchone()
    return int(row[0]) if row else 0


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
    max_bad_row_fraction: float = DEFAULT_MAX_BAD_ROW_FRACTION,
    only: set[tuple[int, int]] | None = None,
) -> dict[str, int]:
    """The import's statements, inside the caller's transaction; returns the ledger's
    counts. ``only``: (file index, row) of the rows to consider (a retry of the quarantined
    rows), the others read and ignored."""

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

    bad_rows: list[BadRow] = []
    key = spec.key_column if spec.key_column in spec.output_schema.names else None
    seen = CopiedKeys(key, json_columns=spec.json_columns)
    source_rows = copy_output(
        cur, spec=spec, outputs=outputs, where=where, bad_rows=bad_rows, seen=seen
    )
    # hash tables and sorts over the job's keys in memory, sized from its row count
    cur.execute(f"SET LOCAL work_mem = '{work_mem_mb(source_rows)}MB'")
    phase("copy_output")
    if source_rows == 0:
        raise PredictionImportError(
            f"the output of {batch_job_id} has no rows ({', '.join(files) or 'no files'}): "
            "an empty output is refused, not recorded as imported"
        )
    if only is not None:  # --retry-quarantined: the rows held back before, nothing else
        bad_rows = [b for b in bad_rows if (b[0], b[1]) in only]
        source_rows = _keep_only(cur, only) + len(bad_rows)
    checks = RowChecks(cur, spec=spec, where=where, max_bad_row_fraction=max_bad_row_fraction)
    checks.add(bad_rows)
    if spec.facts_schema is not None:
        # (one product per output row, as a rule: the ids ascend, in code order, over that many)
        copy_facts(cur, spec.facts_schema, facts, expected_rows=source_rows, seen=seen)
        phase("copy_facts")
    # the keys all distinct, all the job's products, as the client saw them while copying
    # (CopiedKeys): then the unique check of the key, the facts check, have nothing to find
    for column in spec.unique:
        if not (column == key and seen.keys_distinct()):
            checks.unique(column)
    phase("check_unique")
    if spec.facts_schema is not None:
        checks.facts(
            has_deleted="deleted" in spec.facts_schema.names and seen.deleted > 0,
            members_checked=seen.keys_all_products(),
        )
    phase("check_facts")
    checks.json_values(filled=seen.json_filled)
    select = psycopg.ClientCursor(cur.connection).mogrify(
        spec.predictions_sql.strip().rstrip(";"), {"now": now}
    )
    cur.execute(CREATE_PREDICTION_VIEW.replace("{select}", select))
    scope = spec.scope_sql.strip().rstrip(";") if spec.scope_sql else SCOPE_FROM_PREDICTIONS
    cur.execute(CREATE_SCOPE_VIEW.replace("{select}", scope))
    # the count and the job's constant key columns, in one pass each over the predictions and
    # the replace rule's scope (the dedup SQL is written with those as literals: estimated
    # from the statistics, where a join is estimated at 1); the predictions' pass counts the
    # bad rows too, so the row checks run only when there are some
    candidates, constants, bad = job_constants(cur, bad=checks.predictions_test)
    if bad:
        checks.predictions()
    quarantined = checks.settle(source_rows=source_rows, batch_job_id=batch_job_id)
    checks.record(batch_job_id=batch_job_id, files=files)
    if quarantined:  # rows left batch_output: counted again
        candidates, constants, _ = job_constants(cur)
    scoped, scope_constants, _ = job_constants(cur, relation="batch_scope")
    if scoped < candidates:  # (the counts are free; a superset has at least as many rows)
        raise PredictionImportError(
            f"job type {job_type}: its scope_sql gives {scoped} rows, fewer than its "
            f"{candidates} predictions; the replace scope must hold every prediction's row "
            "(ImportSpec.scope_sql: the stored predictions the dedup rule reads are those of "
            "the scope's barcodes); nothing was imported"
        )
    phase("to_predictions")
    implied = spec.one_prediction_per_product and spec.key_column in spec.unique
    dup = None if implied else cur.execute(DUPLICATE_PREDICTION_SQL).fetchone()
    if dup:
        raise PredictionImportError(
            f"two predictions for product {dup[4]!r} with the same Robotoff key: "
            f"{where(dup[0], dup[1])} and {where(dup[2], dup[3])}; nothing was imported"
        )
    phase("check_predictions")
    held = {
        "rows_quarantined": quarantined,
        "rows_collapsed": checks.collapsed,
        "products_deleted": checks.deleted_products,
    }
    # unchanged rows: read, not quarantined, no prediction (collapsed repeats and rows of
    # deleted products are neither)
    skipped = source_rows - candidates - quarantined - checks.collapsed - checks.deleted_products
    if deliver is not None:
        handed = hand_over(
            cur, spec=spec, job_type=job_type, batch_job_id=batch_job_id, deliver=deliver
        )
        phase("hand_over")
        logger.info("hand-over of %s, seconds per step: %s", batch_job_id, phases)
        return {
            **dict.fromkeys(LEDGER_COLUMNS[3:-1], 0),
            **held,
            "source_rows": source_rows,
            "skipped_rows": skipped,
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
    cur.execute(stored_sql(stored_filter(candidates, constants, scoped, scope_constants)))
    stored = max(cur.rowcount, 0)
    cur.execute("ANALYZE batch_stored")
    phase("stored")
    replaced = 0
    if stored and scoped:
        cur.execute(replace_sql(scope_constants))
        replaced = max(cur.rowcount, 0)
        stored -= replaced
    cur.execute("SET LOCAL enable_seqscan = on")
    phase("replace")
    if stored:
        cur.execute(kept_sql(constants))
        cur.execute("ANALYZE batch_kept")
    phase("kept")
    cur.execute(new_view_sql(skip_kept=stored > 0))
    counts = {
        **held,
        "source_rows": source_rows,
        "skipped_rows": skipped,
        "candidates": candidates,
        "predictions": 0,
        "predictions_kept": 0,
        "predictions_replaced": replaced,
        "insights_created": 0,
        "insights_updated": 0,
        "insights_kept": 0,
        "insights_deleted": 0,
    }
    # the job type's insight rules, before the INSERT: Robotoff's tables as the replace rule
    # left them, the job's own predictions from batch_new (never read back from `prediction`)
    if spec.insights_sql:
        for name, statement in named_statements(spec.insights_sql):
            cur.execute(statement, {"now": now})
            if name in ("created", "updated", "deleted"):
                counts[f"insights_{name}"] = max(cur.rowcount, 0)
            elif name == "kept":
                row = cur.fetchone()
                counts["insights_kept"] = int(row[0]) if row else 0
            phase(f"insights_{name}")
    cur.execute(insert_sql(), {"batch_job_id": batch_job_id})
    inserted = sum(int(row[0]) for row in cur.fetchall())
    counts["predictions"] = inserted
    counts["predictions_kept"] = candidates - inserted
    phase("insert")
    logger.info("import of %s, seconds per step: %s", batch_job_id, phases)
    return counts


#: Rows fetched per round trip by the hand-over's server-side cursor.
HANDOVER_FETCH_ROWS = 4_096


def hand_over(
    cur: psycopg.Cursor[Any],
    *,
    spec: ImportSpec,
    job_type: str,
    batch_job_id: str,
    deliver: Callable[..., str],
) -> int:
    """Write the job type's hand-over rows to a Parquet file and give it to ``deliver``;
    returns the row count.

    The rows go from PostgreSQL to Arrow to Parquet, text as text: no CSV round trip, so a
    correction "N/A", "null", "NaN" or "" stays that string and only SQL NULL is null (a
    server-side cursor, a bounded batch per round trip, one row group per batch)."""
    if not spec.handover_sql:
        raise PredictionImportError(
            f"job type {job_type} declares no hand-over to Robotoff (handover_sql); "
            "use the postgres target"
        )
    rows_total = 0
    with tempfile.TemporaryDirectory(prefix="robotoff-batch-handover-") as tmp:
        parquet = Path(tmp) / "postprocessed_data.parquet"
        with cur.connection.cursor(name="robotoff_batch_handover") as server:
            server.execute(spec.handover_sql.strip().rstrip(";"))  # type: ignore[arg-type]
            names = [d.name for d in server.description or ()]
            schema = pa.schema([pa.field(n, pa.string()) for n in names])
            with pq.ParquetWriter(parquet, schema) as writer:
                while rows := server.fetchmany(HANDOVER_FETCH_ROWS):
                    columns = list(zip(*rows, strict=True))
                    writer.write_batch(
                        pa.RecordBatch.from_arrays(
                            [pa.array(c, pa.string()) for c in columns], schema=schema
                        )
                    )
                    rows_total += len(rows)
        batch_dir = deliver(job_type=job_type, batch_job_id=batch_job_id, parquet=parquet)
    logger.info("handed %d rows of %s to Robotoff (%s)", rows_total, batch_job_id, batch_dir)
    return rows_total
