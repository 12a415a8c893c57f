"""The launch's one pass over the dump: the same selection, facts and lexicon as reading the dump
for each, and nothing staged that the import would refuse (issue 17, point 7): one row per
barcode, no NUL character. Real Parquet, real DuckDB; the end-to-end case runs the real
container on the local runner and imports into a real PostgreSQL."""

from __future__ import annotations

from collections import Counter
from pathlib import Path
from typing import Any

import dagster as dg
import duckdb
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from robotoff_batch.config.loader import load_job_config
from robotoff_batch.job_types import load_registry
from robotoff_batch.job_types.ingredients_spellcheck import SpellcheckLaunch, extract
from robotoff_batch.job_types.ingredients_spellcheck.imports import extract_facts
from robotoff_batch.job_types.ingredients_spellcheck.lexicon import build_lexicon
from robotoff_batch.job_types.ingredients_spellcheck.selection import launch_pass
from robotoff_batch.paths import JOB_CONFIGS_DIR, SAMPLE_DATA_DIR
from robotoff_batch.predictions.output import DUMP_MODIFIED_KEY, dump_modified
from tests.test_e2e import (
    check_evaluations,
    db_rows,
    failure_text,
    instance,  # noqa: F401 (the fixture)
    launch,
    launched_job_id,
    make_defs,
    make_resources,
    output_changes,
    run_request,
    tick_until_done,
)

SAMPLE = SAMPLE_DATA_DIR / "food_sample_2026.parquet"
OLD_SCHEMA = SAMPLE_DATA_DIR / "food_sample_2025_old_schema.parquet"
JOB_CONFIG = load_job_config(JOB_CONFIGS_DIR / "ingredients-spellcheck.yaml").config
# the shipped config as the local runner runs it (the CPU engine)
LOCAL_CONFIG = load_registry()["ingredients-spellcheck"].job_type.config_for_local_runner(
    JOB_CONFIG
)
LIMIT = 40
# The newest copy of a duplicated French product: words the CPU engine corrects (accents).
NEW_TEXT = (
    "Sucre, creme fraiche, farine de ble, gluen, sel."  # "gluen": a typo the default rules fix
)


def _pass(dump: Path, out: Path, **kwargs: Any) -> Any:
    args: dict[str, Any] = {"limit": 10_000, "min_fraction": 0.0, "max_fraction": 0.4}
    return launch_pass(dump_path=str(dump), work_dir=out, **{**args, **kwargs})


@pytest.mark.parametrize("dump", [SAMPLE, OLD_SCHEMA], ids=["2026", "2025-old"])
def test_one_pass_gives_the_facts_and_lexicon_of_reading_the_dump_for_each(
    dump: Path, tmp_path: Path
) -> None:
    done = _pass(dump, tmp_path / "pass", lexicon=True)
    assert done.rows > 100 and done.facts_path is not None
    # the facts, written from the rows the pass kept, are those read from the dump itself,
    # with the dump's modification time (not that of a file the launch wrote)
    from_dump = tmp_path / "from_dump.parquet"
    extract_facts(dump_path=str(dump), input_path=done.input_path, output_path=from_dump)
    assert pq.read_table(done.facts_path).num_rows == done.rows
    assert pq.read_table(done.facts_path).equals(pq.read_table(from_dump))
    modified = dump_modified(str(dump))
    assert modified is not None
    metadata = pq.read_schema(done.facts_path).metadata or {}
    assert metadata[DUMP_MODIFIED_KEY] == modified.isoformat().encode()
    assert pq.read_schema(from_dump).metadata == metadata
    # ... and so is the lexicon, counted in the same pass
    assert done.lexicon is not None
    assert done.lexicon.equals(build_lexicon(duckdb.connect(), str(dump)))
    assert done.counts["dump_rows"] == pq.read_metadata(dump).num_rows
    assert done.counts["stale_rows"] == done.counts["nul_cleaned"] == 0


