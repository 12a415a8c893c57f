"""Product extraction from the OFF Parquet dump, on the real samples shipped in data/off/."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from robotoff_batch.extraction import ExtractionError, check_dump, extract_to_parquet
from robotoff_batch.job_types.ingredients_spellcheck import (
    SPELLCHECK_INPUT_SCHEMA,
    SPELLCHECK_REQUIRED_COLUMNS,
    extract_spellcheck_products,
)

DATA = Path(__file__).resolve().parent.parent / "data" / "off"
SAMPLE_2026 = DATA / "food_sample_2026.parquet"
SAMPLE_2025 = DATA / "food_sample_2025_old_schema.parquet"
SAMPLES = pytest.mark.parametrize("dump", [SAMPLE_2026, SAMPLE_2025], ids=["2026", "2025-old"])


def _extract(dump: Path, tmp_path: Path, **kwargs: Any) -> pa.Table:
    args: dict[str, Any] = {"limit": 10_000, "min_fraction": 0.0, "max_fraction": 0.4}
    args.update(kwargs)
    out = tmp_path / "input.parquet"
    result = extract_spellcheck_products(dump_path=str(dump), output_path=out, **args)
    table = pq.read_table(out)
    assert result.rows == table.num_rows
    assert result.output_path == out
    assert result.bytes == out.stat().st_size
    assert result.duration_s >= 0
    return table


def _main_texts(dump: Path) -> dict[str, dict[str, Any]]:
    """Independent of the SQL: the products' main text and counts, read with pyarrow."""
    cols = ["code", "lang", "ingredients_text", "ingredients_n", "unknown_ingredients_n"]
    rows = pq.read_table(dump, columns=cols).to_pylist()
    out = {}
    for row in rows:
        main = [e["text"] for e in row["ingredients_text"] or [] if e["lang"] == "main"]
        out[row["code"]] = {
            "text": main[0] if main else None,
            "lang": row["lang"],
            "n": row["ingredients_n"],
            "unknown": row["unknown_ingredients_n"],
        }
    return out


@SAMPLES
def test_both_schemas_select_rows_with_the_contract_schema(dump: Path, tmp_path: Path) -> None:
    table = _extract(dump, tmp_path)
    assert table.num_rows > 100
    assert table.schema.equals(SPELLCHECK_INPUT_SCHEMA)
    assert table.column("code").null_count == 0


@SAMPLES
def test_rows_match_an_independent_reading_of_the_dump(dump: Path, tmp_path: Path) -> None:
    table = _extract(dump, tmp_path, min_fraction=0.05, max_fraction=0.25)
    truth = _main_texts(dump)
    rows = table.to_pylist()
    for row in rows:
        expected = truth[row["code"]]
        assert row["text"] == expected["text"]
        assert row["text"].strip()
        assert row["lang"] == expected["lang"]
        assert row["fraction"] == pytest.approx(expected["unknown"] / expected["n"])
        assert 0.05 < row["fraction"] <= 0.25
    # Every product of the dump that qualifies is selected (the limit is above the count).
    qualifying = {
        code
        for code, p in truth.items()
        if p["text"]
        and str(p["text"]).strip()
        and p["n"]
        and p["unknown"] is not None
        and 0.05 < p["unknown"] / p["n"] <= 0.25
    }
    assert {r["code"] for r in rows} == qualifying


def test_fraction_bounds_are_exclusive_min_inclusive_max(tmp_path: Path) -> None:
    all_rows = _extract(SAMPLE_2026, tmp_path, min_fraction=0.0, max_fraction=1.0).to_pylist()
    fractions = sorted({r["fraction"] for r in all_rows})
    pivot = next(f for f in fractions if f > 0.2)  # a fraction some product has exactly
    below = _extract(SAMPLE_2026, tmp_path, min_fraction=0.0, max_fraction=pivot)
    above = _extract(SAMPLE_2026, tmp_path, min_fraction=pivot, max_fraction=1.0)
    assert pivot in below.column("fraction").to_pylist()
    assert pivot not in above.column("fraction").to_pylist()
    assert below.num_rows + above.num_rows == len(all_rows)
    assert min(fractions) > 0.0  # min 0 is exclusive: products with no unknown ingredient out


@SAMPLES
def test_order_is_popularity_desc_then_code_and_limit_is_honoured(
    dump: Path, tmp_path: Path
) -> None:
    rows = _extract(dump, tmp_path).to_pylist()
    keys = [(r["popularity_key"] is None, -(r["popularity_key"] or 0), r["code"]) for r in rows]
    assert keys == sorted(keys)
    top = _extract(dump, tmp_path, limit=25).to_pylist()
    assert top == rows[:25]


