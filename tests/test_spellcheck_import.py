"""ingredients-spellcheck output → Robotoff's prediction and product_insight rows.

Real parts: file:// staging with Parquet task files and the job's products.parquet, the real
import (output.import_job_output → PredictionStore.import_output) against embedded
PostgreSQL. Only the batch engine's answer ("SUCCEEDED, N tasks") is a stand-in.

The expected insights come from ``robotoff_insights``, a direct transcription of Robotoff's
IngredientSpellcheckImporter + InsightImporter rules (shared/reference/robotoff_import.md
§2.4-2.5) applied in Python to the same products and stored predictions; the rows the SQL
import writes must equal them field by field.
"""

from __future__ import annotations

import json
import shutil
import uuid
from dataclasses import dataclass, replace
from datetime import datetime
from pathlib import Path
from typing import Any

import duckdb
import psycopg
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from psycopg.rows import dict_row
from psycopg.types.json import Jsonb

from robotoff_batch.batch.engine import JobState, JobStatus, TaskStatus
from robotoff_batch.batch.submit import PipelineError
from robotoff_batch.job_types.ingredients_spellcheck import FACTS_SCHEMA, JOB_TYPE
from robotoff_batch.predictions import output
from robotoff_batch.predictions.model import PredictionImportError
from robotoff_batch.predictions.output import OutputError
from robotoff_batch.predictions.store import PredictionStore
from robotoff_batch.staging import Staging, staging_from_uri

JOB_A = "ingredients-spellcheck-20261201t070000-aaaa"
JOB_B = "ingredients-spellcheck-20261201t080000-bbbb"
JOB_C = "ingredients-spellcheck-20261201t090000-cccc"
TYPE = "ingredient_spellcheck"


@dataclass
class Product:
    code: str
    lang: str
    text: str  # the dump's ingredients_text_<lang>
    countries: list[str]
    brands: list[str]
    scans: int | None


# The fixture: one product per situation the rules tell apart.
PRODUCTS = [
    Product("3000000000001", "fr", "sucre, farinne de blé", ["en:france"], ["bonne-maman"], 12),
    Product("3000000000002", "en", "sugar, wheat flour", ["en:uk"], [], 3),  # unchanged
    Product("3000000000003", "en", "sugar, wheat flour, sallt", ["en:uk"], [], 0),  # lang ≠
    Product("3000000000004", "fr", "eau, sel (edited)", ["en:france"], [], 7),  # edited
    Product("3000000000005", "fr", "lait entierr", ["en:france"], ["x"], 40),  # annotated
    Product("3000000000006", "de", "Zuckker, Mehl", ["en:germany"], ["y"], 5),  # to update
    Product("0200000000007", "fr", "beurre doux salé", [], [], None),  # reserved barcode
]
# What the container read (the dump's main text) and wrote, per product.
OUTPUT = [
    # code, lang (product's), text, correction
    ("3000000000001", "fr", "sucre, farinne de blé", "sucre, farine de blé"),
    ("3000000000002", "en", "sugar, wheat flour", "sugar, wheat flour"),
    ("3000000000003", "fr", "sugar, wheat flour, sallt", "sugar, wheat flour, salt"),
    ("3000000000004", "fr", "eau, sell", "eau, sel"),
    ("3000000000005", "fr", "lait entierr", "lait entier"),
    ("3000000000006", "de", "Zuckker, Mehl", "Zucker, Mehl"),
    ("0200000000007", "fr", "beurre doux salé", "beurre doux, salé"),
]


class SucceededEngine:
    """The batch engine's answer for a finished job: SUCCEEDED with ``tasks`` tasks."""

    def __init__(self, tasks: int = 1) -> None:
        self.tasks = tasks
        self.calls = 0

    def get_job(self, *, job_id: str) -> JobStatus:
        self.calls += 1
        return JobStatus(
            job_id=job_id,
            state=JobState.SUCCEEDED,
            tasks=tuple(TaskStatus(index=i, state="SUCCEEDED") for i in range(self.tasks)),
        )


@pytest.fixture
def staging(tmp_path: Path) -> Staging:
    root = tmp_path / "staging"
    root.mkdir()
    return staging_from_uri(root.as_uri())


@pytest.fixture
def store(pg_db: str) -> PredictionStore:
    s = PredictionStore(conninfo=pg_db)
    s.ensure_schema()
    return s


