"""The import on tables the size of Robotoff's: every statement planned by the job's barcodes.

A private embedded PostgreSQL (its own server log, read back for the plans) with Robotoff's
schema: ``prediction`` pre-filled with 500,000 rows with Robotoff's constants (400,000
``ingredient_spellcheck`` predictions, ``source_image``, ``value`` NULL, ``automatic_processing``
false, and 100,000 of other types) and ``product_insight`` with 250,000, VACUUM ANALYZEd as a
production database is; then a 50,000-row ingredients-spellcheck job through the real import
(``output.import_job_output``). ``auto_explain`` logs the plan of every statement the import
runs; none may read ``prediction`` or ``product_insight`` by a sequential scan, a full index
scan, or repeatedly from a nested loop's inner side other than by an index condition. Before
this was fixed the replace rule's ``IS NOT DISTINCT FROM`` against the job's constants was
estimated at one row and planned as a nested loop over every stored prediction: the
``statement_timeout`` below ends such a plan as a failure.

The same job imported into empty tables must leave the same rows for its products (the job's
products are new ones, products with an older stored version of the predictor, with the same
version already stored, with a stored insight to update, with an annotated one that blocks).
"""

from __future__ import annotations

import json
import re
import shutil
from collections import Counter
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import psycopg
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from psycopg import sql

from robotoff_batch.job_types.ingredients_spellcheck import FACTS_SCHEMA, JOB_TYPE
from robotoff_batch.predictions import output
from robotoff_batch.predictions.embedded import (
    LOG_FILE_NAME,
    ensure_embedded_postgres,
    stop_embedded_postgres,
    with_database,
)
from robotoff_batch.predictions.store import PredictionStore
from robotoff_batch.staging import Staging, staging_from_uri
from tests.pg_fixtures import private_tmp_dir
from tests.test_spellcheck_import import SucceededEngine, job_dir

STORED_PREDICTIONS = 500_000
SPELLCHECK_PRODUCTS = 400_000  # stored products 1..400,000 have a spellcheck prediction
STORED_INSIGHTS = 200_000  # products 1..200,000 have a spellcheck insight (every 10th annotated)
JOB_ROWS = 50_000
REPLACED = 5_000  # job rows 0..4,999: products 1..5,000, stored with version 0 (replaced)
KEPT = 2_500  # job rows 5,000..7,499: products 5,001..7,500, stored with this version (kept)
LANGS = ("fr", "en", "de", "es", "it")
JOB = "ingredients-spellcheck-20261202t040000-scale"
TABLES = ("prediction", "product_insight")
STATEMENT_TIMEOUT = "60s"  # a flipped plan takes hours; a good one seconds

