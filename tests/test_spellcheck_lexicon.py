"""The CPU engine's lexicon built with DuckDB from both real sample dumps (two schemas): the
words of the main ingredients texts whose ingredients are all taxonomy-known, per product
language, equal to a plain Python count of the same rule."""

from __future__ import annotations

import re
from collections import Counter
from pathlib import Path
from typing import Any

import duckdb
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq
import pytest

from robotoff_batch.job_types.ingredients_spellcheck.lexicon import (
    LEXICON_COLUMNS,
    LEXICON_SCHEMA,
    build_lexicon,
)
from robotoff_batch.paths import SAMPLE_DATA_DIR

DATA = SAMPLE_DATA_DIR
SAMPLES = ["food_sample_2026.parquet", "food_sample_2025_old_schema.parquet"]


def python_lexicon(rows: list[dict[str, Any]], min_length: int = 2) -> dict[tuple[str, str], int]:
    """The rule, written plainly: (lang, word) -> n over the rows of a dump."""
    counts: Counter[tuple[str, str]] = Counter()
    for row in rows:
        lang = (row["lang"] or "").strip().lower()
        known = (row["ingredients_n"] or 0) > 0 and row["unknown_ingredients_n"] == 0
        main = [e["text"] for e in row["ingredients_text"] or [] if e["lang"] == "main"]
        if not lang or not known or not main or main[0] is None:
            continue
        for word in re.findall(r"[^\W\d_]+", main[0].lower()):
            if len(word) >= min_length:
                counts[(lang, word)] += 1
    return dict(counts)


def as_dict(table: pa.Table) -> dict[tuple[str, str], int]:
    return {(r["lang"], r["word"]): r["n"] for r in table.to_pylist()}


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
    assert {("fr", "sucre"), ("en", "sugar")} <= pairs
    assert ("en", "sucre") not in pairs  # a French word is not filed as English
    # the counts are exactly the rule's, counted plainly (the two-step split in DuckDB is exact)
    rows = pq.read_table(path, columns=list(LEXICON_COLUMNS)).to_pylist()
    assert as_dict(table) == python_lexicon(rows)
    ns = table.column("n").to_pylist()  # sorted: lang, then decreasing count
    keys = [(lang, -n) for lang, n in zip(table.column("lang").to_pylist(), ns, strict=True)]
    assert keys == sorted(keys)


def _entries(main: str | None, **others: str) -> list[dict[str, str | None]]:
    return [{"lang": "main", "text": main}, *({"lang": k, "text": v} for k, v in others.items())]


def test_lexicon_rule_on_a_small_dump(tmp_path: Path) -> None:
    """Per product language; only products whose ingredients are all known; the main text
    (not another language's); words cut at anything but a letter, lowercased."""
    dump = tmp_path / "dump.parquet"
    rows = [  # lang, main text, other entries, ingredients_n, unknown_ingredients_n
        ("es", "Vainilla, AZÚCAR", {"en": "sugar"}, 2, 0),
        ("EN", "Vanilla\t(sugar 5%),sugar;E330  water\nsalt l'eau", {}, 5, 0),
        (None, "azucar", {}, 1, 0),  # no language: skipped
        (" ", "azucar", {}, 1, 0),  # an empty one too
        ("fr", "truc, sucre", {}, 2, 1),  # an unknown ingredient: skipped
        ("fr", "sucre", {}, 0, 0),  # no ingredients parsed: skipped
        ("fr", "sucre", {}, 1, None),  # unknown count missing: skipped
        ("fr", None, {"fr": "sel"}, 1, 0),  # no main text: skipped
        ("de", "Zucker", {"de": "Salz"}, 1, 0),  # the main text, not the lang entry
    ]
    entry = pa.list_(pa.struct([("lang", pa.string()), ("text", pa.string())]))
    table = pa.table(
        {
            "lang": [r[0] for r in rows],
            "ingredients_text": pa.array([_entries(r[1], **r[2]) for r in rows], entry),
            "ingredients_n": pa.array([r[3] for r in rows], pa.int32()),
            "unknown_ingredients_n": pa.array([r[4] for r in rows], pa.int32()),
        }
    )
    pq.write_table(table, dump)
    lexicon = build_lexicon(duckdb.connect(), str(dump))
    assert lexicon.schema == LEXICON_SCHEMA
    assert lexicon.to_pylist() == [
        {"lang": "de", "word": "zucker", "n": 1},
        {"lang": "en", "word": "sugar", "n": 2},
        {"lang": "en", "word": "eau", "n": 1},
        {"lang": "en", "word": "salt", "n": 1},
        {"lang": "en", "word": "vanilla", "n": 1},
        {"lang": "en", "word": "water", "n": 1},
        {"lang": "es", "word": "azúcar", "n": 1},
        {"lang": "es", "word": "vainilla", "n": 1},
    ]
    assert as_dict(lexicon) == python_lexicon(table.to_pylist())
    assert as_dict(build_lexicon(duckdb.connect(), str(dump), min_length=6)) == {
        ("de", "zucker"): 1,
        ("en", "vanilla"): 1,
        ("es", "azúcar"): 1,
        ("es", "vainilla"): 1,
    }


def test_path_is_a_parameter_not_sql(tmp_path: Path) -> None:
    weird = tmp_path / "it's a dump.parquet"
    con = duckdb.connect()
    src = DATA / SAMPLES[0]
    con.execute(
        f"COPY (SELECT {', '.join(LEXICON_COLUMNS)} FROM read_parquet(?)) TO '"
        + str(weird).replace("'", "''")
        + "' (FORMAT parquet)",
        [str(src)],
    )
    assert build_lexicon(con, str(weird)).num_rows > 100
