"""Issue 17: every insight Robotoff would write, and none it would not.

Each case is one where our import and Robotoff's own importer (release 1.85.10:
robotoff/batch/__init__.py::import_batch_predictions, robotoff/insights/importer.py::
import_product_predictions and IngredientSpellcheckImporter) used to differ. Real parts:
file:// staging, real Parquet (the shipped OFF sample where the dump matters), DuckDB, the real
import against embedded PostgreSQL with Robotoff's schema, Robotoff's endpoint reproduced for
the hand-over (tests/test_robotoff_api.py).
"""

from __future__ import annotations

import os
import re
import shutil
import time
import uuid
from datetime import datetime
from pathlib import Path
from typing import Any

import duckdb
import psycopg
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq
import pytest
from psycopg.types.json import Jsonb
from typer.testing import CliRunner

from robotoff_batch.cli import app, operations
from robotoff_batch.job_types.ingredients_spellcheck import JOB_TYPE
from robotoff_batch.job_types.ingredients_spellcheck.imports import extract_facts
from robotoff_batch.paths import SAMPLE_DATA_DIR
from robotoff_batch.predictions.model import PredictionImportError
from robotoff_batch.predictions.output import import_job_output
from robotoff_batch.predictions.store import PredictionStore
from robotoff_batch.staging import Staging
from tests.test_cli import cli_env  # noqa: F401 - fixture
from tests.test_robotoff_api import api_store, bucket, robotoff  # noqa: F401 - fixtures
from tests.test_robotoff_api import run as run_handover
from tests.test_spellcheck_import import (
    JOB_A,
    JOB_B,
    OUTPUT,
    PRODUCTS,
    Product,
    SucceededEngine,
    add_insight,
    fetch,
    insights,
    job_dir,
    nothing_written,
    output_table,
    run_import,
    staging,  # noqa: F401 - fixture
    store,  # noqa: F401 - fixture
    write_facts,
    write_job,
)

cli_runner = CliRunner()
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
    (importer.py:264-281) writes only the candidate's fields, so those keep their values."""
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


# -- 6. bad rows quarantined, not the job refused ------------------------------------------------


def big_job(area: Staging, job_id: str, n: int = 10_000) -> list[tuple[Any, ...]]:
    """An output of ``n`` products, every text corrected, and their facts."""
    products = [
        Product(f"40{i:011d}", "fr", f"sucre {i}, farinne", ["en:france"], [], 1) for i in range(n)
    ]
    write_facts(area, job_id, products)
    return [(p.code, p.lang, p.text, p.text.replace("farinne", "farine")) for p in products]


def write_parts(area: Staging, job_id: str, parts: list[list[tuple[Any, ...]]]) -> None:
    out = job_dir(area, job_id) / "output"
    out.mkdir(parents=True, exist_ok=True)
    for i, rows in enumerate(parts):
        pq.write_table(output_table(rows), out / f"part-{i:05d}.parquet")


def test_a_bad_row_is_quarantined_and_listed_the_rest_imported(
    staging: Staging,  # noqa: F811
    store: PredictionStore,  # noqa: F811
    pg_db: str,
) -> None:
    """10,000 rows, one with a NUL byte in its text, one product's row repeated identically:
    9,999 predictions, the NUL row held back with its file and row, the repeat imported once;
    a re-import changes nothing and does not re-consider the held-back row."""
    rows = big_job(staging, JOB_A)
    nul = 7_000
    code, lang, text, correction = rows[nul]
    rows[nul] = (code, lang, text + "\x00", correction)
    write_parts(staging, JOB_A, [rows[:5_000], [*rows[5_000:], rows[42]]])

    outcome = run_import(staging, store, JOB_A, tasks=2)

    assert (outcome.predictions, outcome.rows_quarantined, outcome.rows_collapsed) == (9_999, 1, 1)
    assert outcome.insights["created"] == 9_999
    assert outcome.source_rows == 10_001
    held = store.quarantined_rows(JOB_A)
    assert [(Path(h["file"]).name, h["row"], h["code"]) for h in held] == [
        ("part-00001.parquet", nul - 5_000, code)
    ]
    assert "NUL byte" in held[0]["reason"] and "'text'" in held[0]["reason"]
    assert fetch(pg_db, f"SELECT count(*) AS n FROM prediction WHERE barcode = '{code}'")[0] == {
        "n": 0
    }
    again = run_import(staging, store, JOB_A, tasks=2)
    assert again.already_imported and again.rows_quarantined == 1
    assert fetch(pg_db, "SELECT count(*) AS n FROM prediction")[0] == {"n": 9_999}
    # asked to retry, the row still holds its NUL byte: held back again, nothing else read
    retried = import_job_output(
        engine=SucceededEngine(2),  # type: ignore[arg-type]
        staging=staging,
        store=store,
        job_type=JOB_TYPE,
        job_id=JOB_A,
        retry_quarantined=True,
    )
    assert (retried.predictions, retried.rows_quarantined) == (9_999, 1)
    assert (retried.source_rows, retried.skipped_rows) == (10_001, 0)
    assert [h["row"] for h in store.quarantined_rows(JOB_A)] == [nul - 5_000]


