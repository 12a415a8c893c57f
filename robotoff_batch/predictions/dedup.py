"""The dedup rule's SQL, specialised by the job's constant columns and planned by its barcodes.

Robotoff's ``prediction`` table is read once, by the barcodes of the job's predictions and of
its replace scope ``batch_scope`` (``barcode = ANY(ARRAY(...))``: a bitmap scan of its barcode
index), into the analysed temporary table ``batch_stored``; every
join after that is between analysed temporary tables, and rows are deleted by primary key.
Whatever the size of Robotoff's table, no statement scans it in full or loops over it.

Why specialised: a job's predictions mostly share their key columns (ingredients-spellcheck:
``source_image`` and ``value`` NULL, ``automatic_processing`` false, one type, one server type,
one predictor and version). ``p.col IS NOT DISTINCT FROM n.col`` against such a constant is a
filter PostgreSQL estimates at one row, whatever the data (2.86 M rows matched where 1 was
estimated on Robotoff-sized tables, hence a nested loop of every stored prediction by every
job row); the same filter written ``p.col IS NULL`` or ``p.col = 'lexicon-cpu'`` is estimated
from the column's statistics. So the job's constant columns are found in one pass
(:func:`job_constants`) and written as literals; only the columns that vary row to row are
joined.
"""

from __future__ import annotations

from typing import Any

import psycopg
from psycopg import sql

# Robotoff's key of a prediction (besides barcode): a stored one with the same key is kept.
KEY = (
    "type",
    "server_type",
    "source_image",
    "value_tag",
    "value",
    "predictor",
    "automatic_processing",
)
# The replace rule's scope (besides barcode): a stored prediction of the same scope and another
# predictor_version is deleted, whatever its predictor (issue 17; importer.py:2229-2255), for
# every row of ``batch_scope`` (the job type's rows with a verdict, unchanged ones included).
SCOPE = ("type", "server_type", "source_image")
_TEXT = ("type", "server_type", "source_image", "value_tag", "value", "predictor")
_COLUMNS = (*_TEXT, "predictor_version", "automatic_processing")
# batch_scope's columns (besides _file, _row, barcode)
_SCOPE_TEXT = (*SCOPE, "predictor_version")


def job_constants(
    cur: psycopg.Cursor[Any], relation: str = "batch_prediction", *, bad: str | None = None
) -> tuple[int, dict[str, Any], int]:
    """One pass over the job's predictions (or, ``relation="batch_scope"``, the replace
    rule's scope): their count, the key columns (and ``predictor_version``) that hold one
    value, or only NULL, on every row (``{column: value}``, value None for NULL), and how many
    rows meet the condition ``bad`` (0 without one)."""
    scope = relation == "batch_scope"
    text = _SCOPE_TEXT if scope else (*_TEXT, "predictor_version")
    parts: list[sql.Composable] = [sql.SQL("count(*)")]
    for column in text:
        c = sql.Identifier(column)
        # "C" collation: min = max exactly when every value is the same string
        parts += [
            sql.SQL("count({})").format(c),
            sql.SQL('min({} COLLATE "C")').format(c),
            sql.SQL('max({} COLLATE "C")').format(c),
        ]
    if not scope:
        parts += [
            sql.SQL("count(automatic_processing)"),
            sql.SQL("bool_and(automatic_processing)"),
            sql.SQL("bool_or(automatic_processing)"),
        ]
    if bad is not None:
        parts.append(sql.SQL("count(*) FILTER (WHERE {})").format(sql.SQL(bad)))  # type: ignore[arg-type]
    row = cur.execute(
        sql.SQL("SELECT {} FROM {}").format(sql.SQL(", ").join(parts), sql.Identifier(relation))
    ).fetchone()
    assert row is not None
    total = int(row[0])
    constants: dict[str, Any] = {}
    for i, column in enumerate(text if scope else (*text, "automatic_processing")):
        filled, low, high = row[1 + 3 * i : 4 + 3 * i]
        if filled == 0:
            constants[column] = None
        elif filled == total and low == high:
            constants[column] = low
    return total, constants, int(row[-1]) if bad is not None else 0


def _match(
    column: str, constants: dict[str, Any], stored: str = "s", new: str = "n"
) -> sql.Composed:
    """``stored.column`` equal to the job's value: a literal where it is constant."""
    s = sql.SQL("{}.{}").format(sql.Identifier(stored), sql.Identifier(column))
    if column in constants:
        value = constants[column]
        if value is None:
            return sql.SQL("{} IS NULL").format(s)
        return sql.SQL("{} = {}").format(s, sql.Literal(value))
    n = sql.SQL("{}.{}").format(sql.Identifier(new), sql.Identifier(column))
    return sql.SQL("{} IS NOT DISTINCT FROM {}").format(s, n)


def _and(conditions: list[sql.Composed]) -> sql.Composed:
    return sql.SQL(" AND ").join(conditions) if conditions else sql.Composed([sql.SQL("true")])


def stored_filter(
    candidates: int,
    constants: dict[str, Any],
    scoped: int,
    scope_constants: dict[str, Any],
) -> dict[str, Any]:
    """The scope columns ``batch_stored`` may be narrowed by: constant (with one value) over
    both the job's predictions and its replace scope, as both the replace rule and the kept
    rows read ``batch_stored`` (a relation without rows constrains nothing)."""
    if not candidates:
        return {c: scope_constants[c] for c in SCOPE if c in scope_constants}
    if not scoped:
        return {c: constants[c] for c in SCOPE if c in constants}
    return {
        c: constants[c]
        for c in SCOPE
        if c in constants and c in scope_constants and constants[c] == scope_constants[c]
    }