def job_dir(staging: Staging, job_id: str) -> Path:
    return Path(staging.job_uri(job_type=JOB_TYPE.name, job_id=job_id).removeprefix("file://"))


def write_facts(staging: Staging, job_id: str, products: list[Product] = PRODUCTS) -> None:
    table = pa.table(
        {
            "code": [p.code for p in products],
            "lang": [p.lang for p in products],
            "ingredients_text_lang": [p.text for p in products],
            "countries": [json.dumps(p.countries) for p in products],
            "brands": [json.dumps(p.brands) for p in products],
            "unique_scans_n": [p.scans for p in products],
        },
        schema=FACTS_SCHEMA,
    )
    directory = job_dir(staging, job_id)
    directory.mkdir(parents=True, exist_ok=True)
    pq.write_table(table, directory / "products.parquet")


def output_table(rows: list[tuple[Any, ...]], version: str = "1") -> pa.Table:
    return pa.table(
        {
            "code": pa.array([r[0] for r in rows], pa.string()),
            "lang": pa.array([r[1] for r in rows], pa.string()),
            "text": pa.array([r[2] for r in rows], pa.string()),
            "correction": pa.array([r[3] for r in rows], pa.string()),
            "engine": pa.array(["lexicon-cpu"] * len(rows), pa.string()),
            "engine_version": pa.array([version] * len(rows), pa.string()),
            "task_index": pa.array([0] * len(rows), pa.int32()),
        }
    )


def write_job(
    staging: Staging,
    job_id: str,
    parts: list[pa.Table] | None = None,
    *,
    version: str = "1",
) -> Path:
    write_facts(staging, job_id)
    out = job_dir(staging, job_id) / "output"
    out.mkdir(parents=True, exist_ok=True)
    for i, table in enumerate(parts if parts is not None else [output_table(OUTPUT, version)]):
        pq.write_table(table, out / f"part-{i:05d}.parquet")
    return out


def run_import(
    staging: Staging,
    store: PredictionStore,
    job_id: str,
    tasks: int = 1,
    *,
    job_type: Any = JOB_TYPE,
    **options: Any,
) -> Any:
    return output.import_job_output(
        engine=SucceededEngine(tasks),  # type: ignore[arg-type]
        staging=staging,
        store=store,
        job_type=job_type,
        job_id=job_id,
        **options,
    )


def fetch(url: str, query: str) -> list[dict[str, Any]]:
    with psycopg.connect(url) as conn:
        return conn.cursor(row_factory=dict_row).execute(query).fetchall()


def insights(url: str) -> dict[tuple[str, str | None], dict[str, Any]]:
    return {
        (r["barcode"], r["value_tag"]): r
        for r in fetch(url, "SELECT * FROM product_insight ORDER BY barcode")
    }


def add_insight(url: str, barcode: str, lang: str, **fields: Any) -> str:
    row: dict[str, Any] = {
        "id": str(uuid.uuid4()),
        "barcode": barcode,
        "type": TYPE,
        "data": Jsonb({"original": "old", "correction": "older"}),
        "timestamp": datetime(2026, 1, 1),
        "n_votes": 0,
        "value_tag": lang,
        "automatic_processing": False,
        "server_type": "off",
        "unique_scans_n": 0,
        "reserved_barcode": False,
        "lc": [lang],
        **fields,
    }
    columns = ", ".join(f'"{c}"' for c in row)
    marks = ", ".join(f"%({c})s" for c in row)
    with psycopg.connect(url) as conn:
        conn.execute(f"INSERT INTO product_insight ({columns}) VALUES ({marks})", row)
    return str(row["id"])


# -- Robotoff's rules, transcribed ---------------------------------------------------------------


def is_reserved_barcode(barcode: str) -> bool:
    """robotoff/insights/importer.py:145-149."""
    if barcode.startswith("0"):
        barcode = barcode[1:]
    return barcode.startswith("2")


