"""The import's row checks: bad rows held back (quarantined), not the job refused.

Inside the import's transaction, over the temporary tables (set-based, one scan or hash
aggregate each):

- identical repeats of an output row (every output column equal) are collapsed: imported once;
- a product with conflicting rows (the same key, another content) is held back, all its rows;
- a row whose key is not a product of the job's input is held back; a product the facts read
  at import mark as deleted since the launch is counted, not imported, not held back;
- a row whose JSON column (``ImportSpec.json_columns``: ingredients-spellcheck's
  ``corrections``) is not valid jsonb is held back with the parser's message;
- a prediction row with a null required column or a value over its varchar(n) limit is held
  back (the Arrow-level checks, null or empty key, NUL byte, not UTF-8, are made while the
  output is copied: :func:`arrow_copy.copy_output`).

Held-back rows land in ``batch_quarantine`` (temporary), then, once the import commits, in our
``batch_job_quarantine`` with their file and row: a re-import of the job does not re-consider
them, ``import JOB --retry-quarantined`` does. More than ``max_bad_row_fraction`` of the rows
held back refuses the whole output, naming the first ones.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

import psycopg
from psycopg import sql

from robotoff_batch.predictions.arrow_copy import BadRow
from robotoff_batch.predictions.model import MAX_LENGTHS, ImportSpec, PredictionImportError
from robotoff_batch.predictions.queries import QUARANTINE_INSERT_SQL

#: Default share of an output's rows that may be held back before the whole output is refused.
DEFAULT_MAX_BAD_ROW_FRACTION = 0.01

_CREATE_QUARANTINE = """
CREATE TEMP TABLE batch_quarantine (_file integer NOT NULL, _row bigint NOT NULL, code text,
    reason text NOT NULL) ON COMMIT DROP
"""
# Every prediction row with a null required value or a value over its varchar(n) limit
# ({data_case} and {data_test}: the data test, left out where the job type's data is never
# NULL, ImportSpec.data_never_null).
_ROW_CHECKS = f"""
INSERT INTO batch_quarantine (_file, _row, code, reason)
SELECT _file, _row, barcode, CASE
    WHEN barcode IS NULL OR barcode = '' THEN 'null or empty ''barcode'''
    WHEN type IS NULL OR type = '' THEN 'null or empty ''type'''
    {{data_case}}
    WHEN server_type IS NULL OR "timestamp" IS NULL THEN 'null ''server_type'''
    WHEN length(barcode) > {MAX_LENGTHS["barcode"]}
        THEN '''barcode'' is longer than {MAX_LENGTHS["barcode"]} characters'
    WHEN length(type) > {MAX_LENGTHS["type"]}
        THEN '''type'' is longer than {MAX_LENGTHS["type"]} characters'
    WHEN length(predictor) > {MAX_LENGTHS["predictor"]}
        THEN '''predictor'' is longer than {MAX_LENGTHS["predictor"]} characters'
    WHEN length(predictor_version) > {MAX_LENGTHS["predictor_version"]}
        THEN '''predictor_version'' is longer than {MAX_LENGTHS["predictor_version"]} characters'
    ELSE '''server_type'' is longer than {MAX_LENGTHS["server_type"]} characters' END
FROM batch_prediction
WHERE {{test}}
ON CONFLICT DO NOTHING
"""
_ROW_TEST = f"""barcode IS NULL OR barcode = '' OR type IS NULL OR type = '' {{data_test}}
    OR server_type IS NULL OR "timestamp" IS NULL
    OR length(barcode) > {MAX_LENGTHS["barcode"]} OR length(type) > {MAX_LENGTHS["type"]}
    OR length(predictor) > {MAX_LENGTHS["predictor"]}
    OR length(predictor_version) > {MAX_LENGTHS["predictor_version"]}
    OR length(server_type) > {MAX_LENGTHS["server_type"]}"""


def row_test_sql(*, check_data: bool) -> str:
    """The condition a bad prediction row meets (over ``batch_prediction``)."""
    return _ROW_TEST.format(data_test="OR data IS NULL" if check_data else "")


def row_checks_sql(*, check_data: bool) -> str:
    """The prediction rows' checks, with the ``data IS NULL`` test or without it."""
    return _ROW_CHECKS.format(
        data_case="WHEN data IS NULL THEN 'null ''data'''" if check_data else "",
        test=row_test_sql(check_data=check_data),
    )


