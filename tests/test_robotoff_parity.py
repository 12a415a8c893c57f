"""Issue 17: every insight Robotoff would write, and none it would not.

Each case is one where our import and Robotoff's own importer (release 1.85.10:
robotoff/batch/__init__.py::import_batch_predictions, robotoff/insights/importer.py::
import_product_predictions and IngredientSpellcheckImporter) used to differ. Real parts:
file:// staging, real Parquet (the shipped OFF sample where the dump matters), DuckDB, the real
import against embedded PostgreSQL with Robotoff's schema, Robotoff's endpoint reproduced for
the hand-over (tests/test_robotoff_api.py).
"""

from __future__ import annotations

import uuid
from datetime import datetime
from pathlib import Path
from typing import Any

import duckdb
import pyarrow as pa
import pyarrow.parquet as pq
from psycopg.types.json import Jsonb

from robotoff_batch.job_types.ingredients_spellcheck.imports import extract_facts
from robotoff_batch.paths import SAMPLE_DATA_DIR
from robotoff_batch.predictions.store import PredictionStore
from robotoff_batch.staging import Staging
from tests.test_robotoff_api import api_store, bucket, robotoff  # noqa: F401 - fixtures
from tests.test_robotoff_api import run as run_handover
from tests.test_spellcheck_import import (
    JOB_A,
    JOB_B,
    OUTPUT,
    PRODUCTS,
    add_insight,
    fetch,
    insights,
    job_dir,
    output_table,
    run_import,
    staging,  # noqa: F401 - fixture
    store,  # noqa: F401 - fixture
    write_job,
)

SAMPLE = str(SAMPLE_DATA_DIR / "food_sample_2026.parquet")
MARK = '<span class="allergen">'


# -- 1. allergen-marked texts ---------------------------------------------------------------------


def sample_products_with_allergens() -> dict[str, tuple[str, str, str]]:
    """Two products of the shipped sample: one whose allergen-marked entry of its language
    comes first, one whose marked entry comes second; code -> (order, lang, plain text)."""
    rows = duckdb.execute(
        "SELECT code, lang, list_filter(ingredients_text, lambda x: x.lang = lang) "
        "FROM read_parquet(?) ORDER BY code",
        [SAMPLE],
    ).fetchall()
    found: dict[str, tuple[str, str, str]] = {}
    for code, lang, entries in rows:
        if len(entries) != 2:
            continue
        first, second = entries[0]["text"], entries[1]["text"]
        for order, marked, plain in (("first", first, second), ("second", second, first)):
            if MARK in marked and MARK not in plain and order not in {v[0] for v in found.values()}:
                found[code] = (order, lang, plain)
    assert {v[0] for v in found.values()} == {"first", "second"}
    return found


def test_plain_text_not_the_allergen_marked_one_is_compared(
    staging: Staging,  # noqa: F811
    store: PredictionStore,  # noqa: F811
    pg_db: str,
    tmp_path: Path,
) -> None:
    """The facts carry the plain text of the product's language whichever entry comes first
    in the dump, so a correction of the plain text gets its insight in both orders."""
    products = sample_products_with_allergens()
    directory = job_dir(staging, JOB_A)
    directory.mkdir(parents=True)
    input_path = tmp_path / "input.parquet"
    pq.write_table(pa.table({"code": pa.array(sorted(products), pa.string())}), input_path)
    extract_facts(
        dump_path=SAMPLE, input_path=input_path, output_path=directory / "products.parquet"
    )
    facts = {r["code"]: r for r in pq.read_table(directory / "products.parquet").to_pylist()}
    for code, (_, _, plain) in products.items():
        assert facts[code]["ingredients_text_lang"] == plain
    rows = [(code, lang, text, text + " (corrigé)") for code, (_, lang, text) in products.items()]
    (directory / "output").mkdir()
    pq.write_table(output_table(rows), directory / "output" / "part-00000.parquet")

    outcome = run_import(staging, store, JOB_A)

    assert outcome.insights["created"] == 2
    got = insights(pg_db)
    for code, (_, lang, plain) in products.items():
        assert got[(code, lang)]["data"]["original"] == plain


# -- 2. a newer version that no longer corrects a text --------------------------------------------