def robotoff_insights(
    products: list[Product],
    predictions: list[dict[str, Any]],
    references: list[dict[str, Any]],
    barcodes: set[str],
) -> dict[tuple[str, str | None], dict[str, Any]]:
    """The insights Robotoff's importer leaves for ``barcodes``, keyed by (barcode, lang):
    created or updated ones as their fields (``id`` kept for an updated one, None for a new
    one), kept ones as they were."""
    by_code = {p.code: p for p in products}
    result: dict[tuple[str, str | None], dict[str, Any]] = {}
    for barcode in sorted(barcodes):
        product = by_code[barcode]
        refs = [r for r in references if r["barcode"] == barcode]
        candidates = [
            p
            for p in predictions
            if p["barcode"] == barcode
            and p["type"] == TYPE
            and p["server_type"] == "off"
            and p["data"]["original"] != p["data"]["correction"]
            and p["data"]["original"] == ({product.lang: product.text}).get(p["value_tag"])
            and p["value_tag"] == product.lang
        ]
        kept = [r for r in refs if r["annotation"] is not None or r["automatic_processing"]]
        candidates = [c for c in candidates if all(c["value_tag"] != r["value_tag"] for r in kept)]
        candidates.sort(
            key=lambda c: (
                c["data"].get("priority", 1),
                -int(bool(c["automatic_processing"])),
                c["predictor"] or "z",
                c["id"],
            )
        )
        selected: list[dict[str, Any]] = []
        for c in candidates:
            if all(c["value_tag"] != s["value_tag"] for s in selected):
                selected.append(c)
        for r in kept:
            result[(barcode, r["value_tag"])] = r
        free = sorted(
            (r for r in refs if r not in kept), key=lambda r: (r["timestamp"], str(r["id"]))
        )
        for c in selected:
            ref = next(
                (
                    r
                    for r in free
                    if r["value_tag"] == c["value_tag"] and r["source_image"] == c["source_image"]
                ),
                None,
            )
            result[(barcode, c["value_tag"])] = {
                "id": ref["id"] if ref else None,
                "barcode": barcode,
                "type": TYPE,
                "data": c["data"],
                "completed_at": None,
                "annotation": None,
                "annotated_result": None,
                "n_votes": 0,
                "username": None,
                "countries": product.countries,
                "brands": product.brands,
                "process_after": None,
                "value_tag": c["value_tag"],
                "value": None,
                "source_image": None,
                "automatic_processing": False,
                "server_type": "off",
                "unique_scans_n": product.scans or 0,
                "reserved_barcode": is_reserved_barcode(barcode),
                "predictor": c["predictor"],
                "predictor_version": c["predictor_version"],
                "campaign": [],
                "confidence": None,
                "bounding_box": None,
                "lc": [c["value_tag"]],
                "with_image": False,
            }
    return result


def assert_insights_follow_robotoff(
    url: str, before: list[dict[str, Any]], outcome: Any, barcodes: set[str]
) -> None:
    predictions = fetch(url, "SELECT * FROM prediction ORDER BY id")
    expected = robotoff_insights(PRODUCTS, predictions, before, barcodes)
    actual = insights(url)
    assert set(actual) == set(expected)
    for key, want in expected.items():
        got = actual[key]
        for column, value in want.items():
            if column == "id" and value is None:
                continue  # a new insight: any fresh id
            assert got[column] == value, (key, column)
        if want.get("annotation") is None and not want.get("automatic_processing"):
            assert got["timestamp"] > datetime(2026, 6, 1)  # set by this import
    before_ids = {r["id"] for r in before}
    created = sum(1 for r in actual.values() if r["id"] not in before_ids)
    updated = sum(
        1
        for key, r in actual.items()
        if r["id"] in before_ids and expected[key].get("n_votes") == 0 and r["annotation"] is None
    )
    kept = sum(1 for r in actual.values() if r["annotation"] is not None)
    deleted = len(before_ids - {r["id"] for r in actual.values()})
    assert dict(outcome.insights) == {
        "created": created,
        "updated": updated,
        "kept": kept,
        "deleted": deleted,
    }


# -- the import, field by field -------------------------------------------------------------------


def test_corrections_with_their_confidence_go_into_data(
    staging: Staging, store: PredictionStore, pg_db: str
) -> None:
    """The CPU engine's corrections (rule, confidence) land in data["corrections"] of the
    prediction and of its insight (Robotoff reads only original and correction:
    robotoff/insights/importer.py:1460-1467); a row without them gets no such key."""
    found = [{"before": "farinne", "after": "farine", "rule": "typo", "confidence": 0.97}]
    table = output_table(OUTPUT)
    column = [json.dumps(found) if r[0] == "3000000000001" else None for r in OUTPUT]
    write_job(staging, JOB_A, [table.append_column("corrections", pa.array(column, pa.string()))])

    run_import(staging, store, JOB_A)

    data = {r["barcode"]: r["data"] for r in fetch(pg_db, "SELECT * FROM prediction")}
    assert data["3000000000001"]["corrections"] == found
    assert data["3000000000001"]["correction"] == "sucre, farine de blé"
    assert all("corrections" not in d for code, d in data.items() if code != "3000000000001")
    insight = insights(pg_db)[("3000000000001", "fr")]
    assert insight["data"]["corrections"] == found