class RowChecks:
    """The held-back rows of one import, in ``batch_quarantine``."""

    def __init__(
        self,
        cur: psycopg.Cursor[Any],
        *,
        spec: ImportSpec,
        where: Callable[[int, int], str],
        max_bad_row_fraction: float,
    ) -> None:
        self.cur = cur
        self.spec = spec
        self.where = where
        self.max_bad_row_fraction = max_bad_row_fraction
        self.collapsed = 0
        self.deleted_products = 0
        cur.execute(_CREATE_QUARANTINE)
        cur.execute("CREATE UNIQUE INDEX ON batch_quarantine (_file, _row)")

    def add(self, rows: Sequence[BadRow]) -> None:
        """Rows the copy held back (null key, NUL byte, not UTF-8)."""
        if rows:
            with self.cur.copy("COPY batch_quarantine (_file, _row, code, reason) FROM STDIN") as c:
                for row in rows:
                    c.write_row(row)

    def unique(self, column: str) -> None:
        """Identical repeats collapsed (the first kept); conflicting rows of a key held back."""
        c = sql.Identifier(column)
        cur = self.cur
        # one hash aggregate; the rest only when a key repeats
        if not cur.execute(
            sql.SQL("SELECT 1 FROM batch_output GROUP BY {c} HAVING count(*) > 1 LIMIT 1").format(
                c=c
            )
        ).fetchone():
            return
        columns = sql.SQL(", ").join(sql.Identifier(n) for n in self.spec.output_schema.names)
        cur.execute(
            sql.SQL(
                "CREATE TEMP TABLE batch_repeated ON COMMIT DROP AS "
                "SELECT _file, _row, {c} AS key, row_number() OVER (PARTITION BY {columns} "
                "ORDER BY _file, _row) AS copy_number FROM batch_output "
                "WHERE {c} IN (SELECT {c} FROM batch_output GROUP BY {c} HAVING count(*) > 1)"
            ).format(c=c, columns=columns)
        )
        cur.execute(
            "DELETE FROM batch_output o USING batch_repeated r "
            "WHERE o._file = r._file AND o._row = r._row AND r.copy_number > 1"
        )
        self.collapsed += max(cur.rowcount, 0)
        cur.execute(
            sql.SQL(
                "INSERT INTO batch_quarantine (_file, _row, code, reason) "
                "SELECT o._file, o._row, o.{c}, 'conflicting rows for this ' || {name} || "
                "' (' || count(*) OVER (PARTITION BY o.{c}) || ' different rows)' "
                "FROM batch_output o WHERE o.{c} IN "
                "(SELECT {c} FROM batch_output GROUP BY {c} HAVING count(*) > 1) "
                "ON CONFLICT DO NOTHING"
            ).format(c=c, name=sql.Literal(column))
        )

    def facts(self, *, has_deleted: bool, members_checked: bool = False) -> None:
        """Rows whose key is no product of the job's input held back (unless
        ``members_checked``: the client found every key among the facts' codes,
        arrow_copy.CopiedKeys); rows of a product deleted since the launch counted and
        dropped (``has_deleted``: some fact marks one)."""
        k = sql.Identifier(self.spec.key_column)
        cur = self.cur
        if not members_checked:
            self._not_products(k)
        if has_deleted:
            cur.execute(
                sql.SQL(
                    "DELETE FROM batch_output o USING batch_product f "
                    "WHERE f.code = o.{k} AND f.deleted"
                ).format(k=k)
            )
            self.deleted_products = max(cur.rowcount, 0)

    def _not_products(self, k: sql.Identifier) -> None:
        self.cur.execute(
            sql.SQL(
                "INSERT INTO batch_quarantine (_file, _row, code, reason) "
                "SELECT o._file, o._row, o.{k}, 'not a product of the job''s input' "
                "FROM batch_output o "
                "WHERE NOT EXISTS (SELECT 1 FROM batch_product f WHERE f.code = o.{k}) "
                "ON CONFLICT DO NOTHING"
            ).format(k=k)
        )

    def json_values(self, filled: set[str] | None = None) -> None:
        """Rows with a JSON column (``ImportSpec.json_columns``) that is not valid jsonb
        held back, and dropped from ``batch_output`` at once: the prediction view casts the
        column, and one bad value would make every statement over it fail. ``filled``: the
        columns that hold a value (the client's count while copying); the others are skipped.

        ``pg_input_is_valid`` (PostgreSQL 16+; Robotoff runs 16.3, docker-compose.yml) tests
        exactly what the cast accepts (e.g. ``\\u0000`` is valid JSON but not jsonb)."""
        cur = self.cur
        for column in self.spec.json_columns:
            if filled is not None and column not in filled:
                continue
            c = sql.Identifier(column)
            cur.execute(
                sql.SQL(
                    # (one validity test a value; every such row leaves batch_output, also
                    # one an earlier check already held back, whose INSERT is skipped)
                    "WITH bad AS (DELETE FROM batch_output o "
                    "WHERE o.{c} IS NOT NULL AND NOT pg_input_is_valid(o.{c}, 'jsonb') "
                    "RETURNING o._file, o._row, o.{k} AS code, o.{c} AS value) "
                    "INSERT INTO batch_quarantine (_file, _row, code, reason) "
                    "SELECT _file, _row, code, {name} || ' is not valid JSON: ' || "
                    "(pg_input_error_info(value, 'jsonb')).message FROM bad "
                    "ON CONFLICT DO NOTHING"
                ).format(
                    c=c,
                    k=sql.Identifier(self.spec.key_column),
                    name=sql.Literal(repr(column)),
                )
            )

    @property
    def predictions_test(self) -> str:
        """The condition of :meth:`predictions`: the caller counts the rows meeting it in a
        pass it makes anyway (dedup.job_constants) and calls it only when there are some."""
        return row_test_sql(check_data=not self.spec.data_never_null)

    def predictions(self) -> None:
        """Prediction rows with a null required value or a value too long."""
        self.cur.execute(row_checks_sql(check_data=not self.spec.data_never_null))

    def settle(self, *, source_rows: int, batch_job_id: str) -> int:
        """Refuse the whole output when too many rows are held back; else drop them from
        ``batch_output`` (so from every view over it). Returns how many are held back."""
        cur = self.cur
        row = cur.execute("SELECT count(*) FROM batch_quarantine").fetchone()
        held = int(row[0]) if row else 0
        if held == 0:
            return 0
        if held > self.max_bad_row_fraction * source_rows:
            first = cur.execute(
                "SELECT _file, _row, reason FROM batch_quarantine ORDER BY _file, _row LIMIT 5"
            ).fetchall()
            listed = "; ".join(f"{self.where(f, r)}: {why}" for f, r, why in first)
            raise PredictionImportError(
                f"{held} of {source_rows} rows of the output of {batch_job_id} are bad, more "
                f"than max_bad_row_fraction {self.max_bad_row_fraction:g}: {listed}"
                f"{'; ...' if held > len(first) else ''}; nothing was imported"
            )
        cur.execute(
            "DELETE FROM batch_output o USING batch_quarantine q "
            "WHERE o._file = q._file AND o._row = q._row"
        )
        return held

    def record(self, *, batch_job_id: str, files: Sequence[str]) -> None:
        """The held-back rows into our ``batch_job_quarantine``, named by file."""
        rows = self.cur.execute(
            "SELECT _file, _row, code, reason FROM batch_quarantine ORDER BY _file, _row"
        ).fetchall()
        if rows:
            self.cur.executemany(
                QUARANTINE_INSERT_SQL,
                [(batch_job_id, files[f], r, code, why) for f, r, code, why in rows],
            )