def hostile_dump(path: Path) -> dict[str, Any]:
    """The shipped sample with what real dumps hold: five barcodes twice (an older copy before
    or after the newer one in the file), a NUL byte in one product's texts and countries, a
    code with a NUL byte and an empty code. Returns what the test needs to know."""
    table = pq.read_table(SAMPLE)
    top = _pass(SAMPLE, path.parent / "clean", limit=LIMIT)
    selected = pq.read_table(top.input_path).to_pylist()
    french = next(r["code"] for r in selected if r["lang"] == "fr")
    others = [r["code"] for r in selected if r["code"] != french]
    dup_codes = [french, *others[:4]]
    nul_code = others[10]
    rows = table.to_pylist()
    by_code = {r["code"]: r for r in rows}
    extra = []
    for i, code in enumerate(dup_codes):
        newest = by_code[code]
        older = dict(newest)
        older["last_modified_t"] = (newest["last_modified_t"] or 0) - 86_400
        older["ingredients_text"] = [
            {"lang": e["lang"], "text": f"OLD COPY {e['text']}"} for e in newest["ingredients_text"]
        ]
        if code == french:
            newest["ingredients_text"] = [
                {"lang": e["lang"], "text": NEW_TEXT if e["lang"] in ("main", "fr") else e["text"]}
                for e in newest["ingredients_text"]
            ]
        if i % 2:  # the older copy later in the file: the modification time decides
            extra.append(older)
        else:
            rows.insert(0, older)
    rows.extend(extra)
    dirty = by_code[nul_code]
    clean_main = next(e["text"] for e in dirty["ingredients_text"] if e["lang"] == "main")
    dirty["ingredients_text"] = [
        {"lang": e["lang"], "text": e["text"][:5] + "\x00" + e["text"][5:]}
        for e in dirty["ingredients_text"]
    ]
    dirty["countries_tags"] = [*(dirty["countries_tags"] or []), "en:fr\x00ance"]
    for bad in ("200000000\x001", "  "):
        row = dict(by_code[others[11]])
        row["code"] = bad
        row["popularity_key"] = 10**12  # first in line if it were kept
        rows.append(row)
    pq.write_table(pa.Table.from_pylist(rows, schema=table.schema), path)
    return {
        "dup_codes": dup_codes,
        "french": french,
        "nul_code": nul_code,
        "clean_main": clean_main,
        "selected": [r["code"] for r in selected],
    }


def _strings(table: pa.Table) -> list[str]:
    out: list[str] = []

    def walk(value: Any) -> None:
        if isinstance(value, str):
            out.append(value)
        elif isinstance(value, dict):
            for v in value.values():
                walk(v)
        elif isinstance(value, list):
            for v in value:
                walk(v)

    for row in table.to_pylist():
        walk(row)
    return out