def test_predictions_and_insights_as_robotoff_writes_them(
    staging: Staging, store: PredictionStore, pg_db: str
) -> None:
    annotated = add_insight(pg_db, "3000000000005", "fr", annotation=1, n_votes=2)
    to_update = add_insight(pg_db, "3000000000006", "de", n_votes=3)
    stale = add_insight(pg_db, "3000000000004", "fr")  # its text changed: deleted
    before = fetch(pg_db, "SELECT * FROM product_insight")
    write_job(staging, JOB_A)

    outcome = run_import(staging, store, JOB_A)

    changed = [r for r in OUTPUT if r[2] != r[3]]
    assert (outcome.source_rows, outcome.candidates, outcome.predictions) == (7, 6, 6)
    assert (outcome.skipped_rows, outcome.predictions_kept, outcome.predictions_replaced) == (
        1,
        0,
        0,
    )
    rows = fetch(pg_db, "SELECT * FROM prediction ORDER BY barcode")
    assert [r["barcode"] for r in rows] == sorted(r[0] for r in changed)
    for row, (code, lang, text, correction) in zip(
        rows, sorted(changed), strict=True
    ):  # robotoff/batch/__init__.py:58-73, our engine as the predictor
        assert row["barcode"] == code
        assert row["type"] == TYPE
        assert row["data"] == {
            "original": text,
            "correction": correction,
            "lang": lang,
            "lang_confidence": None,
        }
        assert row["value_tag"] == lang
        assert (row["value"], row["source_image"], row["confidence"]) == (None, None, None)
        assert row["automatic_processing"] is False
        assert (row["predictor"], row["predictor_version"]) == ("lexicon-cpu", "1")
        assert row["server_type"] == "off"
        assert row["timestamp"] == rows[0]["timestamp"]
    assert store.count_predictions(batch_job_id=JOB_A) == 6
    assert store.duplicate_predictions(batch_job_id=JOB_A) == 0

    assert_insights_follow_robotoff(pg_db, before, outcome, {r[0] for r in changed})
    got = insights(pg_db)
    assert got[("3000000000005", "fr")]["id"] == uuid.UUID(annotated)  # annotated: kept as is
    assert got[("3000000000005", "fr")]["n_votes"] == 2
    assert got[("3000000000006", "de")]["id"] == uuid.UUID(to_update)  # updated in place
    assert got[("3000000000006", "de")]["n_votes"] == 0
    assert uuid.UUID(stale) not in {r["id"] for r in got.values()}
    assert ("3000000000003", "fr") not in got  # lang is not the product's
    assert got[("0200000000007", "fr")]["reserved_barcode"] is True
    assert got[("3000000000001", "fr")]["countries"] == ["en:france"]
    assert got[("3000000000001", "fr")]["unique_scans_n"] == 12
    assert dict(outcome.insights) == {"created": 2, "updated": 1, "kept": 1, "deleted": 1}
    # the created insights' ids: uuid4s, as Robotoff's ORM makes them (made by the client)
    created = [r["id"] for r in got.values() if str(r["id"]) not in (annotated, to_update)]
    assert len(created) == 2 and len(set(created)) == 2
    assert all(i.version == 4 and i.variant == uuid.RFC_4122 for i in created)