# Robotoff's rows, set-based: product i (1-based) has barcode '1' || lpad(i, 12, '0'); job row j
# (0-based) is product j + 1 for j < REPLACED + KEPT, else a new product '2' || lpad(j, 12, '0').
# Texts and langs are functions of j = i - 1, so a stored prediction of the job's version is
# exactly the row the job gives.
_TEXT = "'sucre, farinne ' || ({j})"
_CORRECTION = "'sucre, farine ' || ({j})"
_LANG = "(ARRAY['fr','en','de','es','it'])[({j}) % 5 + 1]"
FILL_SQL = [
    f"""
INSERT INTO prediction (barcode, type, data, "timestamp", value_tag, value, source_image,
    automatic_processing, predictor, predictor_version, confidence, server_type)
SELECT '1' || lpad(i::text, 12, '0'), 'ingredient_spellcheck',
    jsonb_build_object('original', CASE WHEN i > {REPLACED} AND i <= {REPLACED + KEPT}
            THEN {_TEXT.format(j="i - 1")} ELSE 'old text ' || i END,
        'correction', CASE WHEN i > {REPLACED} AND i <= {REPLACED + KEPT}
            THEN {_CORRECTION.format(j="i - 1")} ELSE 'old correction ' || i END,
        'lang', {_LANG.format(j="i - 1")}, 'lang_confidence', NULL),
    timestamp '2026-01-01' + i * interval '1 second', {_LANG.format(j="i - 1")}, NULL, NULL,
    false, 'lexicon-cpu',
    CASE WHEN i > {REPLACED} AND i <= {REPLACED + KEPT} THEN '1' ELSE '0' END, NULL, 'off'
FROM generate_series(1, {SPELLCHECK_PRODUCTS}) AS i
""",
    # other types on the same products (Robotoff's table holds every prediction type)
    f"""
INSERT INTO prediction (barcode, type, data, "timestamp", value_tag, value, source_image,
    automatic_processing, predictor, predictor_version, confidence, server_type)
SELECT '1' || lpad(i::text, 12, '0'), CASE WHEN i % 2 = 0 THEN 'category' ELSE 'label' END,
    '{{}}'::jsonb, timestamp '2026-01-01', CASE WHEN i % 2 = 0 THEN 'en:snacks'
        ELSE 'en:organic' END, NULL,
    CASE WHEN i % 2 = 0 THEN NULL ELSE '/' || i || '/1.jpg' END, i % 3 = 0,
    CASE WHEN i % 2 = 0 THEN 'neural' ELSE 'flashtext' END, '1', 0.9, 'off'
FROM generate_series(1, {STORED_PREDICTIONS - SPELLCHECK_PRODUCTS}) AS i
""",
    f"""
INSERT INTO product_insight (id, barcode, type, data, "timestamp", annotation, n_votes,
    countries, brands, value_tag, automatic_processing, server_type, unique_scans_n,
    reserved_barcode, predictor, predictor_version, campaign, lc, with_image)
SELECT gen_random_uuid(), '1' || lpad(i::text, 12, '0'), 'ingredient_spellcheck',
    '{{"original": "old", "correction": "older"}}'::jsonb,
    timestamp '2026-01-01' + i * interval '1 second', CASE WHEN i % 10 = 0 THEN 1 END, 0,
    '["en:france"]'::jsonb, '[]'::jsonb, {_LANG.format(j="i - 1")}, false, 'off', 0, false,
    'lexicon-cpu', '0', '[]'::jsonb, ARRAY[{_LANG.format(j="i - 1")}]::varchar(255)[], false
FROM generate_series(1, {STORED_INSIGHTS}) AS i
""",
    """
INSERT INTO product_insight (id, barcode, type, data, "timestamp", n_votes, value_tag,
    automatic_processing, server_type, unique_scans_n, reserved_barcode, campaign, lc)
SELECT gen_random_uuid(), '1' || lpad(i::text, 12, '0'), 'category', '{}'::jsonb,
    timestamp '2026-01-01', 0, 'en:snacks', i % 3 = 0, 'off', 0, false, '[]'::jsonb,
    ARRAY['en']::varchar(255)[]
FROM generate_series(1, 50000) AS i
""",
]


def job_code(j: int) -> str:
    return f"1{j + 1:012d}" if j < REPLACED + KEPT else f"2{j:012d}"


def write_job(staging: Staging) -> list[str]:
    """The job's output (two task files) and products.parquet; returns its barcodes."""
    codes = [job_code(j) for j in range(JOB_ROWS)]
    langs = [LANGS[j % 5] for j in range(JOB_ROWS)]
    texts = [f"sucre, farinne {j}" for j in range(JOB_ROWS)]
    directory = job_dir(staging, JOB)
    (directory / "output").mkdir(parents=True)
    facts = pa.table(
        {
            "code": codes,
            "lang": langs,
            "ingredients_text_lang": texts,
            "countries": ['["en:france"]'] * JOB_ROWS,
            "brands": ["[]"] * JOB_ROWS,
            "unique_scans_n": [j % 50 for j in range(JOB_ROWS)],
        },
        schema=FACTS_SCHEMA,
    )
    pq.write_table(facts, directory / "products.parquet")
    half = JOB_ROWS // 2
    for task, rows in enumerate((range(half), range(half, JOB_ROWS))):
        table = pa.table(
            {
                "code": pa.array([codes[j] for j in rows], pa.string()),
                "lang": pa.array([langs[j] for j in rows], pa.string()),
                "text": pa.array([texts[j] for j in rows], pa.string()),
                "correction": pa.array([f"sucre, farine {j}" for j in rows], pa.string()),
                "engine": pa.array(["lexicon-cpu"] * len(rows), pa.string()),
                "engine_version": pa.array(["1"] * len(rows), pa.string()),
                "task_index": pa.array([task] * len(rows), pa.int32()),
            }
        )
        pq.write_table(table, directory / "output" / f"part-{task:05d}.parquet")
    return codes


@pytest.fixture(scope="module")
def server() -> Iterator[tuple[str, Path]]:
    """A private embedded server: its log holds only this module's plans."""
    base = private_tmp_dir("robotoff-batch-scale-pg-")
    data_dir = base / "data"
    try:
        yield ensure_embedded_postgres(data_dir), data_dir / LOG_FILE_NAME
    finally:
        stop_embedded_postgres(data_dir)
        shutil.rmtree(base, ignore_errors=True)


