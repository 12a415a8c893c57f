"""The v2 CPU spellcheck engine and its word-list sources, offline (no package, no network)."""

from __future__ import annotations

import gzip
import re
import sys
from pathlib import Path

import pyarrow.parquet as pq
import pytest

from robotoff_batch.paths import CONTAINERS_DIR

sys.path.insert(0, str(CONTAINERS_DIR / "ingredients-spellcheck"))

from spellcheck_job import wordlists  # noqa: E402
from spellcheck_job.wordfreq_cpu import (  # noqa: E402
    DEFAULT_RULES,
    RULES,
    DeleteIndex,
    Settings,
    WordFreqSpellchecker,
    food_from_rows,
    general_lists,
)


def _pack(value: object) -> bytes:
    """A tiny MessagePack encoder for the test's fake wordfreq files."""
    if isinstance(value, dict):
        out = bytes([0x80 | len(value)])
        for k, v in value.items():
            out += _pack(k) + _pack(v)
        return out
    if isinstance(value, list):
        n = len(value)
        head = bytes([0x90 | n]) if n < 16 else b"\xdc" + n.to_bytes(2, "big")
        return head + b"".join(_pack(v) for v in value)
    if isinstance(value, str):
        raw = value.encode()
        return (bytes([0xA0 | len(raw)]) if len(raw) < 32 else b"\xd9" + bytes([len(raw)])) + raw
    if isinstance(value, int):
        return bytes([value]) if 0 <= value < 128 else b"\xcd" + value.to_bytes(2, "big")
    raise TypeError(value)


def _fake_wordfreq(folder: Path, lang: str, buckets: dict[int, list[str]], kind: str) -> None:
    size = max(buckets) + 1
    data = [{"format": "cB", "version": 1}, *[buckets.get(i, []) for i in range(size)]]
    (folder / f"{kind}_{lang}.msgpack.gz").write_bytes(gzip.compress(_pack(data)))


def test_wordlists_build_reads_wordfreq_files_offline(tmp_path: Path) -> None:
    src = tmp_path / "wordfreq_data"
    src.mkdir()
    # bucket i = Zipf 9 - i/100: 300 -> 6.0, 500 -> 4.0, 850 -> 0.5 (below the cut)
    _fake_wordfreq(
        src, "fr", {300: ["de", "Sucre"], 500: ["crème", "e330", "l'eau"], 850: ["x"]}, "large"
    )
    _fake_wordfreq(src, "ro", {400: ["apă", "şi"]}, "small")
    out = tmp_path / "lists.parquet"
    sizes = wordlists.build(src, out, langs=["fr", "ro", "xx"], min_zipf=1.0)
    assert sizes == {"fr": 3, "ro": 2}  # digits and apostrophes dropped, Zipf < 1 cut
    loaded = wordlists.load(out)
    assert loaded["fr"] == {"de": 6.0, "sucre": 6.0, "crème": 4.0}
    assert loaded["ro"]["apă"] == 5.0
    assert pq.ParquetFile(out).num_row_groups == 2  # one per language
    load, common, langs = general_lists(out, foreign_zipf=5.0)
    assert langs == ["fr", "ro"] and load("fr")["crème"] == 4.0 and load("de") == {}
    assert common == {"de", "sucre", "apă", "şi"}


def test_unpack_handles_the_msgpack_subset() -> None:
    value = [{"format": "cB", "version": 1}, ["a" * 40, "é"], list(range(20)), [300]]
    assert wordlists.unpack(_pack(value)) == value


def test_shipped_word_lists_cover_the_main_languages() -> None:
    load, common, langs = general_lists()
    assert {"en", "fr", "de", "es", "it", "nl", "pt", "ro", "el"} <= set(langs)
    fr = load("fr")
    assert fr["crème"] > fr.get("creme", 0) + 1 and fr["sucre"] > 4
    assert "sugar" in common and "zucker" in common
    assert wordlists.DEFAULT_PATH.stat().st_size < 16 * 2**20