def test_rerun_same_version_keeps_and_newer_version_replaces(
    staging: Staging, store: PredictionStore, pg_db: str
) -> None:
    write_job(staging, JOB_A)
    first = run_import(staging, store, JOB_A)
    ids_a = {r["id"] for r in fetch(pg_db, "SELECT id FROM prediction")}
    insights_a = insights(pg_db)

    # the same job again: answered from the ledger, storage not read (the files are gone)
    shutil.rmtree(job_dir(staging, JOB_A))
    engine = SucceededEngine()
    again = output.import_job_output(
        engine=engine,  # type: ignore[arg-type]
        staging=staging,
        store=store,
        job_type=JOB_TYPE,
        job_id=JOB_A,
    )
    assert again.already_imported and again.predictions == first.predictions
    assert dict(again.insights) == dict(first.insights)
    assert engine.calls == 0

    # another job, same model version: Robotoff's key is already stored, nothing inserted
    before = fetch(pg_db, "SELECT * FROM product_insight")
    write_job(staging, JOB_B)
    second = run_import(staging, store, JOB_B)
    assert (second.candidates, second.predictions, second.predictions_kept) == (6, 0, 6)
    assert {r["id"] for r in fetch(pg_db, "SELECT id FROM prediction")} == ids_a
    assert store.count_predictions(batch_job_id=JOB_B) == 0
    assert_insights_follow_robotoff(pg_db, before, second, {r[0] for r in OUTPUT if r[2] != r[3]})
    assert {k: v["id"] for k, v in insights(pg_db).items()} == {
        k: v["id"] for k, v in insights_a.items()
    }  # regenerated in place, same ids

    # a newer model version: the older predictions of that predictor are replaced
    before = fetch(pg_db, "SELECT * FROM product_insight")
    write_job(staging, JOB_C, version="2")
    third = run_import(staging, store, JOB_C)
    assert (third.predictions, third.predictions_replaced, third.predictions_kept) == (6, 6, 0)
    versions = {r["predictor_version"] for r in fetch(pg_db, "SELECT * FROM prediction")}
    assert versions == {"2"}
    assert store.count_predictions(batch_job_id=JOB_A) == 0  # its rows were replaced
    assert store.count_predictions(batch_job_id=JOB_C) == 6
    assert_insights_follow_robotoff(pg_db, before, third, {r[0] for r in OUTPUT if r[2] != r[3]})
    assert {v["predictor_version"] for v in insights(pg_db).values()} == {"2"}


# -- bad outputs: refused whole, naming file and row ---------------------------------------------


def nothing_written(url: str) -> bool:
    counts = fetch(
        url,
        "SELECT (SELECT count(*) FROM prediction) AS p, (SELECT count(*) FROM product_insight) "
        "AS i, (SELECT count(*) FROM batch_job_import) AS l, "
        "(SELECT count(*) FROM batch_job_prediction) AS k",
    )[0]
    return counts == {"p": 0, "i": 0, "l": 0, "k": 0}


def _two_parts() -> list[pa.Table]:
    return [output_table(OUTPUT[:4]), output_table(OUTPUT[4:])]


@pytest.mark.parametrize(
    ("case", "error", "message"),
    [
        ("stray file", OutputError, r"that no task wrote, e\.g\. .*/output/part-00000-copy"),
        ("copy in a sub-folder", OutputError, r"that no task wrote, e\.g\. .*/output/old/part"),
        ("missing task file", OutputError, r"1 of 3 task file\(s\) missing, e\.g\. .*part-00002"),
        ("empty output", PredictionImportError, r"has no rows .*part-00000\.parquet"),
        (
            "conflicting rows of a code",
            PredictionImportError,
            r"2 of 6 rows of the output of .* are bad, more than max_bad_row_fraction 0\.01: "
            r".*part-00000\.parquet row 2: conflicting rows for this code \(2 different rows\); "
            r".*part-00001\.parquet row 1: conflicting rows",
        ),
        ("missing column", OutputError, r"part-00001\.parquet: output is missing .*'correction'"),
        ("not parquet", OutputError, r"part-00001\.parquet: not a readable Parquet file"),
        ("integer codes", OutputError, r"part-00000\.parquet: column 'code' is int64, not a str"),
        (
            "null code",
            PredictionImportError,
            r"1 of 7 rows .* bad.*: .*part-00001\.parquet row 2: null or empty 'code'",
        ),
        (
            "code not in the input",
            PredictionImportError,
            r"1 of 7 rows .* bad.*: .*part-00001\.parquet row 0: not a product of the job's input",
        ),
    ],
)
def test_bad_output_is_refused_whole(
    staging: Staging, store: PredictionStore, pg_db: str, case: str, error: type, message: str
) -> None:
    tasks = 2
    parts = _two_parts()
    if case == "empty output":
        parts, tasks = [output_table([])], 1
    elif case == "conflicting rows of a code":
        parts[0] = output_table([*OUTPUT[:2], (*OUTPUT[5][:3], "another correction")])
    elif case == "integer codes":
        parts[0] = parts[0].set_column(0, "code", pa.array([3000000000001 + i for i in range(4)]))
    elif case == "null code":
        parts[1] = parts[1].set_column(0, "code", pa.array([OUTPUT[4][0], OUTPUT[5][0], None]))
    elif case == "code not in the input":
        parts[1] = parts[1].set_column(0, "code", pa.array(["999", OUTPUT[5][0], OUTPUT[6][0]]))
    out = write_job(staging, JOB_A, parts)
    if case == "stray file":
        shutil.copyfile(out / "part-00000.parquet", out / "part-00000-copy.parquet")
    elif case == "copy in a sub-folder":
        (out / "old").mkdir()
        shutil.copyfile(out / "part-00000.parquet", out / "old" / "part-00000.parquet")
    elif case == "missing task file":
        tasks = 3
    elif case == "missing column":
        pq.write_table(parts[1].drop_columns(["correction"]), out / "part-00001.parquet")
    elif case == "not parquet":
        (out / "part-00001.parquet").write_bytes(b"not parquet")
    with pytest.raises(error, match=message):
        run_import(staging, store, JOB_A, tasks=tasks)
    assert nothing_written(pg_db)