def test_conflicting_rows_are_held_back_then_retried_on_request(
    staging: Staging,  # noqa: F811
    store: PredictionStore,  # noqa: F811
    pg_db: str,
) -> None:
    """A product with two different rows: both held back (Robotoff would keep one at random),
    the rest imported. Once the file is fixed, a plain re-import still changes nothing;
    ``retry_quarantined`` (``import JOB --retry-quarantined``) imports them, and only them."""
    rows = big_job(staging, JOB_A, n=300)
    code, lang, text, _ = rows[10]
    write_parts(staging, JOB_A, [rows, [(code, lang, text, "sucre 10, farine de blé")]])
    first = run_import(staging, store, JOB_A, tasks=2)
    assert (first.predictions, first.rows_quarantined) == (299, 2)
    assert {(Path(h["file"]).name, h["row"]) for h in store.quarantined_rows(JOB_A)} == {
        ("part-00000.parquet", 10),
        ("part-00001.parquet", 0),
    }
    # the operator removes the wrong row (the second file now repeats the first one's row)
    write_parts(staging, JOB_A, [rows, [rows[10]]])
    assert run_import(staging, store, JOB_A, tasks=2).already_imported
    retried = import_job_output(
        engine=SucceededEngine(2),  # type: ignore[arg-type]
        staging=staging,
        store=store,
        job_type=JOB_TYPE,
        job_id=JOB_A,
        retry_quarantined=True,
    )
    assert not retried.already_imported
    assert (retried.predictions, retried.rows_quarantined, retried.rows_collapsed) == (300, 0, 1)
    assert store.quarantined_rows(JOB_A) == []
    assert fetch(pg_db, f"SELECT count(*) AS n FROM prediction WHERE barcode = '{code}'")[0] == {
        "n": 1
    }
    assert store.count_predictions(batch_job_id=JOB_A) == 300


def test_more_bad_rows_than_the_fraction_refuses_the_whole_output(
    staging: Staging,  # noqa: F811
    store: PredictionStore,  # noqa: F811
    pg_db: str,
) -> None:
    rows = big_job(staging, JOB_A, n=1_000)
    for i in range(0, 11):  # 11 of 1,000 rows: over 1 %
        rows[i * 90] = (rows[i * 90][0], "fr", "x\x00", "y")
    write_parts(staging, JOB_A, [rows])
    with pytest.raises(PredictionImportError, match=r"11 of 1000 rows .* bad, more than"):
        run_import(staging, store, JOB_A)
    assert nothing_written(pg_db)
    assert store.quarantined_rows(JOB_A) == []
    outcome = import_job_output(
        engine=SucceededEngine(),  # type: ignore[arg-type]
        staging=staging,
        store=store,
        job_type=JOB_TYPE,
        job_id=JOB_A,
        max_bad_row_fraction=0.02,
    )
    assert (outcome.predictions, outcome.rows_quarantined) == (989, 11)


# -- 4. facts as of the import, not the launch ---------------------------------------------------


def _dump(rows: list[dict[str, Any]], schema: pa.Schema, path: Path, mtime: float) -> str:
    pq.write_table(pa.Table.from_pylist(rows, schema=schema), path)
    os.utime(path, (mtime, mtime))
    return str(path)


def _edit_text(row: dict[str, Any], text: str) -> dict[str, Any]:
    entries = [
        {"lang": e["lang"], "text": text if e["lang"] in ("main", row["lang"]) else e["text"]}
        for e in row["ingredients_text"]
    ]
    return {**row, "ingredients_text": entries}