def test_delete_index_finds_distance_one_words() -> None:
    index = DeleteIndex(["gluten", "sucre", "farine"])
    assert "gluten" in index.get("gluen")  # a deletion of "gluten"
    assert "sucre" in index.get("sucre")
    assert index.get("zzzz") == []


GENERAL = {
    "fr": {
        "de": 7.5,
        "crème": 4.4,
        "creme": 2.9,
        "blé": 4.1,
        "ble": 2.7,
        "gluten": 3.4,
        "sucre": 4.5,
        "graines": 3.5,
        "palais": 4.5,
        "panais": 2.5,
        "son": 6.0,
        "peut": 6.2,
        "ogm": 3.6,
        "contenir": 4.0,
        "mais": 6.0,
        "maïs": 3.5,
        "germés": 1.5,
        "germes": 3.3,
        "beurre": 4.2,
        "lait": 4.6,
        "pétales": 3.4,
        "tournesol": 3.6,
        "carbonate": 2.9,
        "olive": 4.0,
        "huile": 4.0,
        "sel": 4.5,
    },
    "en": {
        "starch": 3.5,
        "search": 5.2,
        "sugar": 4.9,
        "water": 5.3,
        "flour": 4.2,
        "zymurgy": 1.2,
        "mono": 3.5,
        "and": 7.4,
        "monoglycerides": 1.2,
        "diglycerides": 1.5,
        "coogulant": 1.1,
        "coagulant": 2.6,
    },
    "de": {"weizen": 3.0, "mehl": 3.2, "und": 7.0, "zucker": 4.0},
    "es": {"vainilla": 3.2, "sódico": 2.9, "sodico": 1.0},
    "ro": {"și": 6.5, "conținut": 4.0, "apă": 5.5},
}
FOOD = {"fr": {"carraghénanes": 3}, "en": {"starch": 12, "carrageenan": 2}}


@pytest.fixture(scope="module")
def engine() -> WordFreqSpellchecker:
    """Every rule on (the defaults switch some off: see test_defaults_...)."""
    return WordFreqSpellchecker(FOOD, GENERAL, Settings(rules=RULES))


def test_engine_restores_accents_only_toward_a_far_more_frequent_form(
    engine: WordFreqSpellchecker,
) -> None:
    assert engine.correct("creme, ble, mais", "fr") == "crème, blé, mais"
    assert engine.correct("CREME.", "fr") == "CRÈME."
    assert engine.correct("germés", "fr") == "germés"  # an accent is never removed
    assert engine.correct("pêtales.", "fr") == "pétales."  # a wrong accent is replaced
    assert engine.correct("sodico.", "es") == "sódico."


def test_engine_corrects_unknown_words_toward_frequent_and_food_words(
    engine: WordFreqSpellchecker,
) -> None:
    assert engine.correct("gluen.", "fr") == "gluten."
    # "sgarch" is one edit from "starch" (food) and "search" (more common): food wins
    assert engine.correct("corn sgarch.", "en") == "corn starch."
    # a word the language attests is never typo-corrected ("panais" is not "palais")
    assert engine.correct("panais", "fr") == "panais"
    assert engine.correct("coogulant", "en") == "coogulant"  # rare (hashed) but attested


def test_engine_never_changes_food_words_or_text_it_cannot_judge(
    engine: WordFreqSpellchecker,
) -> None:
    text = "carraghénanes, E330, 5e, carrageenan, McCain"
    assert engine.correct(text, "fr") is text or engine.correct(text, "fr") == text
    assert engine.correct("creme", None) == "creme"
    assert engine.correct("creme", "xx") == "creme"
    untouched = "  sucre ,  lait\n(12%) "
    assert engine.correct(untouched, "fr") == untouched