def test_temporary_files_of_a_killed_attempt_are_ignored(
    staging: Staging, store: PredictionStore
) -> None:
    out = write_job(staging, JOB_A)
    (out / ".part-00000.parquet.x1y2.tmp").write_bytes(b"half a file")
    assert run_import(staging, store, JOB_A).predictions == 6


def test_extraction_writes_the_facts_the_insights_read(tmp_path: Path) -> None:
    """products.parquet: the selected products' lang, text in that lang, countries, brands."""
    from robotoff_batch.config.loader import load_job_configs
    from robotoff_batch.job_types.ingredients_spellcheck import SpellcheckLaunch, extract
    from robotoff_batch.paths import SAMPLE_DATA_DIR

    config = load_job_configs()["ingredients-spellcheck"].config
    dump = str(SAMPLE_DATA_DIR / "food_sample_2026.parquet")
    result = extract(
        dump_path=dump,
        params=SpellcheckLaunch(limit=30),
        work_dir=tmp_path,
        job_config=config,  # the shipped config: vLLM
    )
    facts = pq.read_table(result.files["products.parquet"])
    assert facts.schema.equals(FACTS_SCHEMA)
    selected = pq.read_table(result.files["input.parquet"]).column("code").to_pylist()
    assert sorted(facts.column("code").to_pylist()) == sorted(selected)
    dump_rows = {
        row[0]: row
        for row in duckdb.execute(
            "SELECT code, lang, ingredients_text, "
            "countries_tags, brands_tags, unique_scans_n FROM read_parquet(?) "
            "WHERE code IN (SELECT unnest(?))",
            [dump, selected],
        ).fetchall()
    }
    marked_first = 0
    for row in facts.to_pylist():
        code, lang, texts, countries, brands, scans = dump_rows[row["code"]]
        # the plain text of the product's language: not the allergen-marked entry
        # (ingredients_text_with_allergens_<lc>), whichever comes first in the dump
        of_lang = [e["text"] for e in texts if e["lang"] == lang]
        plain = [t for t in of_lang if '<span class="allergen">' not in t]
        marked_first += bool(of_lang) and '<span class="allergen">' in of_lang[0]
        assert (row["lang"], row["ingredients_text_lang"]) == (lang, (plain or [None])[0])
        assert json.loads(row["countries"]) == (countries or [])
        assert json.loads(row["brands"]) == (brands or [])
        assert row["unique_scans_n"] == scans
    assert marked_first > 0  # the sample has products whose marked entry comes first