def test_the_pass_stages_one_row_per_barcode_and_no_nul(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("ROBOTOFF_BATCH_HOME", str(tmp_path / "home"))
    dump = tmp_path / "hostile.parquet"
    known = hostile_dump(dump)
    cpu = {"job_config": LOCAL_CONFIG}
    out = extract(
        dump_path=str(dump), params=SpellcheckLaunch(limit=LIMIT), work_dir=tmp_path / "x", **cpu
    )
    staged = pq.read_table(out.files["input.parquet"])
    facts = pq.read_table(out.files["products.parquet"])
    codes = staged.column("code").to_pylist()
    assert len(codes) == len(set(codes)) == LIMIT
    # the same products as the clean dump (the bad codes, first by popularity, dropped)
    assert codes == known["selected"]
    texts = dict(zip(codes, staged.column("text").to_pylist(), strict=True))
    for code in known["dup_codes"]:  # the most recently modified copy, wherever in the file
        assert not texts[code].startswith("OLD COPY")
    assert texts[known["french"]] == NEW_TEXT
    assert texts[known["nul_code"]] == known["clean_main"]
    assert not [s for s in _strings(staged) + _strings(facts) if "\x00" in s]
    fact = next(r for r in facts.to_pylist() if r["code"] == known["nul_code"])
    assert "en:france" in fact["countries"] and "\\u0000" not in fact["countries"]
    assert Counter(facts.column("code").to_pylist()).most_common(1)[0][1] == 1
    # facts.sql on the raw hostile dump (as at import) applies the same barcode and NUL rules
    from_dump = tmp_path / "from_dump.parquet"
    extract_facts(dump_path=str(dump), input_path=out.files["input.parquet"], output_path=from_dump)
    assert pq.read_table(from_dump).equals(facts)
    meta = out.metadata
    assert meta["dump_duplicated_barcodes"] == 5 and meta["dump_stale_rows"] == 5
    assert meta["dump_invalid_code_rows"] == 2 and meta["dump_nul_cleaned"] == 1
    assert meta["dump_rows"] == 1000 + 5 + 2
    # the lexicon, counted in the same pass, counts each product once: stale copies and
    # dropped rows out, so it is the clean dump's
    lexicon = pq.read_table(out.files["lexicon.parquet"])
    assert lexicon.equals(build_lexicon(duckdb.connect(), str(SAMPLE)))


def test_a_hostile_dump_launched_and_imported_end_to_end(
    tmp_path: Path,
    instance: dg.DagsterInstance,  # noqa: F811 (the fixture imported above)
    pg_db: str,
) -> None:
    """Issue 17 point 7, as a user would: `launch` on a dump with a NUL byte and duplicated
    barcodes, the real container on the local runner, the import: one prediction a product."""
    dump = tmp_path / "hostile.parquet"
    known = hostile_dump(dump)
    resources = make_resources(tmp_path, pg_db, dump=dump)
    defs = make_defs(resources)
    result = launch(defs, instance, limit=LIMIT)
    assert result.success, failure_text(result)
    job_id = launched_job_id(result)
    (request,), _, _ = tick_until_done(defs, instance, resources)
    finished = run_request(defs, instance, request)
    assert finished.success, failure_text(finished)
    assert all(c.passed for c in check_evaluations(finished).values())
    rows = db_rows(pg_db, job_id)
    expected = output_changes(tmp_path / "staging", job_id)
    assert rows and len(rows) == len(expected)
    per_product = Counter(r["barcode"] for r in rows)
    assert max(per_product.values()) == 1
    french = [r for r in rows if r["barcode"] == known["french"]]
    assert french and french[0]["data"]["original"] == NEW_TEXT
    products = instance.get_latest_materialization_event(
        dg.AssetKey(["ingredients_spellcheck", "products"])
    )
    assert products is not None
    meta = products.asset_materialization.metadata
    assert meta["dump_duplicated_barcodes"].value == 5
    assert meta["dump_nul_cleaned"].value == 1 and meta["dump_invalid_code_rows"].value == 2


def test_nul_in_a_language_or_a_text_is_judged_after_cleaning(tmp_path: Path) -> None:
    """The pass carries only the product language's ingredients texts to the facts, and cleans
    the texts after its top N: a `lang`, or an entry's language, holding a NUL matches as in
    the dump (no text: facts.sql's rule at import), and a text that is empty once its NULs are
    removed is not selected."""
    top = _pass(SAMPLE, tmp_path / "clean", limit=LIMIT)
    selected = pq.read_table(top.input_path).to_pylist()
    by_code = {r["code"]: r for r in pq.read_table(SAMPLE).to_pylist()}
    with_lang = [r["code"] for r in selected if by_code[r["code"]]["lang"] in ("fr", "en")]
    nul_lang, nul_entry, empty = with_lang[0], with_lang[1], selected[2]["code"]
    spaces = next(r["code"] for r in selected[3:] if r["code"] not in (nul_lang, nul_entry))
    assert len({nul_lang, nul_entry, empty, spaces}) == 4
    row = by_code[nul_lang]
    row["lang"] = row["lang"][0] + "\x00" + row["lang"][1:]  # "f\x00r": the texts are "fr"
    row = by_code[nul_entry]
    row["ingredients_text"] = [
        {**e, "lang": e["lang"][0] + "\x00" + e["lang"][1:]} if e["lang"] == row["lang"] else e
        for e in row["ingredients_text"]
    ]
    row = by_code[empty]
    row["ingredients_text"] = [
        {**e, "text": " \x00 \x00"} if e["lang"] == "main" else e for e in row["ingredients_text"]
    ]
    row = by_code[spaces]  # Unicode spaces (DuckDB's trim removes them) and a NUL: empty
    row["ingredients_text"] = [
        {**e, "text": "\u3000\x00\u00a0"} if e["lang"] == "main" else e
        for e in row["ingredients_text"]
    ]
    dump = tmp_path / "nul.parquet"
    schema = pq.read_schema(SAMPLE)
    pq.write_table(pa.Table.from_pylist(list(by_code.values()), schema=schema), dump)
    done = _pass(dump, tmp_path / "pass", limit=LIMIT)
    codes = pq.read_table(done.input_path).column("code").to_pylist()
    assert empty not in codes and spaces not in codes
    assert nul_lang in codes and nul_entry in codes
    assert done.facts_path is not None
    from_dump = tmp_path / "from_dump.parquet"
    extract_facts(dump_path=str(dump), input_path=done.input_path, output_path=from_dump)
    facts = {r["code"]: r for r in pq.read_table(done.facts_path).to_pylist()}
    assert facts[nul_lang]["ingredients_text_lang"] is None  # as read from the dump at import
    assert facts[nul_entry]["ingredients_text_lang"] is None
    assert pq.read_table(done.facts_path).equals(pq.read_table(from_dump))
    assert done.counts["nul_cleaned"] == 1  # the lang's NUL (the emptied text is not staged)


def test_the_fast_text_macros_give_the_filtered_lists_entry() -> None:
    """language_text (selection.sql) and plain_ingredients_text (facts.sql) try the first two
    entries before filtering the list: on entries in any order, NULL entries and texts, marked
    entries first, a language holding a NUL, they give what the filter alone gives."""
    from robotoff_batch.extraction import PG_TEXT_MACROS
    from robotoff_batch.job_types.ingredients_spellcheck.imports import PLAIN_TEXT_MACRO_SQL
    from robotoff_batch.job_types.ingredients_spellcheck.selection import _statements

    span = '<span class="allergen">milk</span>'
    entries: list[Any] = [
        {"lang": "main", "text": "a"},
        {"lang": "fr", "text": "b"},
        {"lang": "fr", "text": f"{span} c"},
        {"lang": "en", "text": None},
        None,
        {"lang": None, "text": "d"},
        {"lang": "f\x00r", "text": "e"},
        {"lang": "en", "text": "f"},
    ]
    cases: list[Any] = [None, []]
    for n in range(len(entries)):  # every rotation, and its reverse, of every prefix
        for k in range(n + 1):
            rotated = entries[k : n + 1] + entries[:k]
            cases += [rotated, rotated[::-1]]
    con = duckdb.connect()
    for macro in PG_TEXT_MACROS:
        con.execute(macro)
    con.execute(PLAIN_TEXT_MACRO_SQL)
    con.execute(_statements()["text_macro"])
    con.execute("CREATE TABLE t (texts STRUCT(lang VARCHAR, text VARCHAR)[], language VARCHAR)")
    for texts in cases:
        for language in ("main", "fr", "en", "f\x00r", None):
            con.execute("INSERT INTO t VALUES (?, ?)", [texts, language])
    mismatches = con.sql(
        """SELECT texts, language FROM t
        WHERE language_text(texts, language) IS DISTINCT FROM
            list_filter(texts, lambda x: x.lang = language)[1].text
        OR plain_ingredients_text(texts, language) IS DISTINCT FROM
            list_filter(texts, lambda x: x.lang = language
                AND NOT contains(x.text, '<span class="allergen">'))[1].text"""
    ).fetchall()
    assert con.sql("SELECT count(*) FROM t").fetchall()[0][0] > 300
    assert mismatches == []


def test_nul_cleaned_counts_the_staged_texts_only(tmp_path: Path) -> None:
    """A NUL in the product language's allergen-marked ingredients text (an entry neither file
    stages: the facts hold the plain one) is no staged text cleaned; one in the plain text is."""
    top = _pass(SAMPLE, tmp_path / "clean", limit=LIMIT)
    selected = pq.read_table(top.input_path).to_pylist()
    by_code = {r["code"]: r for r in pq.read_table(SAMPLE).to_pylist()}
    marked, plain = [
        r["code"]
        for r in selected
        if any(
            e["lang"] == r["lang"] and "<span" not in e["text"]
            for e in by_code[r["code"]]["ingredients_text"]
        )
    ][:2]
    row = by_code[marked]
    row["ingredients_text"] = [
        *row["ingredients_text"],
        {"lang": row["lang"], "text": '<span class="allergen">lait\x00</span>'},
    ]
    row = by_code[plain]
    row["ingredients_text"] = [
        {**e, "text": e["text"] + "\x00"} if e["lang"] == row["lang"] else e
        for e in row["ingredients_text"]
    ]
    dump = tmp_path / "nul.parquet"
    pq.write_table(
        pa.Table.from_pylist(list(by_code.values()), schema=pq.read_schema(SAMPLE)), dump
    )
    done = _pass(dump, tmp_path / "pass", limit=LIMIT)
    assert pq.read_table(done.input_path).column("code").to_pylist() == [
        r["code"] for r in selected
    ]
    assert done.counts["nul_cleaned"] == 1
    assert done.facts_path is not None
    facts = {r["code"]: r for r in pq.read_table(done.facts_path).to_pylist()}
    assert "\x00" not in facts[plain]["ingredients_text_lang"]


def test_a_code_of_unicode_spaces_is_invalid(tmp_path: Path) -> None:
    """The pass's code check (a printable ASCII first character skips the trim) is the rule
    `trim(code) <> ''` and no NUL: DuckDB's trim removes Unicode spaces too."""
    table = pq.read_table(SAMPLE)
    rows = table.to_pylist()[:50]
    codes = ["\u00a0", "\u3000 \u00a0", " 7", "\t7", "7\u00a0", "\u00a07"]
    extra = [{**rows[i], "code": code} for i, code in enumerate(codes)]
    dump = tmp_path / "codes.parquet"
    pq.write_table(pa.Table.from_pylist(rows + extra, schema=table.schema), dump)
    done = _pass(dump, tmp_path / "pass")
    assert done.counts["invalid_code_rows"] == 2
    staged = set(pq.read_table(done.input_path).column("code").to_pylist())
    assert not staged & {"\u00a0", "\u3000 \u00a0"}