def test_language_country_popularity_and_codes_filters(tmp_path: Path) -> None:
    everything = _extract(SAMPLE_2026, tmp_path).to_pylist()
    fr = _extract(SAMPLE_2026, tmp_path, languages=["fr"]).to_pylist()
    assert fr and all(r["lang"] == "fr" for r in fr)
    assert fr == [r for r in everything if r["lang"] == "fr"]
    fr_de = _extract(SAMPLE_2026, tmp_path, languages=["fr", "de"]).to_pylist()
    assert {r["lang"] for r in fr_de} == {"fr", "de"}
    assert _extract(SAMPLE_2026, tmp_path, languages=[]).to_pylist() == everything

    countries = {
        r["code"]: r["countries_tags"] or []
        for r in pq.read_table(SAMPLE_2026, columns=["code", "countries_tags"]).to_pylist()
    }
    in_fr = _extract(SAMPLE_2026, tmp_path, countries=["en:france"]).to_pylist()
    assert in_fr == [r for r in everything if "en:france" in countries[r["code"]]]

    popular = _extract(SAMPLE_2026, tmp_path, min_popularity=1000).to_pylist()
    assert popular == [r for r in everything if (r["popularity_key"] or 0) >= 1000]

    picked = [everything[3]["code"], everything[0]["code"], "0000000000000"]
    by_code = _extract(SAMPLE_2026, tmp_path, codes=picked).to_pylist()
    assert by_code == [everything[0], everything[3]]


def test_a_selection_matching_nothing_gives_an_empty_valid_file(tmp_path: Path) -> None:
    table = _extract(SAMPLE_2026, tmp_path, languages=["xx"])
    assert table.num_rows == 0
    assert table.schema.equals(SPELLCHECK_INPUT_SCHEMA)


def test_sql_injection_looking_values_are_data(tmp_path: Path) -> None:
    evil = "fr'); DROP TABLE x; --"
    table = _extract(SAMPLE_2026, tmp_path, languages=[evil], countries=[evil], codes=[evil])
    assert table.num_rows == 0
    # The dump is untouched and still selects normally.
    assert _extract(SAMPLE_2026, tmp_path).num_rows > 100


def test_product_name_is_main_or_lang_entry(tmp_path: Path) -> None:
    names = {
        r["code"]: (r["lang"], r["product_name"] or [])
        for r in pq.read_table(SAMPLE_2026, columns=["code", "lang", "product_name"]).to_pylist()
    }
    for row in _extract(SAMPLE_2026, tmp_path).to_pylist():
        lang, entries = names[row["code"]]
        candidates = [e["text"].strip() for e in entries if e["lang"] in ("main", lang)]
        if row["product_name"] is None:
            assert not any(candidates)
        else:
            assert row["product_name"] in candidates


# ---------------------------------------------------------------------------------------------
# check_dump and errors
# ---------------------------------------------------------------------------------------------


@SAMPLES
def test_check_dump_accepts_both_samples(dump: Path) -> None:
    check_dump(dump_path=str(dump), required_columns=SPELLCHECK_REQUIRED_COLUMNS)
    check_dump(
        dump_path=f"file://{dump}",
        required_columns={"code": "VARCHAR", "popularity_key": "BIGINT", "lang": "any text"},
    )


def test_missing_file_names_the_path(tmp_path: Path) -> None:
    missing = tmp_path / "nope.parquet"
    with pytest.raises(ExtractionError, match=r"nope\.parquet.*no such file"):
        check_dump(dump_path=str(missing), required_columns=SPELLCHECK_REQUIRED_COLUMNS)
    with pytest.raises(ExtractionError, match="nope.parquet"):
        extract_spellcheck_products(
            dump_path=str(missing),
            output_path=tmp_path / "out.parquet",
            limit=10,
            min_fraction=0,
            max_fraction=0.4,
        )
    assert not (tmp_path / "out.parquet").exists()


def test_directory_is_refused(tmp_path: Path) -> None:
    with pytest.raises(ExtractionError, match=rf"{tmp_path}.*directory"):
        check_dump(dump_path=str(tmp_path), required_columns=SPELLCHECK_REQUIRED_COLUMNS)


def test_not_a_parquet_file_is_refused(tmp_path: Path) -> None:
    bogus = tmp_path / "food.parquet"
    bogus.write_text("code,lang\n123,fr\n")
    with pytest.raises(ExtractionError, match=r"food\.parquet.*not a readable Parquet"):
        check_dump(dump_path=str(bogus), required_columns=SPELLCHECK_REQUIRED_COLUMNS)


