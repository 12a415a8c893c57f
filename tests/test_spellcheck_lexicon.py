"""The CPU engine's lexicon built with DuckDB from both real sample dumps (two schemas)."""

from __future__ import annotations

from pathlib import Path

import duckdb
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq
import pytest

from robotoff_batch.job_types.ingredients_spellcheck.lexicon import LEXICON_SCHEMA, build_lexicon
from robotoff_batch.paths import SAMPLE_DATA_DIR

DATA = SAMPLE_DATA_DIR
SAMPLES = ["food_sample_2026.parquet", "food_sample_2025_old_schema.parquet"]


@pytest.mark.parametrize("sample", SAMPLES)
def test_lexicon_from_sample(sample: str) -> None:
    path = DATA / sample
    table = build_lexicon(duckdb.connect(), str(path))
    assert table.schema == LEXICON_SCHEMA
    assert table.num_rows > 100
    words = table.column("word").to_pylist()
    assert all(w == w.lower() and w.strip() == w and " " not in w for w in words)
    assert {"sugar", "sucre"} <= set(words)
    assert pc.min(table.column("n")).as_py() >= 1
    langs = set(table.column("lang").to_pylist())
    assert "en" in langs and all(lang and lang == lang.lower() for lang in langs)
    # lang is the product's language, not the ingredient id's taxonomy prefix (mostly "en").
    product_langs = {
        row[0]
        for row in duckdb.sql(
            "SELECT DISTINCT lower(lang) FROM read_parquet($path) WHERE lang IS NOT NULL",
            params={"path": str(path)},
        ).fetchall()
    }
    assert langs <= product_langs
    pairs = set(zip(table.column("lang").to_pylist(), words, strict=True))
    assert {("fr", "sucre"), ("en", "sugar"), ("es", "harina")} <= pairs
    assert ("en", "harina") not in pairs  # a Spanish word is not filed as English


def test_lexicon_is_keyed_by_product_language(tmp_path: Path) -> None:
    dump = tmp_path / "dump.parquet"
    ingredients = [
        '[{"id": "en:vanilla", "text": "vainilla", "is_in_taxonomy": 1}]',
        '[{"id": "en:vanilla", "text": "Vanilla", "is_in_taxonomy": true,'
        ' "ingredients": [{"id": "en:sugar", "text": "sugar", "is_in_taxonomy": 1}]}]',
        '[{"id": "en:sugar", "text": "azucar", "is_in_taxonomy": 1}]',
        '[{"id": "fr:truc", "text": "truc", "is_in_taxonomy": 0}]',
    ]
    pq.write_table(pa.table({"lang": ["es", "EN", None, "fr"], "ingredients": ingredients}), dump)
    table = build_lexicon(duckdb.connect(), str(dump))
    assert table.schema == LEXICON_SCHEMA
    assert table.to_pylist() == [
        {"lang": "en", "word": "sugar", "n": 1},
        {"lang": "en", "word": "vanilla", "n": 1},
        {"lang": "es", "word": "vainilla", "n": 1},
    ]


def test_path_is_a_parameter_not_sql(tmp_path: Path) -> None:
    weird = tmp_path / "it's a dump.parquet"
    con = duckdb.connect()
    src = DATA / SAMPLES[0]
    con.execute(
        "COPY (SELECT lang, ingredients FROM read_parquet(?)) TO '"
        + str(weird).replace("'", "''")
        + "' (FORMAT parquet)",
        [str(src)],
    )
    assert build_lexicon(con, str(weird)).num_rows > 100
