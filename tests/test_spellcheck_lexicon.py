"""The CPU engine's lexicon built with DuckDB from both real sample dumps (two schemas)."""

from __future__ import annotations

from pathlib import Path

import duckdb
import pyarrow.compute as pc
import pytest

from robotoff_batch.job_types.spellcheck_lexicon import LEXICON_SCHEMA, build_lexicon
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


def test_path_is_a_parameter_not_sql(tmp_path: Path) -> None:
    weird = tmp_path / "it's a dump.parquet"
    con = duckdb.connect()
    src = DATA / SAMPLES[0]
    con.execute(
        "COPY (SELECT ingredients FROM read_parquet(?)) TO '"
        + str(weird).replace("'", "''")
        + "' (FORMAT parquet)",
        [str(src)],
    )
    assert build_lexicon(con, str(weird)).num_rows > 100