def test_robotoffs_own_older_prediction_is_replaced_as_robotoff_intends(
    staging: Staging, store: PredictionStore, pg_db: str
) -> None:
    """Robotoff's replace rule (importer.py:2229-2255) deletes every stored prediction of the
    same barcode, server_type, type and source_image (NULL-safe) with another
    predictor_version, whatever its predictor: Robotoff's own older LLM prediction goes, and
    ours makes the insight. A prediction of another type or server type stays."""
    code, lang, text, _ = OUTPUT[0]
    with psycopg.connect(pg_db) as conn:
        for type_, server, image in (
            (TYPE, "off", None),  # replaced
            ("category", "off", None),  # another type: kept
            (TYPE, "obf", None),  # another server type: kept
        ):
            conn.execute(
                "INSERT INTO prediction (barcode, type, data, timestamp, value_tag, "
                "automatic_processing, predictor, predictor_version, server_type, source_image) "
                "VALUES (%s, %s, %s, now(), %s, false, 'fine-tuned-mistral-7b', "
                "'llm-v1-20260101000000', %s, %s)",
                (
                    code,
                    type_,
                    Jsonb({"original": text, "correction": "sucre, farine de blé."}),
                    lang,
                    server,
                    image,
                ),
            )
    before = fetch(pg_db, "SELECT * FROM product_insight")
    write_job(staging, JOB_A)
    outcome = run_import(staging, store, JOB_A)
    assert (outcome.predictions, outcome.predictions_replaced) == (6, 1)
    left = {
        (r["predictor"], r["type"], r["server_type"], r["source_image"])
        for r in fetch(pg_db, f"SELECT * FROM prediction WHERE barcode = '{code}'")
    }
    assert left == {
        ("lexicon-cpu", TYPE, "off", None),
        ("fine-tuned-mistral-7b", "category", "off", None),
        ("fine-tuned-mistral-7b", TYPE, "obf", None),
    }
    assert_insights_follow_robotoff(pg_db, before, outcome, {r[0] for r in OUTPUT if r[2] != r[3]})
    assert insights(pg_db)[(code, lang)]["predictor"] == "lexicon-cpu"


def test_unknown_task_count_is_retried_later_not_refused(
    staging: Staging, store: PredictionStore, pg_db: str
) -> None:
    """Cloud Batch's ListTasks may fail: without the task count the file set is unknown, so
    nothing is imported and the error is not a refusal (the follower retries)."""

    class NoTasks(SucceededEngine):
        def get_job(self, *, job_id: str) -> JobStatus:
            return JobStatus(job_id=job_id, state=JobState.SUCCEEDED, tasks=())

    write_job(staging, JOB_A)
    with pytest.raises(output.ImportNotReady, match="did not list the tasks"):
        output.import_job_output(
            engine=NoTasks(),  # type: ignore[arg-type]
            staging=staging,
            store=store,
            job_type=JOB_TYPE,
            job_id=JOB_A,
        )
    assert not issubclass(output.ImportNotReady, (PipelineError, OutputError))
    assert nothing_written(pg_db)


def test_an_automatic_insight_blocks_new_ones_like_an_annotated_one(
    staging: Staging, store: PredictionStore, pg_db: str
) -> None:
    """Robotoff keeps a product's automatic (or annotated) insight of a value_tag and creates
    no other for it (robotoff/insights/importer.py:452 and :463, ``automatic_processing is
    True`` beside ``annotation is not None``): an automatic insight is never replaced."""
    automatic = add_insight(pg_db, "3000000000006", "de", automatic_processing=True, n_votes=1)
    write_job(staging, JOB_A)
    run_import(staging, store, JOB_A)
    got = insights(pg_db)
    kept = got[("3000000000006", "de")]
    assert kept["id"] == uuid.UUID(automatic) and kept["n_votes"] == 1
    assert kept["data"] == {"original": "old", "correction": "older"}  # not rewritten
    rows = fetch(pg_db, "SELECT id FROM product_insight WHERE barcode = '3000000000006'")
    assert [r["id"] for r in rows] == [uuid.UUID(automatic)]
    assert ("3000000000001", "fr") in got  # the other products get theirs


def test_malformed_corrections_json_is_held_back_with_its_file_and_row(
    staging: Staging, store: PredictionStore, pg_db: str
) -> None:
    """A corrections value that is not valid jsonb (cut short; a \\u0000 escape, valid JSON
    but no jsonb) holds back its row, named by file and row with the parser's message; the
    other rows are imported. Over max_bad_row_fraction the output is refused with that name,
    not with the database's cast error."""
    table = output_table(OUTPUT)
    changed = [r[0] for r in OUTPUT if r[3] is not None and r[3] != r[2]]
    bad = {changed[0]: '[{"rule": "typo", "confidence": 0.9', changed[1]: '["\\u0000"]'}
    column = [bad.get(r[0]) for r in OUTPUT]
    write_job(staging, JOB_A, [table.append_column("corrections", pa.array(column, pa.string()))])

    with pytest.raises(PredictionImportError) as refused:
        run_import(staging, store, JOB_A)
    first = [i for i, r in enumerate(OUTPUT) if r[0] in bad][0]
    assert f"part-00000.parquet row {first}: 'corrections' is not valid JSON" in str(refused.value)
    assert nothing_written(pg_db)

    outcome = run_import(staging, store, JOB_A, max_bad_row_fraction=0.5)
    held = store.quarantined_rows(JOB_A)
    assert {h["code"] for h in held} == set(bad)
    assert all("is not valid JSON" in h["reason"] for h in held)
    assert outcome.rows_quarantined == 2
    stored = {r["barcode"] for r in fetch(pg_db, "SELECT barcode FROM prediction")}
    assert stored == set(changed) - set(bad)


