"""Benchmark the CPU engine's set-up in a task: from process start to ready to correct.

A task of the ingredients-spellcheck container with the CPU engine (``lexicon-cpu``) loads its
engine (the dump's lexicon, the general word lists) and prepares the languages of its shard
before correcting anything. This measures, in a fresh process per run (the container's own
code: ``spellcheck_job.main.load_engine`` then ``engine.prepare``):

- ``import``: importing the container's modules;
- ``load``: ``load_engine`` (the lexicon file, the word lists' loader and common words);
- ``prepare``: the shard's languages indexed (or, with prebuilt indexes, read back);
- ``correct``: correcting the shard (for scale);

for a task whose shard is the first ``--rows`` products of the shipped sample's selection
(the languages it has), with the lexicon of the sample. ``--code DIR`` runs another checkout's
container code (e.g. before this change), labelled ``--label``. Cases: ``first`` (a fresh index
directory: a task on a machine where nothing was built yet) and ``ready`` (the indexes built,
as in the image or on a second task), ``--repeat`` runs each (median).
Writes ``results/task_setup.json`` and ``.md``.

    .venv/bin/python benchmarks/task_setup_benchmark.py --before /tmp/before
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

PROJECT_ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(PROJECT_ROOT))

from benchmarks.common import (  # noqa: E402
    RESULTS_DIR,
    build_report,
    configure_logging,
    environment,
    generated_line,
    markdown_report,
    run_worker,
    write_report,
)

SAMPLE = PROJECT_ROOT / "data" / "off" / "food_sample_2026.parquet"


def worker(args: argparse.Namespace) -> int:
    started = time.monotonic()
    sys.path.insert(0, str(args.code / "containers" / "ingredients-spellcheck"))
    from spellcheck_job.main import JobConfig, load_engine

    imported = time.monotonic()
    config = JobConfig(
        input_uri=str(args.input),
        output_uri=str(args.input.parent / "out"),
        lexicon_uri=str(args.lexicon),
        engine="lexicon-cpu",
        task_index=0,
        task_count=1,
        batch_size=1000,
        job_id=None,
        model="",
    )
    engine = load_engine(config)
    loaded = time.monotonic()
    # as the container reads its shard (io.read_rows: pq.read_table would import
    # pyarrow.dataset, ~0.5 s the task never spends)
    from spellcheck_job.io import open_parquet, read_rows

    parquet = open_parquet(str(args.input))
    table = read_rows(parquet, 0, parquet.metadata.num_rows, ["lang", "text"])
    langs, texts = table.column("lang").to_pylist(), table.column("text").to_pylist()
    ready = engine.prepare(langs)  # type: ignore[attr-defined]
    prepared = time.monotonic()
    engine.correct_batch(texts, langs)
    corrected = time.monotonic()
    print(
        json.dumps(
            {
                "import_s": imported - started,
                "load_s": loaded - imported,
                "prepare_s": prepared - loaded,
                "setup_s": prepared - started,
                "correct_s": corrected - prepared,
                "languages": ready,
                "texts": len(texts),
            }
        )
    )
    return 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", type=int, default=1000)
    parser.add_argument("--repeat", type=int, default=3)
    cases = ("first", "ready")
    parser.add_argument("--cases", nargs="+", choices=cases, default=list(cases))
    parser.add_argument("--before", type=Path, default=None, help="code before, run beside")
    parser.add_argument("--results-dir", type=Path, default=RESULTS_DIR)
    parser.add_argument("--worker", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--code", type=Path, default=PROJECT_ROOT, help=argparse.SUPPRESS)
    parser.add_argument("--input", type=Path, help=argparse.SUPPRESS)
    parser.add_argument("--lexicon", type=Path, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.worker:
        return worker(args)
    configure_logging()
    import duckdb
    import pyarrow.parquet as pq

    from robotoff_batch.job_types.ingredients_spellcheck import extract_spellcheck_products
    from robotoff_batch.job_types.ingredients_spellcheck.lexicon import build_lexicon

    work = Path(tempfile.mkdtemp(prefix="task-setup-"))
    task_input = work / "input.parquet"
    lexicon = work / "lexicon.parquet"
    extract_spellcheck_products(
        dump_path=str(SAMPLE),
        output_path=task_input,
        limit=args.rows,
        min_fraction=0.0,
        max_fraction=0.4,
    )
    pq.write_table(build_lexicon(duckdb.connect(), str(SAMPLE)), lexicon)
    codes: list[tuple[str, Path]] = [("this branch", PROJECT_ROOT)]
    if args.before is not None:
        codes.insert(0, ("before", args.before))
    results: list[dict[str, Any]] = []
    for label, code in codes:
        for case in args.cases:
            index = work / f"index-{label.replace(' ', '-')}"
            runs = []
            for i in range(args.repeat):
                env_dir = index / str(i) if case == "first" else index / "shared"
                os.environ["WORDINDEX_DIR"] = str(env_dir)
                cmd = [
                    sys.executable,
                    __file__,
                    "--worker",
                    "--code",
                    str(code),
                    "--input",
                    str(task_input),
                    "--lexicon",
                    str(lexicon),
                ]
                if case == "ready" and i == 0:
                    run_worker(cmd)  # builds the shared indexes, not timed
                runs.append(run_worker(cmd))
            setup = [r["setup_s"] for r in runs]
            results.append(
                {
                    "code": label,
                    "case": case,
                    "setup_s": setup,
                    "median_setup_s": statistics.median(setup),
                    "median": {
                        k: statistics.median(r[k] for r in runs)
                        for k in ("import_s", "load_s", "prepare_s", "correct_s")
                    },
                    "languages": runs[0]["languages"],
                    "texts": runs[0]["texts"],
                }
            )
    env = environment(
        rows=args.rows,
        repeat=args.repeat,
        load_average=" ".join(f"{x:.2f}" for x in os.getloadavg()),
    )

    def to_markdown(report: dict) -> str:
        rows = [
            "| code | case | set-up s (median) | runs | import | load | prepare | correct | "
            "languages |",
            "|---|---|---:|---|---:|---:|---:|---:|---|",
        ]
        for r in report["results"]:
            m = r["median"]
            rows.append(
                f"| {r['code']} | {r['case']} | {r['median_setup_s']:.2f} | "
                f"{', '.join(f'{s:.2f}' for s in r['setup_s'])} | {m['import_s']:.2f} | "
                f"{m['load_s']:.2f} | {m['prepare_s']:.2f} | {m['correct_s']:.2f} | "
                f"{len(r['languages'])}: {' '.join(r['languages'])} |"
            )
        e = report["environment"]
        return markdown_report(
            "# CPU engine task set-up (lexicon-cpu: process start to ready to correct)",
            [
                f"{generated_line(report)}; a task of the first {e['rows']:,} products of the "
                f"2026 sample's selection, the sample's lexicon; load average at the end "
                f"{e['load_average']}. {e['repeat']} fresh processes per case (median). "
                "first = nothing built yet (a fresh index directory); ready = the per-language "
                "indexes built (the image's, or a previous task's). before = the code of "
                "--before "
                "(its container code, with this script).",
            ],
            rows,
        )

    write_report(build_report(env, results), args.results_dir, "task_setup", to_markdown)
    return 0


if __name__ == "__main__":
    sys.exit(main())