@pytest.mark.skipif(not hasattr(os, "geteuid") or os.geteuid() == 0, reason="root reads any file")
def test_unreadable_file_is_refused(tmp_path: Path) -> None:
    locked = tmp_path / "locked.parquet"
    locked.write_bytes(SAMPLE_2026.read_bytes())
    locked.chmod(0)
    try:
        with pytest.raises(ExtractionError, match=r"locked\.parquet.*permission denied"):
            check_dump(dump_path=str(locked), required_columns=SPELLCHECK_REQUIRED_COLUMNS)
    finally:
        locked.chmod(0o600)


def test_missing_column_names_column_file_and_close_matches(tmp_path: Path) -> None:
    table = pq.read_table(SAMPLE_2026)
    dump = tmp_path / "no_ingredients_text.parquet"
    pq.write_table(table.drop_columns(["ingredients_text"]), dump)
    with pytest.raises(ExtractionError) as info:
        check_dump(dump_path=str(dump), required_columns=SPELLCHECK_REQUIRED_COLUMNS)
    message = str(info.value)
    assert "'ingredients_text'" in message
    assert "no_ingredients_text.parquet" in message
    assert "close matches" in message and "ingredients_tags" in message
    with pytest.raises(ExtractionError, match="ingredients_text"):
        extract_spellcheck_products(
            dump_path=str(dump),
            output_path=tmp_path / "out.parquet",
            limit=10,
            min_fraction=0,
            max_fraction=0.4,
        )


def test_wrong_column_type_is_refused(tmp_path: Path) -> None:
    table = pq.read_table(SAMPLE_2026, columns=list(SPELLCHECK_REQUIRED_COLUMNS))
    idx = table.schema.get_field_index("popularity_key")
    table = table.set_column(idx, "popularity_key", table.column(idx).cast(pa.string()))
    dump = tmp_path / "bad_types.parquet"
    pq.write_table(table, dump)
    with pytest.raises(ExtractionError, match=r"bad_types\.parquet.*'popularity_key'.*integer"):
        check_dump(dump_path=str(dump), required_columns=SPELLCHECK_REQUIRED_COLUMNS)


def test_bad_arguments_are_refused(tmp_path: Path) -> None:
    common: dict[str, Any] = {"dump_path": str(SAMPLE_2026), "output_path": tmp_path / "o.parquet"}
    with pytest.raises(ExtractionError, match="min_fraction 0.5 must be below max_fraction 0.4"):
        extract_spellcheck_products(**common, limit=10, min_fraction=0.5, max_fraction=0.4)
    with pytest.raises(ExtractionError, match="limit: Input should be greater than or equal to 1"):
        extract_spellcheck_products(**common, limit=0, min_fraction=0, max_fraction=0.4)
    with pytest.raises(ExtractionError, match="languages: Input should be a valid list"):
        extract_spellcheck_products(
            **common,
            limit=10,
            min_fraction=0,
            max_fraction=0.4,
            languages="fr",
        )


# ---------------------------------------------------------------------------------------------
# extract_to_parquet (generic)
# ---------------------------------------------------------------------------------------------


def test_generic_extraction_binds_parameters_and_reports_progress(tmp_path: Path) -> None:
    messages: list[str] = []
    out = tmp_path / "sub" / "codes.parquet"
    result = extract_to_parquet(
        dump_path=str(SAMPLE_2025),
        sql="SELECT code, lang FROM read_parquet($dump_path) WHERE lang = $lang "
        "ORDER BY code LIMIT $limit",
        params={"lang": "fr", "limit": 7},
        output_path=out,
        progress=messages.append,
        memory_limit="256MB",
        threads=1,
    )
    assert result.rows == 7
    table = pq.read_table(out)
    assert table.column_names == ["code", "lang"]
    assert set(table.column("lang").to_pylist()) == {"fr"}
    assert any("7 rows" in m for m in messages)
    assert [p.name for p in out.parent.iterdir()] == ["codes.parquet"]  # no temp leftovers


def test_failed_query_raises_and_leaves_no_output(tmp_path: Path) -> None:
    out = tmp_path / "x.parquet"
    with pytest.raises(ExtractionError, match="failed"):
        extract_to_parquet(
            dump_path=str(SAMPLE_2026),
            sql="SELECT no_such_column FROM read_parquet($dump_path)",
            params={},
            output_path=out,
        )
    assert list(tmp_path.iterdir()) == []