def test_engine_splits_glued_words_and_spaces_glued_punctuation(
    engine: WordFreqSpellchecker,
) -> None:
    assert engine.correct("traces degluten.", "fr") == "traces de gluten."
    assert engine.correct("grainesde.", "fr") == "graines de."
    assert engine.correct("beurreAOP.", "fr") == "beurre AOP."
    assert engine.correct("blé,son", "fr") == "blé, son"
    assert engine.correct("OGM.Peut contenir", "fr") == "OGM. Peut contenir"
    assert engine.correct("0,4 g,x", "fr") == "0,4 g,x"  # numbers and unknown words: kept
    assert engine.correct("www.sucre.fr", "fr") == "www.sucre.fr"


def test_engine_joins_hyphenated_words_and_normalises_romanian(
    engine: WordFreqSpellchecker,
) -> None:
    assert engine.correct("Weizen - mehl", "de") == "Weizenmehl"
    assert engine.correct("Zucker - und", "de") == "Zucker - und"
    # overlapping pairs: "tournesol - carbo" is no word, "carbo - nate" is
    assert engine.correct("tournesol - carbo - nate", "fr") == "tournesol - carbonate"
    # a suspended hyphen: "monoglycerides" is an (even rare) English word
    assert engine.correct("mono - and diglycerides", "en") == "mono- and diglycerides"
    assert engine.correct("sugar - and water", "en") == "sugar - and water"
    assert engine.correct("conţinut şi apă", "ro") == "conținut și apă"


def test_engine_keeps_common_words_of_other_languages(engine: WordFreqSpellchecker) -> None:
    # "vainilla" is common in Spanish: kept in an English text of a multilingual pack
    assert engine.correct("vainilla", "en") == "vainilla"


def test_engine_counts_its_corrections() -> None:
    fresh = WordFreqSpellchecker(FOOD, GENERAL, Settings(rules=RULES))
    out = fresh.correct_batch(["creme, ble.", None, "sucre,lait, sel."], ["fr", "fr", "fr"])
    assert out == ["crème, blé.", None, "sucre, lait, sel."]
    assert fresh.corrections == 3  # two words, one space
    assert fresh.prepare(["fr", "FR", None, "xx"]) == ["fr"]


def test_food_from_rows_lowercases_and_drops_rows_without_language() -> None:
    rows = [("FR", "Sucre", 2), ("fr", "sucre", 1), (None, "lait", 5), ("en", "", 1)]
    assert food_from_rows(rows) == {"fr": {"sucre": 3}}


def test_engine_log_line_keeps_the_pipeline_benchmark_format() -> None:
    """The container's summary line still matches the regex pipeline_benchmark.py reads."""
    root = CONTAINERS_DIR.parent
    bench = (root / "benchmarks" / "pipeline_benchmark.py").read_text()
    pattern = re.search(r'_ENGINE_LOG = re.compile\(r"([^"]+)"\)', bench)
    main = (CONTAINERS_DIR / "ingredients-spellcheck" / "spellcheck_job" / "main.py").read_text()
    fmt = re.search(r'"(corrected %d texts[^"]*)"', main)
    assert pattern is not None and fmt is not None
    line = fmt.group(1) % (10, 3, 0.5, 4)
    match = re.search(pattern.group(1), line)
    assert match is not None and match.groups() == ("10", "3", "0.50")
    assert "4 corrections" in line


def test_engine_never_changes_protected_tokens(engine: WordFreqSpellchecker) -> None:
    # the last word of a text may be cut off ("LECITH" of "LECITHIN"): never corrected
    assert engine.correct("gluen, sucre", "fr") == "gluten, sucre"
    assert engine.correct("sucre, gluen", "fr") == "sucre, gluen"
    assert engine.correct("sucre, gluen  ", "fr") == "sucre, gluen  "
    # a code's letters ("ble 330"), a unit, a short word after a number
    assert engine.correct("ble 330, sel.", "fr") == "ble 330, sel."
    assert engine.correct("ble-330, sel.", "fr") == "ble-330, sel."
    assert engine.correct("5 ble, sel.", "fr") == "5 ble, sel."
    assert engine.correct("ble, sel.", "fr") == "blé, sel."
    # an elided article is not a typo: "dolive" is "d'olive", not "olive"
    assert engine.correct("huile dolive, sel.", "fr") == "huile dolive, sel."