def test_facts_are_read_at_import_from_the_newest_dump(
    staging: Staging,  # noqa: F811
    store: PredictionStore,  # noqa: F811
    pg_db: str,
    tmp_path: Path,
) -> None:
    """Between launch and import a contributor edited one product's text, changed another's
    main language and deleted a third: with the newer dump (ROBOTOFF_BATCH_DUMP_PATH), none
    of them gets an insight, the deleted one no prediction either (counted), the untouched one
    does; the metadata says which facts were used. With a dump older than the launch's, the
    launch-time facts are used."""
    sample = pq.read_table(SAMPLE)
    rows = [
        r
        for r in sample.to_pylist()
        if r["lang"] == "en"
        and any(e["lang"] == "en" and MARK not in e["text"] for e in r["ingredients_text"])
    ][:4]
    rows = [_edit_text(r, f"sugar, wheat flour, sallt {i}") for i, r in enumerate(rows)]
    edited, relang, deleted, untouched = (r["code"] for r in rows)
    launch_dump = _dump(rows, sample.schema, tmp_path / "launch.parquet", 1_780_000_000)
    directory = job_dir(staging, JOB_A)
    directory.mkdir(parents=True)
    input_path = tmp_path / "input.parquet"
    pq.write_table(pa.table({"code": pa.array([r["code"] for r in rows])}), input_path)
    extract_facts(
        dump_path=launch_dump, input_path=input_path, output_path=directory / "products.parquet"
    )
    output = [
        (r["code"], "en", f"sugar, wheat flour, sallt {i}", f"sugar, wheat flour, salt {i}")
        for i, r in enumerate(rows)
    ]
    (directory / "output").mkdir()
    pq.write_table(output_table(output), directory / "output" / "part-00000.parquet")

    later = [
        _edit_text(rows[0], "sugar, wheat flour, salt (edited)"),
        {**rows[1], "lang": "fr"},
        rows[3],
    ]
    newest = _dump(later, sample.schema, tmp_path / "newest.parquet", 1_790_000_000)
    outcome = import_job_output(
        engine=SucceededEngine(),  # type: ignore[arg-type]
        staging=staging,
        store=store,
        job_type=JOB_TYPE,
        job_id=JOB_A,
        dump_path=newest,
    )
    assert newest in outcome.facts_source and "read at import" in outcome.facts_source
    assert outcome.products_deleted == 1
    assert {k[0] for k in insights(pg_db)} == {untouched}
    stored = {r["barcode"] for r in fetch(pg_db, "SELECT barcode FROM prediction")}
    assert stored == {edited, relang, untouched}
    assert deleted not in stored

    # a dump older than the launch's: the launch-time facts (every product gets its insight)
    older = _dump(later, sample.schema, tmp_path / "older.parquet", 1_770_000_000)
    out_b = job_dir(staging, JOB_B)
    shutil.copytree(directory, out_b)
    with psycopg.connect(pg_db) as conn:
        conn.execute("DELETE FROM prediction")
        conn.execute("DELETE FROM product_insight")
    second = import_job_output(
        engine=SucceededEngine(),  # type: ignore[arg-type]
        staging=staging,
        store=store,
        job_type=JOB_TYPE,
        job_id=JOB_B,
        dump_path=older,
    )
    assert (
        second.facts_source.startswith("launch-time facts") and "not newer" in second.facts_source
    )
    assert second.products_deleted == 0
    assert {k[0] for k in insights(pg_db)} == {edited, relang, deleted, untouched}


# -- 6. through the CLI: `status JOB` lists the held-back rows, `import --retry-quarantined` -----


def test_status_lists_held_back_rows_and_import_retries_them(cli_env: Path) -> None:  # noqa: F811
    """A launched job whose staged facts lost one product (its row held back: not a product of
    the job's input): `import JOB` imports the rest and says so, `status JOB` lists the row
    with its file, a plain re-import changes nothing, and once the facts are restored
    `import JOB --retry-quarantined` imports it."""
    launched = cli_runner.invoke(app, ["launch", "ingredients-spellcheck", "limit=200"])
    assert launched.exit_code == 0, launched.output
    job_id = re.search(r"launched batch job (\S+) \(200 products\)", launched.output).group(1)
    ws = operations.Workspace.from_env()
    engine = ws.engine
    deadline = time.monotonic() + 300
    while engine.get_job(job_id=job_id).state.value != "SUCCEEDED":
        assert time.monotonic() < deadline, engine.get_job(job_id=job_id)
        time.sleep(0.5)
    facts_path = (
        Path(
            ws.resource("staging")
            .get_staging()
            .job_uri(job_type="ingredients-spellcheck", job_id=job_id)
            .removeprefix("file://")
        )
        / "products.parquet"
    )
    facts = pq.read_table(facts_path)
    dropped = facts.column("code")[3].as_py()
    pq.write_table(facts.filter(pc.not_equal(facts.column("code"), dropped)), facts_path)

    first = cli_runner.invoke(app, ["import", job_id])
    assert first.exit_code == 0, first.output
    assert "1 row(s) held back (quarantined)" in first.output
    status = cli_runner.invoke(app, ["status", job_id])
    assert status.exit_code == 0, status.output
    assert "1 row(s) held back" in status.output and dropped in status.output
    assert "part-00000.parquet" in status.output or "chunk-" in status.output
    assert "not a product of the job's input" in status.output
    assert f"robotoff-batch import {job_id} --retry-quarantined" in status.output
    again = cli_runner.invoke(app, ["import", job_id])
    assert "already imported: nothing changed" in again.output
    assert "1 row(s) held back" in again.output

    pq.write_table(facts, facts_path)  # restored
    retried = cli_runner.invoke(app, ["import", job_id, "--retry-quarantined"])
    assert retried.exit_code == 0, retried.output
    assert "held back" not in retried.output
    record = operations.import_record(ws, job_id=job_id)
    assert record.rows_quarantined == 0 and operations.quarantined(ws, job_id=job_id) == []
    assert "0 row(s) held back" in cli_runner.invoke(app, ["status", job_id]).output
