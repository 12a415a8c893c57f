"""The schema: robotoff-batch's own tables (ledger, job links, owner record) and Robotoff's
``prediction`` and ``product_insight`` as Robotoff has them today, created only where
absent; our own first embedded table upgraded in place."""

from __future__ import annotations

import logging
from typing import Any

import psycopg
from psycopg import sql

from robotoff_batch.predictions.model import PredictionStoreError, load_sql, named_statements
from robotoff_batch.predictions.queries import (
    COLUMNS_SQL,
    INDEX_EXISTS_SQL,
    LEDGER_UPGRADES,
    LEGACY_INDEX,
    LEGACY_JOB_EXPR,
    OWN_SQL,
    OWNED_SQL,
    ROBOTOFF_COLUMNS,
    SCHEMA_LOCK_KEY,
)

logger = logging.getLogger(__name__)


def create_or_check(conn: psycopg.Connection[Any], target: str) -> None:
    """Inside the caller's transaction: our tables, and Robotoff's where they do not exist;
    an existing Robotoff table is never altered, it must have the columns the import
    writes (else this fails naming them)."""
    conn.execute("SELECT pg_advisory_xact_lock(%s)", (SCHEMA_LOCK_KEY,))
    conn.execute(load_sql("schema.sql"))
    ledger_columns = {c for _, c in conn.execute(COLUMNS_SQL, (["batch_job_import"],))}
    for column, statement in LEDGER_UPGRADES.items():
        if column not in ledger_columns:
            conn.execute(statement)
    owned = {row[0] for row in conn.execute(OWNED_SQL)}
    present: dict[str, set[str]] = {}
    for table, column in conn.execute(COLUMNS_SQL, (list(ROBOTOFF_COLUMNS),)):
        present.setdefault(table, set()).add(column)
    if "prediction" in present and "prediction" not in owned:
        if conn.execute(INDEX_EXISTS_SQL, (LEGACY_INDEX,)).fetchone():
            upgrade_legacy_table(conn)
            owned.add("prediction")
    ddl = dict(named_statements(load_sql("robotoff_schema.sql")))
    for table, wanted in ROBOTOFF_COLUMNS.items():
        if table not in present:
            logger.info("creating Robotoff's %s table in %s", table, target)
            conn.execute(ddl[table])
            conn.execute(OWN_SQL, (table,))
            continue
        missing = [c for c in wanted if c not in present[table]]
        if missing:
            raise PredictionStoreError(
                f"table {table} in {target} lacks column(s) {missing}: it is not "
                "Robotoff's current schema, and robotoff-batch never alters a table it "
                "did not create (run Robotoff's migrations)"
            )


def upgrade_legacy_table(conn: psycopg.Connection[Any]) -> None:
    """Our own first embedded table: Robotoff's current shape, job links moved out of
    predictor_version into batch_job_prediction."""
    logger.info("upgrading robotoff-batch's earlier embedded prediction table")
    conn.execute(
        "INSERT INTO batch_job_prediction (batch_job_id, first_id, last_id) "
        "SELECT job, min(id), max(id) FROM ("
        f"  SELECT {LEGACY_JOB_EXPR} AS job, id, id - row_number() OVER "
        f"  (PARTITION BY {LEGACY_JOB_EXPR} ORDER BY id) AS island FROM prediction"
        f"  WHERE {LEGACY_JOB_EXPR} IS NOT NULL"
        ") AS legacy GROUP BY job, island"
    )
    conn.execute(
        "UPDATE prediction SET predictor_version = "
        "regexp_replace(predictor_version, '@[^@]+$', '') "
        "WHERE predictor_version LIKE '%@%'"
    )
    for index in (LEGACY_INDEX, "prediction_data", "prediction_source_image"):
        conn.execute(sql.SQL("DROP INDEX IF EXISTS {}").format(sql.Identifier(index)))
    conn.execute("ALTER TABLE prediction ALTER COLUMN confidence TYPE real")
    conn.execute("ALTER TABLE prediction ALTER COLUMN server_type DROP DEFAULT")
    conn.execute(OWN_SQL, ("prediction",))
