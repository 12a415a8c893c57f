"""The prediction store's SQL: schema checks, the ledger, the import's checks and dedup rule,
and the queries the asset checks run. Constant text; values are bound parameters."""

from __future__ import annotations

from robotoff_batch.predictions.model import PREDICTION_COLUMNS

SCHEMA_LOCK_KEY = 7_286_114_052_117_303  # pg_advisory_xact_lock key of ensure_schema
# Robotoff's tables: the columns the import writes (an existing table must have them).
ROBOTOFF_COLUMNS: dict[str, tuple[str, ...]] = {
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
LEGACY_INDEX = "prediction_batch_job_id"
LEGACY_JOB_EXPR = "substring(predictor_version FROM '@([^@]+)$')"

COLUMNS_SQL = """
SELECT table_name, column_name FROM information_schema.columns
WHERE table_schema = current_schema() AND table_name = ANY(%s)
"""
OWNED_SQL = "SELECT table_name FROM batch_schema_owner"
OWN_SQL = "INSERT INTO batch_schema_owner (table_name) VALUES (%s) ON CONFLICT DO NOTHING"
INDEX_EXISTS_SQL = "SELECT 1 FROM pg_indexes WHERE schemaname = current_schema() AND indexname = %s"
# The ledger's counts added after its first version (our table, so we may add them).
_LATER_COUNTS = (
    "candidates",
    "predictions_kept",
    "predictions_replaced",
    "insights_created",
    "insights_updated",
    "insights_kept",
    "insights_deleted",
    "rows_quarantined",  # output rows held back (batch_job_quarantine)
    "rows_collapsed",  # identical repeats of an output row, imported once
    "products_deleted",  # products absent from the dump read at import (deleted since)
)
LEDGER_UPGRADES: dict[str, str] = {
    name: f"ALTER TABLE batch_job_import ADD COLUMN IF NOT EXISTS {name} integer NOT NULL DEFAULT 0"
    for name in _LATER_COUNTS
}
LEDGER_UPGRADES["target"] = (
    "ALTER TABLE batch_job_import ADD COLUMN IF NOT EXISTS target text NOT NULL DEFAULT 'postgres'"
)
LEDGER_UPGRADES["partial"] = (
    "ALTER TABLE batch_job_import ADD COLUMN IF NOT EXISTS partial boolean NOT NULL DEFAULT false"
)
LEDGER_COLUMNS = (
    "batch_job_id",
    "job_type",
    "imported_at",
    "predictions",
    "source_rows",
    "skipped_rows",
    *_LATER_COUNTS,
    "target",
    "partial",
)
RECORD_PARTIAL_SQL = "UPDATE batch_job_import SET partial = %s WHERE batch_job_id = %s"
RECORD_CHUNKS_SQL = "INSERT INTO batch_job_chunk (uri, batch_job_id) SELECT unnest(%s::text[]), %s"
IMPORTED_CHUNKS_SQL = "SELECT uri FROM batch_job_chunk WHERE uri = ANY(%s)"
IMPORTED_CHUNKS_ELSEWHERE_SQL = (
    "SELECT uri FROM batch_job_chunk WHERE uri = ANY(%s) AND batch_job_id <> %s"
)

IMPORTED_JOBS_SQL = "SELECT batch_job_id FROM batch_job_import WHERE batch_job_id = ANY(%s)"
CLAIM_SQL = """
INSERT INTO batch_job_import (batch_job_id, job_type, predictions, source_rows, skipped_rows,
    target)
VALUES (%s, %s, 0, 0, 0, %s)
ON CONFLICT (batch_job_id) DO NOTHING
RETURNING batch_job_id
"""
RECORD_SQL = """
UPDATE batch_job_import SET predictions = %(predictions)s, source_rows = %(source_rows)s,
    skipped_rows = %(skipped_rows)s, candidates = %(candidates)s,
    predictions_kept = %(predictions_kept)s, predictions_replaced = %(predictions_replaced)s,
    insights_created = %(insights_created)s, insights_updated = %(insights_updated)s,
    insights_kept = %(insights_kept)s, insights_deleted = %(insights_deleted)s,
    rows_quarantined = %(rows_quarantined)s, rows_collapsed = %(rows_collapsed)s,
    products_deleted = %(products_deleted)s, imported_at = now()
WHERE batch_job_id = %(batch_job_id)s
"""
LEDGER_SQL = f"SELECT {', '.join(LEDGER_COLUMNS)} FROM batch_job_import WHERE batch_job_id = %s"

# The job's predictions, as a view over batch_output (the job type's SELECT, typed here):
# nothing is materialised, and each statement below computes only the columns it reads.
CREATE_PREDICTION_VIEW = """
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
# Two predictions of one job with the same Robotoff key: Robotoff would keep one at random.
DUPLICATE_PREDICTION_SQL = """
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
# The rows the replace rule applies to: every output row the job type gives a verdict on
# (ImportSpec.scope_sql: for ingredients-spellcheck the unchanged rows too, as Robotoff builds
# a prediction from every row), else the job's predictions.
CREATE_SCOPE_VIEW = """
CREATE TEMP VIEW batch_scope AS
SELECT _file::integer AS _file, _row::bigint AS _row, barcode::text AS barcode,
    type::text AS type, server_type::text AS server_type, source_image::text AS source_image,
    predictor_version::text AS predictor_version
FROM ({select}) AS s (_file, _row, barcode, type, server_type, source_image, predictor_version)
"""
SCOPE_FROM_PREDICTIONS = (
    "SELECT _file, _row, barcode, type, server_type, source_image, predictor_version "
    "FROM batch_prediction"
)
# The dedup rule (replace, keep, insert, job links): predictions/dedup.py.
JOB_ROWS = (
    "FROM batch_job_prediction l JOIN prediction p "
    "ON p.id BETWEEN l.first_id AND l.last_id WHERE l.batch_job_id = %s"
)
COUNT_SQL = f"SELECT count(*) {JOB_ROWS}"
DUPLICATES_BY_JOB_SQL = f"""
SELECT count(*) FROM (
    SELECT 1 {JOB_ROWS}
    GROUP BY p.barcode, p.type, p.value_tag, p.predictor, p.predictor_version
    HAVING count(*) > 1
) AS duplicate_groups
"""
DUPLICATES_BY_VERSION_SQL = """
SELECT count(*) FROM (
    SELECT 1 FROM prediction WHERE predictor_version LIKE %s
    GROUP BY barcode, type, value_tag, predictor, predictor_version HAVING count(*) > 1
) AS duplicate_groups
"""
EXAMPLES_SQL = f"""
SELECT p.id, p.barcode, p.type, p.data, p."timestamp", p.value_tag, p.value, p.source_image,
    p.automatic_processing, p.predictor, p.predictor_version, p.confidence, p.server_type
{JOB_ROWS} ORDER BY p.id LIMIT %s
"""

# The quarantine: held-back rows of a job, written in the import's transaction.
QUARANTINE_SQL = """
SELECT file, "row", code, reason FROM batch_job_quarantine WHERE batch_job_id = %s
ORDER BY file, "row" LIMIT %s
"""
QUARANTINE_KEYS_SQL = 'SELECT file, "row" FROM batch_job_quarantine WHERE batch_job_id = %s'
QUARANTINE_DELETE_SQL = "DELETE FROM batch_job_quarantine WHERE batch_job_id = %s"
QUARANTINE_INSERT_SQL = """
INSERT INTO batch_job_quarantine (batch_job_id, file, "row", code, reason)
VALUES (%s, %s, %s, %s, %s)
"""
LOCK_LEDGER_SQL = "SELECT 1 FROM batch_job_import WHERE batch_job_id = %s FOR UPDATE"