def fresh_database(conninfo: str, name: str) -> str:
    admin = with_database(conninfo, "postgres")
    with psycopg.connect(admin, autocommit=True) as conn:
        conn.execute(
            sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(sql.Identifier(name))
        )
        conn.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(name)))
        conn.execute(
            sql.SQL("ALTER DATABASE {} SET statement_timeout = {}").format(
                sql.Identifier(name), sql.Literal(STATEMENT_TIMEOUT)
            )
        )
    return with_database(conninfo, name)


def log_plans(url: str) -> None:
    """auto_explain for every later connection to this database: each statement's plan
    (no ANALYZE: plans only, as chosen), JSON, in the server log."""
    name = psycopg.conninfo.conninfo_to_dict(url)["dbname"]
    with psycopg.connect(url, autocommit=True) as conn:
        for setting, value in (
            ("session_preload_libraries", "auto_explain"),
            ("auto_explain.log_min_duration", "0"),
            ("auto_explain.log_format", "json"),
            ("auto_explain.log_nested_statements", "on"),
        ):
            conn.execute(
                sql.SQL("ALTER DATABASE {} SET {} = {}").format(
                    sql.Identifier(str(name)), sql.Identifier(setting), sql.Literal(value)
                )
            )


_PLAN_START = re.compile(r"LOG:\s+duration: [0-9.]+ ms\s+plan:\s*$")


def logged_plans(log: Path, offset: int) -> list[dict[str, Any]]:
    """The JSON plans auto_explain wrote to the server log after byte ``offset``."""
    with open(log, encoding="utf-8", errors="replace") as f:
        f.seek(offset)
        lines = f.read().splitlines()
    plans: list[dict[str, Any]] = []
    i = 0
    while i < len(lines):
        if _PLAN_START.search(lines[i]):
            body = []
            i += 1
            while i < len(lines) and (lines[i].startswith("\t") or not lines[i].strip()):
                body.append(lines[i])
                i += 1
            plans.append(json.loads("\n".join(body)))
        else:
            i += 1
    return plans


def _relations(node: dict[str, Any]) -> Iterator[dict[str, Any]]:
    yield node
    for child in node.get("Plans", []):
        yield from _relations(child)


def plan_faults(plan: dict[str, Any]) -> list[str]:
    """What in one statement's plan reads Robotoff's tables other than by the job's keys."""
    faults = []
    for node in _relations(plan["Plan"]):
        table = node.get("Relation Name")
        kind = node["Node Type"]
        if table in TABLES and kind == "Seq Scan":
            faults.append(f"Seq Scan on {table}")
        if (
            table in TABLES
            and kind in ("Index Scan", "Index Only Scan")
            and ("Index Cond" not in node)
        ):
            faults.append(f"full {kind} on {table} ({node.get('Index Name')})")
        if kind == "Nested Loop":
            inner = node["Plans"][1]
            for below in _relations(inner):
                if below.get("Relation Name") in TABLES and (
                    below["Node Type"] not in ("Index Scan", "Index Only Scan", "Bitmap Heap Scan")
                    or not any("Index Cond" in n or "Recheck Cond" in n for n in _relations(below))
                ):
                    faults.append(
                        f"Nested Loop over {below['Node Type']} on {below['Relation Name']}"
                    )
    return faults


def import_job(staging: Staging, url: str) -> Any:
    store = PredictionStore(conninfo=url)
    store.ensure_schema()
    return output.import_job_output(
        engine=SucceededEngine(tasks=2),  # type: ignore[arg-type]
        staging=staging,
        store=store,
        job_type=JOB_TYPE,
        job_id=JOB,
    )


_PREDICTION = (
    "barcode, type, data, value_tag, value, source_image, automatic_processing, predictor, "
    "predictor_version, confidence, server_type"
)
_INSIGHT = (
    "barcode, type, data, completed_at, annotation, annotated_result, n_votes, username, "
    "countries, brands, process_after, value_tag, value, source_image, automatic_processing, "
    "server_type, unique_scans_n, reserved_barcode, predictor, predictor_version, campaign, "
    "confidence, bounding_box, lc, with_image"
)


def rows_of(url: str, table: str, columns: str, codes: list[str]) -> Counter[str]:
    """The spellcheck rows of ``table`` for these barcodes, as a multiset of JSON texts (ids,
    timestamps left out: they are each import's own)."""
    with psycopg.connect(url) as conn:
        rows = conn.execute(
            f"SELECT row_to_json(t)::text FROM (SELECT {columns} FROM {table} "
            "WHERE barcode = ANY(%s) AND type = 'ingredient_spellcheck') AS t",
            (codes,),
        ).fetchall()
    return Counter(r[0] for r in rows)


def count(url: str, query: str, *params: Any) -> int:
    with psycopg.connect(url) as conn:
        row = conn.execute(query, params).fetchone()
    return int(row[0]) if row else 0