def test_engine_leaves_enumeration_commas_alone(engine: WordFreqSpellchecker) -> None:
    # commas without spaces all along are the text's style
    assert engine.correct("sucre,lait,sel.", "fr") == "sucre,lait,sel."
    # one glued comma among spaced ones is a slip
    assert engine.correct("sucre,lait, sel.", "fr") == "sucre, lait, sel."


def test_engine_skips_texts_not_in_their_language(engine: WordFreqSpellchecker) -> None:
    # most words unknown to French: a mislabelled text or OCR debris, no word corrected
    assert engine.correct("creme xqzt wvyk prrt.", "fr") == "creme xqzt wvyk prrt."
    assert engine.correct("creme sucre lait xqzt.", "fr") == "crème sucre lait xqzt."


def test_engine_reports_rule_and_confidence_and_applies_the_threshold() -> None:
    every = WordFreqSpellchecker(FOOD, GENERAL, Settings(rules=RULES))
    text, details = every.correct_detailed("creme, gluen, sucre,lait, sel.", "fr")
    assert text == "crème, gluten, sucre, lait, sel."
    rules = {d.rule: d for d in details}
    assert set(rules) == {"accent", "typo", "punctuation"}
    assert rules["accent"].before == "creme" and rules["accent"].after == "crème"
    assert all(0.5 < d.confidence <= 1.0 for d in details)
    # a frequent target far above the word as written is surer than a rarer one
    assert rules["accent"].confidence > 0.9
    strict = WordFreqSpellchecker(FOOD, GENERAL, Settings(rules=RULES, min_confidence=0.999))
    assert strict.correct_detailed("creme, gluen, sel.", "fr") == ("creme, gluen, sel.", [])
    accents = WordFreqSpellchecker(FOOD, GENERAL, Settings(rules=frozenset({"accent"})))
    assert accents.correct("creme, gluen, sucre,lait, sel.", "fr") == (
        "crème, gluen, sucre,lait, sel."
    )


def test_defaults_are_the_rules_that_held_out_of_fold() -> None:
    assert Settings().rules == DEFAULT_RULES
    assert {"glued", "punctuation"}.isdisjoint(DEFAULT_RULES)
    assert {"accent", "typo", "ocr", "join", "romanian"} <= DEFAULT_RULES
    default = WordFreqSpellchecker(FOOD, GENERAL)
    # punctuation off; accents and typos on
    assert default.correct("creme, gluen, sucre,lait, sel.", "fr") == (
        "crème, gluten, sucre,lait, sel."
    )


def test_accents_follow_the_marks_the_writer_typed() -> None:
    general = {
        "ro": {
            "băutură": 4.2,
            "băutura": 3.8,
            "bautura": 3.4,
            "făină": 3.8,
            "faină": 3.7,
            "zahăr": 4.0,
            "răcoritoare": 3.5,
            "racoritoare": 2.4,
            "apă": 5.5,
        },
    }
    engine = WordFreqSpellchecker({}, general, Settings(rules=RULES))
    # a writer who types marks left the other letters bare: only the marked letter changes;
    # "bautură" is unknown and a short list never drops a mark ("bautura"): unchanged
    assert engine.correct("Bauturà racoritoare, apă.", "ro") == "Bauturà răcoritoare, apă."
    # a wrong mark (ä for ă) is likelier than a mark written where none is meant (faină)
    assert engine.correct("fäină, zahär, apă.", "ro") == "făină, zahăr, apă."


def test_short_fragments_of_common_words_get_no_typo_fix() -> None:
    general = {
        "en": {
            "irish": 4.5,
            "british": 5.2,
            "salt": 4.6,
            "agar": 3.0,
            "cigar": 3.6,
            "sugar": 4.9,
            "mint": 4.0,
            "milk": 4.8,
            "suet": 3.0,
            "zymurgy": 1.2,
        },
    }
    engine = WordFreqSpellchecker({}, general, Settings(rules=RULES))
    # "itish" ends "british", "igar" ends "cigar": a word cut off, not a typo of a neighbour
    assert engine.correct("mint, itish salt, milk.", "en") == "mint, itish salt, milk."
    assert engine.correct("mint, Igar, salt, milk.", "en") == "mint, Igar, salt, milk."
    # a short typo that is no fragment is still corrected
    assert engine.correct("mint, sgar, salt, milk.", "en") == "mint, sugar, salt, milk."