def test_a_row_held_back_twice_never_reaches_the_cast(
    staging: Staging, store: PredictionStore, pg_db: str
) -> None:
    """A row with an unknown product code (held back by the facts check) and malformed
    corrections is dropped from the output too, not left for the prediction view's cast."""
    stray = ("3999999999999", "fr", "sucre, farinne", "sucre, farine")
    rows = [*OUTPUT, stray]
    column = [("[" if r is stray else None) for r in rows]
    table = output_table(rows).append_column("corrections", pa.array(column, pa.string()))
    write_job(staging, JOB_A, [table])
    outcome = run_import(staging, store, JOB_A, max_bad_row_fraction=0.5)
    held = store.quarantined_rows(JOB_A)
    assert [(h["code"], h["reason"]) for h in held] == [
        (stray[0], "not a product of the job's input")
    ]
    assert outcome.rows_quarantined == 1 and outcome.predictions > 0


def test_a_scope_without_every_prediction_is_refused(
    staging: Staging, store: PredictionStore, pg_db: str
) -> None:
    """The dedup rule reads the stored predictions of the replace scope's barcodes only, so a
    job type whose scope_sql leaves out a prediction's row is refused (else a stored
    prediction of that product would be missed and a duplicate written)."""
    scope = (
        "SELECT _file, _row, code, 'ingredient_spellcheck', 'off', NULL, engine_version "
        "FROM batch_output WHERE correction IS NOT NULL AND correction = text"
    )

    class ScopeWithoutPredictions:
        name = JOB_TYPE.name
        facts_file = JOB_TYPE.facts_file
        import_spec = replace(JOB_TYPE.import_spec, scope_sql=scope)

        def facts_at_import(self, **kwargs: Any) -> None:
            return None

    write_job(staging, JOB_A, [output_table(OUTPUT)])
    with pytest.raises(PredictionImportError, match="the replace scope must hold every"):
        run_import(staging, store, JOB_A, job_type=ScopeWithoutPredictions())
    assert nothing_written(pg_db)


def test_a_null_data_is_held_back_unless_the_job_type_says_it_cannot_be(
    staging: Staging, store: PredictionStore, pg_db: str
) -> None:
    """A prediction row whose data is NULL is held back with its file and row; a job type
    declaring data_never_null skips that test (its data is built, never NULL), so were it NULL
    after all, the INSERT's NOT NULL constraint refuses the whole output: nothing imported."""
    bad = OUTPUT[0][0]
    spec = JOB_TYPE.import_spec
    assert spec.data_never_null  # ingredients-spellcheck: jsonb_build_object(...) || ...
    built = spec.predictions_sql.index("jsonb_build_object('original'")
    end = spec.predictions_sql.index("END,", built) + len("END")
    nullable = (
        spec.predictions_sql[:built]
        + f"CASE WHEN code = '{bad}' THEN NULL ELSE "
        + spec.predictions_sql[built:end]
        + " END"
        + spec.predictions_sql[end:]
    )

    def job_type(never_null: bool) -> Any:
        class NullableData:
            name = JOB_TYPE.name
            facts_file = JOB_TYPE.facts_file
            import_spec = replace(spec, predictions_sql=nullable, data_never_null=never_null)

            def facts_at_import(self, **kwargs: Any) -> None:
                return None

        return NullableData()

    write_job(staging, JOB_A, [output_table(OUTPUT)])
    with pytest.raises(PredictionImportError, match=r"refused the output.*null value.*data"):
        run_import(staging, store, JOB_A, job_type=job_type(True), max_bad_row_fraction=0.5)
    assert nothing_written(pg_db)
    outcome = run_import(staging, store, JOB_A, job_type=job_type(False), max_bad_row_fraction=0.5)
    held = store.quarantined_rows(JOB_A)
    assert [(h["file"].rsplit("/", 1)[-1], h["row"], h["code"], h["reason"]) for h in held] == [
        ("part-00000.parquet", 0, bad, "null 'data'")
    ]
    assert outcome.rows_quarantined == 1
    stored = {r["barcode"] for r in fetch(pg_db, "SELECT barcode FROM prediction")}
    assert bad not in stored and stored