def test_import_into_robotoff_sized_tables_is_planned_by_the_jobs_barcodes(
    server: tuple[str, Path], tmp_path: Path
) -> None:
    conninfo, log = server
    staging = staging_from_uri((tmp_path / "staging").as_uri())
    codes = write_job(staging)

    prefilled = fresh_database(conninfo, "scale_prefilled")
    PredictionStore(conninfo=prefilled).ensure_schema()
    with psycopg.connect(prefilled, autocommit=True) as conn:
        for statement in FILL_SQL:
            conn.execute(statement)
        conn.execute("VACUUM ANALYZE prediction")
        conn.execute("VACUUM ANALYZE product_insight")
    assert count(prefilled, "SELECT count(*) FROM prediction") == STORED_PREDICTIONS
    # rows of other products, or of another type
    outside = (
        "SELECT count(*) FROM {} WHERE NOT (barcode = ANY(%s) AND type = 'ingredient_spellcheck')"
    )
    untouched = {t: count(prefilled, outside.format(t), codes) for t in TABLES}
    annotated = [
        job_code(j)
        for j in range(REPLACED + KEPT)
        if (j + 1) % 10 == 0 and j + 1 <= STORED_INSIGHTS
    ]

    log_plans(prefilled)
    offset = log.stat().st_size
    outcome = import_job(staging, prefilled)
    plans = logged_plans(log, offset)

    # every statement the import ran was logged, and none reads Robotoff's tables in full
    texts = [p["Query Text"] for p in plans]
    for needle in (
        "DELETE FROM prediction",
        "INSERT INTO prediction",
        "INSERT INTO product_insight",
    ):
        assert any(needle in t for t in texts), (needle, texts)
    faults = [
        f"{fault} in: {' '.join(p['Query Text'].split())[:200]}"
        for p in plans
        for fault in plan_faults(p)
    ]
    assert not faults, "\n".join(faults)

    # the rule's outcome on the pre-filled tables
    assert outcome.source_rows == JOB_ROWS
    assert outcome.predictions == JOB_ROWS - KEPT
    assert outcome.predictions_replaced == REPLACED
    assert outcome.insights["kept"] == len(annotated)
    assert outcome.insights["updated"] == REPLACED + KEPT - len(annotated)
    assert outcome.insights["created"] == JOB_ROWS - REPLACED - KEPT
    # the ids the job got follow its output order (the kept rows left out), with no sort
    with psycopg.connect(prefilled) as conn:
        inserted = [
            r[0]
            for r in conn.execute(
                "SELECT p.barcode FROM batch_job_prediction l JOIN prediction p "
                "ON p.id BETWEEN l.first_id AND l.last_id WHERE l.batch_job_id = %s ORDER BY p.id",
                (JOB,),
            )
        ]
    assert inserted == codes[:REPLACED] + codes[REPLACED + KEPT :]
    # the other products' rows untouched
    assert {t: count(prefilled, outside.format(t), codes) for t in TABLES} == untouched

    # the same rows as the same import into empty tables
    # and its plans too: Robotoff's tables never analysed, this import's rows in them
    empty = fresh_database(conninfo, "scale_empty")
    PredictionStore(conninfo=empty).ensure_schema()
    log_plans(empty)
    offset = log.stat().st_size
    import_job(staging, empty)
    faults = [fault for p in logged_plans(log, offset) for fault in plan_faults(p)]
    assert not faults, "\n".join(faults)
    # the new insights' ids (random uuid4s) ascend with their barcodes, so that inserting them
    # sweeps the primary-key index once (arrow_copy.AscendingUuids)
    with psycopg.connect(empty) as conn:
        by_barcode, by_id, versions = conn.execute(
            "SELECT array_agg(id ORDER BY barcode), array_agg(id ORDER BY id), "
            "array_agg(DISTINCT substr(id::text, 15, 1)) FROM product_insight"
        ).fetchone()
    assert len(by_barcode) == JOB_ROWS
    assert by_barcode == by_id and versions == ["4"]
    assert rows_of(prefilled, "prediction", _PREDICTION, codes) == rows_of(
        empty, "prediction", _PREDICTION, codes
    )
    free = sorted(set(codes) - set(annotated))
    assert rows_of(prefilled, "product_insight", _INSIGHT, free) == rows_of(
        empty, "product_insight", _INSIGHT, free
    )
    assert count(
        prefilled,
        "SELECT count(*) FROM product_insight WHERE barcode = ANY(%s) AND annotation = 1 "
        "AND type = 'ingredient_spellcheck'",
        annotated,
    ) == len(annotated)