def test_words_glued_to_a_slash_are_left_alone(engine: WordFreqSpellchecker) -> None:
    # "Jtab/e": OCR debris; "sucre/gluen": a notation; no guess either side of the slash
    assert engine.correct("gluen/e, sel.", "fr") == "gluen/e, sel."
    assert engine.correct("sucre/gluen, sel.", "fr") == "sucre/gluen, sel."
    assert engine.correct("sucre gluen, sel.", "fr") == "sucre gluten, sel."


def _sample_texts() -> tuple[list[str], list[str]]:
    """Real texts to correct: the 2026 sample's main texts and OFF's dev benchmark rows."""
    import json

    import duckdb

    rows = duckdb.sql(
        "SELECT list_filter(ingredients_text, lambda x: x.lang = 'main')[1].text AS t, lang "
        "FROM read_parquet($p) WHERE t IS NOT NULL",
        params={"p": str(SAMPLE_DUMP)},
    ).fetchall()
    texts, langs = [r[0] for r in rows], [r[1] for r in rows]
    dev = Path("/work/shared/data/spellcheck/benchmark_dev.jsonl")
    if not dev.exists():
        dev = Path(__file__).resolve().parent.parent / "data" / "spellcheck" / "benchmark_dev.jsonl"
    for line in dev.read_text(encoding="utf-8").splitlines() if dev.exists() else []:
        row = json.loads(line)
        text = row.get("original") or row.get("text")
        if text:
            texts.append(text)
            langs.append(row.get("lang"))
    return texts, langs


SAMPLE_DUMP = Path(__file__).resolve().parent.parent / "data" / "off" / "food_sample_2026.parquet"
LANGS = ("fr", "en", "de", "es", "ro")  # a big list each, and one small one


def test_prebuilt_indexes_correct_exactly_as_building_them(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Indexes built once and read back (word_index) give the engine that building them in
    the task gives, text for text; a task loads only its texts' languages."""
    import duckdb
    from spellcheck_job.wordfreq_cpu import load_language, prebuilt_lists
    from spellcheck_job.wordlists import DEFAULT_PATH

    from robotoff_batch.job_types.ingredients_spellcheck.lexicon import build_lexicon

    monkeypatch.setenv("WORDINDEX_DIR", str(tmp_path / "index"))
    lexicon = build_lexicon(duckdb.connect(), str(SAMPLE_DUMP)).to_pydict()
    food = food_from_rows(zip(lexicon["lang"], lexicon["word"], lexicon["n"], strict=True))
    pairs = [(t, lang) for t, lang in zip(*_sample_texts(), strict=True) if lang in LANGS]
    texts, langs = [t for t, _ in pairs], [lang for _, lang in pairs]
    load, common, _ = general_lists()
    built = WordFreqSpellchecker(food, load, foreign_common=common)
    expected = built.correct_batch(texts, langs)
    # enough corrected texts for the comparison to mean something (the default rules)
    assert sum(a != b for a, b in zip(texts, expected, strict=True)) > 20
    for attempt in ("builds and writes", "reads"):
        prebuilt, hashed, _ = prebuilt_lists()
        engine = WordFreqSpellchecker(
            food,
            lambda lang: load_language(DEFAULT_PATH, lang),
            foreign_common=hashed,
            prebuilt=prebuilt,
        )
        ready = engine.prepare(["fr", "en"])
        assert ready == ["en", "fr"] and sorted(engine._languages) == ["en", "fr"], attempt
        assert engine.correct_batch(texts, langs) == expected, attempt
    written = sorted(p.name for p in next((tmp_path / "index").iterdir()).iterdir())
    assert "fr" in written and "common.arrow" in written