def test_unchanged_row_of_a_newer_version_replaces_the_older_prediction_and_its_insight(
    staging: Staging,  # noqa: F811
    store: PredictionStore,  # noqa: F811
    pg_db: str,
) -> None:
    """v2 corrected a product, v3 leaves its text as is: v3's verdict replaces v2's
    prediction (Robotoff's replace rule runs for every row) and the stale insight is removed;
    the no-op prediction itself is not stored (docs/CONTRACTS.md)."""
    write_job(staging, JOB_A, version="2")
    first = run_import(staging, store, JOB_A)
    code, lang, text, _ = OUTPUT[0]
    assert (code, lang) in insights(pg_db)
    assert first.insights["created"] == 4

    v3 = [(c, lg, t, t if c == code else corr) for c, lg, t, corr in OUTPUT]
    write_job(staging, JOB_B, [output_table(v3, "3")])
    second = run_import(staging, store, JOB_B)

    stored = fetch(pg_db, f"SELECT * FROM prediction WHERE barcode = '{code}'")
    assert stored == []  # v2's prediction replaced; v3's no-op not stored
    assert (code, lang) not in insights(pg_db)
    assert second.insights["deleted"] == 1
    assert second.predictions_replaced == 6  # the 5 changed rows and the unchanged one
    assert {r["predictor_version"] for r in fetch(pg_db, "SELECT * FROM prediction")} == {"3"}
    # the product unchanged in both versions had nothing to replace and still has nothing
    assert second.candidates == 5 and second.skipped_rows == 2


# -- 5. an insight updated in place keeps what Robotoff's update leaves alone ----------------------


def test_update_in_place_touches_only_the_columns_robotoff_updates(
    staging: Staging,  # noqa: F811
    store: PredictionStore,  # noqa: F811
    pg_db: str,
) -> None:
    """An insight voted on (username, completed_at, annotated_result, bounding_box set;
    annotation still NULL) is updated in place by the new candidate: Robotoff's update
    (importer.py:263-277) writes only the candidate's fields, so those keep their values."""
    code, lang = PRODUCTS[5].code, PRODUCTS[5].lang
    completed = datetime(2026, 3, 1, 12, 0)
    later = datetime(2026, 3, 2, 12, 0)
    voted = add_insight(
        pg_db,
        code,
        lang,
        username="alice",
        completed_at=completed,
        annotated_result=1,
        bounding_box=Jsonb([0.1, 0.2, 0.3, 0.4]),
        process_after=later,
        n_votes=2,
    )
    write_job(staging, JOB_A)
    outcome = run_import(staging, store, JOB_A)
    assert outcome.insights["updated"] == 1
    row = insights(pg_db)[(code, lang)]
    assert row["id"] == uuid.UUID(voted)
    assert (row["username"], row["completed_at"], row["annotated_result"]) == (
        "alice",
        completed,
        1,
    )
    assert row["bounding_box"] == [0.1, 0.2, 0.3, 0.4]
    assert row["process_after"] == later  # not automatic: Robotoff does not set it
    assert row["n_votes"] == 0 and row["data"]["correction"] == OUTPUT[5][3]  # the candidate's
    assert row["timestamp"] > datetime(2026, 6, 1)


# -- 8. the hand-over loses nothing --------------------------------------------------------------


def test_hand_over_keeps_every_row_and_every_string_as_written(
    staging: Staging,  # noqa: F811
    bucket: Path,  # noqa: F811
    pg_db: str,
    robotoff: tuple[str, list[dict[str, str]]],  # noqa: F811
) -> None:
    """postprocessed_data.parquet is written from Arrow: a correction "N/A", "null", "NaN",
    "" or "NULL" reaches Robotoff as that string, and every row goes (unchanged included)."""
    url, received = robotoff
    odd = ["N/A", "null", "NaN", "", "NULL", "\\N", " "]
    rows: list[tuple[Any, ...]] = [
        (p.code, p.lang, p.text, odd[i]) for i, p in enumerate(PRODUCTS[: len(odd)])
    ]
    write_job(staging, JOB_A, [output_table(rows)])
    outcome = run_handover(staging, api_store(pg_db, url, bucket))
    handed = pq.read_table(bucket / received[0]["batch_dir"] / "postprocessed_data.parquet")
    assert handed.column_names == ["code", "text", "lang", "correction"]
    assert handed.schema.field("correction").type == pa.string()
    assert handed.column("correction").to_pylist() == odd
    assert handed.column("code").to_pylist() == [r[0] for r in rows]
    assert outcome.predictions == len(rows)