def stored_sql(constants: dict[str, Any]) -> sql.Composed:
    """The stored predictions of the job's barcodes (its replace scope's, which include its
    predictions') that the rule can touch (the scope columns of ``constants``, from
    :func:`stored_filter`, equal to the job's), read once by the barcode index."""
    return sql.SQL(
        "CREATE TEMP TABLE batch_stored ON COMMIT DROP AS "
        "SELECT p.id, p.barcode, {columns} FROM ("
        # the barcodes alone in this fenced scan (OFFSET 0): the index of the barcode, never
        # another index with the barcodes tested row by row as a filter
        # (batch_scope holds every prediction's row: ImportSpec.scope_sql; the array's repeats
        # are dropped by the index scan, so no UNION or DISTINCT pass over a million barcodes)
        "SELECT * FROM prediction "
        "WHERE barcode = ANY (ARRAY(SELECT barcode FROM batch_scope)) OFFSET 0"
        ") AS p WHERE {scope}"
    ).format(
        columns=sql.SQL(", ").join(sql.SQL("p.{}").format(sql.Identifier(c)) for c in _COLUMNS),
        scope=_and([_match(c, constants, stored="p") for c in SCOPE if c in constants]),
    )


def replace_sql(scope_constants: dict[str, Any]) -> sql.Composed:
    """Step 1 of the rule: delete (by id) the stored predictions in the scope of a row of
    ``batch_scope`` (same barcode, type, server_type, source_image) with another
    predictor_version, whatever their predictor, and drop them from ``batch_stored``; its row
    count is the number replaced. ``scope_constants``: :func:`job_constants` of
    ``batch_scope``. Joins ``batch_scope`` by barcode and its varying columns only when a scope
    column or the version varies within it (else a hashed semi-join on the barcode)."""
    constants = scope_constants
    varying = [c for c in SCOPE if c not in constants]
    other: sql.Composable
    if "predictor_version" in constants:
        other = sql.SQL("s.predictor_version IS DISTINCT FROM {}").format(
            sql.Literal(constants["predictor_version"])
        )
    else:
        other = sql.SQL("s.predictor_version IS DISTINCT FROM n.predictor_version")
    fixed = [_match(c, constants) for c in SCOPE if c in constants]
    if varying or "predictor_version" not in constants:
        replaced = sql.SQL(
            "SELECT s.id FROM batch_stored s JOIN batch_scope n ON n.barcode = s.barcode "
            "AND {same} WHERE {fixed} AND {other}"
        ).format(
            same=_and([_match(c, constants) for c in varying]),
            fixed=_and(fixed),
            other=other,
        )
    else:
        replaced = sql.SQL(
            "SELECT s.id FROM batch_stored s WHERE {fixed} AND {other} "
            "AND s.barcode IN (SELECT n.barcode FROM batch_scope n)"
        ).format(fixed=_and(fixed), other=other)
    return sql.SQL(
        "WITH replaced AS (DELETE FROM prediction p WHERE p.id = ANY (ARRAY({replaced})) "
        "RETURNING p.id) "
        "DELETE FROM batch_stored s USING replaced r WHERE s.id = r.id"
    ).format(replaced=replaced)


def kept_sql(constants: dict[str, Any]) -> sql.Composed:
    """Step 2's skip list: the job's rows whose Robotoff key is stored (after step 1 that is
    the same version), by (_file, _row)."""
    return sql.SQL(
        "CREATE TEMP TABLE batch_kept ON COMMIT DROP AS "
        "SELECT n._file, n._row FROM batch_prediction n WHERE EXISTS ("
        "SELECT 1 FROM batch_stored s WHERE s.barcode = n.barcode AND {key})"
    ).format(key=_and([_match(c, constants) for c in KEY]))


_INSERT = """
WITH inserted AS (
    INSERT INTO prediction (barcode, type, data, "timestamp", value_tag, value, source_image,
        automatic_processing, predictor, predictor_version, confidence, server_type)
    SELECT n.barcode, n.type, n.data, n."timestamp", n.value_tag, n.value, n.source_image,
        n.automatic_processing, n.predictor, n.predictor_version, n.confidence, n.server_type
    FROM batch_new n
    RETURNING id
),
islands AS (SELECT id, id - row_number() OVER (ORDER BY id) AS island FROM inserted)
INSERT INTO batch_job_prediction (batch_job_id, first_id, last_id)
SELECT %(batch_job_id)s, min(id), max(id) FROM islands GROUP BY island
RETURNING last_id - first_id + 1
"""


def new_view_sql(*, skip_kept: bool) -> str:
    """``batch_new``: the job's predictions the INSERT writes (all but the kept ones), in
    output order; the job type's insight SQL reads the job's own predictions from it (it runs
    before the INSERT, so never reads them back from ``prediction``).

    The kept rows are left out by a hashed ``NOT IN`` filter on the sequential scan of
    ``batch_output`` (never turned into a join, which could reorder)."""
    skip = " WHERE (n._file, n._row) NOT IN (SELECT k._file, k._row FROM batch_kept k)"
    return "CREATE TEMP VIEW batch_new AS SELECT n.* FROM batch_prediction n" + (
        skip if skip_kept else ""
    )


def insert_sql() -> str:
    """Step 2: insert ``batch_new`` (:func:`new_view_sql`), and link the ids it got to the
    job as ranges of consecutive ids.

    The ids follow the output's order (file, row), the contract ``fetch_examples`` relies on
    (the job's first rows are its examples) and ``test_optional_columns_default`` checks,
    without sorting the rows: ``batch_output`` is filled by one COPY in that order, and this
    reads it by one sequential scan (a temporary table: no synchronised or parallel scan)."""
    return _INSERT
