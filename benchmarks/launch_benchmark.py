"""Benchmark the ingredients-spellcheck launch step against the bare DuckDB selection, side by side.

On a generated OFF dump (``generate_dump.py``; 1M rows by default), each case runs in a fresh
subprocess (its own peak RSS, VmHWM) and repeats ``--repeat`` times (median):

- ``bare-selection``: Robotoff's selection query alone (``BARE_SELECTION_SQL``, the query as
  Robotoff writes it, no dedup, no cleaning), DuckDB straight to Parquet: the floor;
- ``bare-selection-facts``: the same query carrying the columns the launch also stages (the
  facts' source) to the same file: the launch's output without its rules;
- ``launch-vllm``: the launch step's work for the production (vLLM) job: the job type's
  extraction (one pass: selection, facts; products.parquet written) then staging of its files
  on a ``file://`` staging area (submission, a few ms on any engine, is not included);
- ``launch-cpu-new-dump``: the same with the CPU engine on a dump whose lexicon is not cached
  (a fresh ``ROBOTOFF_BATCH_HOME`` per repeat): the lexicon is counted in the pass;
- ``launch-cpu-cached``: the CPU engine with the lexicon already cached for the dump.

``--rounds N`` interleaves instead: N rounds, each one run of every case (and of ``--before``),
each in a fresh process, so a load that changes during the run weighs on all cases alike.

``--code DIR`` runs the launch cases with another checkout's ``robotoff_batch`` (e.g. the code
before this change, ``git archive <commit> robotoff_batch | tar -x -C DIR``), labelled
``--label``; the bare selection is the same in both. Writes ``results/launch.json`` and
``results/launch.md`` (``--name``).

    .venv/bin/python benchmarks/launch_benchmark.py --size 1_000_000
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import statistics
import subprocess
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
    max_rss_bytes,
    mib,
    run_worker,
    write_report,
)

logger = logging.getLogger("launch_benchmark")

# Robotoff's selection (robotoff/batch/__init__.py::extract_from_dataset) for DuckDB >= 2.0,
# with Robotoff's defaults: what a launch cannot be faster than. The limit is a literal, as
# Robotoff writes it (an f-string, robotoff/batch/__init__.py:158-173): DuckDB plans a Top-N
# only for a constant limit.
BARE_SELECTION_SQL = """
WITH products AS (
    SELECT code, lang,
        list_filter(ingredients_text, lambda x: x.lang = 'main')[1].text AS text,
        coalesce(
            nullif(trim(list_filter(product_name, lambda x: x.lang = 'main')[1].text), ''),
            nullif(trim(list_filter(product_name, lambda x: x.lang = p.lang)[1].text), '')
        ) AS product_name,
        popularity_key,
        CAST(unknown_ingredients_n AS DOUBLE) / ingredients_n AS fraction
    FROM read_parquet($dump_path) AS p
    WHERE code IS NOT NULL AND ingredients_n > 0 AND unknown_ingredients_n IS NOT NULL
)
SELECT CAST(code AS VARCHAR) AS code, CAST(lang AS VARCHAR) AS lang,
    CAST(text AS VARCHAR) AS text, CAST(product_name AS VARCHAR) AS product_name,
    CAST(popularity_key AS BIGINT) AS popularity_key, CAST(fraction AS DOUBLE) AS fraction
FROM products
WHERE text IS NOT NULL AND trim(text) <> '' AND fraction > 0.0 AND fraction <= 0.4
ORDER BY popularity_key DESC NULLS LAST, code
LIMIT {limit}
"""

# The same query carrying, to the same output file, the columns the launch also stages (the
# facts' source: the product language's ingredients texts, countries, brands, scans,
# modification time): a floor with the launch's output but none of its rules (one row per
# barcode, NUL removed, counts), to tell the cost of the output from that of the rules.
BARE_WITH_FACTS_SQL = BARE_SELECTION_SQL.replace(
    "CAST(unknown_ingredients_n AS DOUBLE) / ingredients_n AS fraction\n",
    "CAST(unknown_ingredients_n AS DOUBLE) / ingredients_n AS fraction,\n"
    "        list_filter(ingredients_text, lambda x: x.lang = p.lang) AS f_ingredients_text,\n"
    "        countries_tags, brands_tags, unique_scans_n, last_modified_t\n",
).replace(
    "CAST(fraction AS DOUBLE) AS fraction\n",
    "CAST(fraction AS DOUBLE) AS fraction, f_ingredients_text, countries_tags, brands_tags,\n"
    "    unique_scans_n, last_modified_t\n",
)

CASES = (
    "bare-selection",
    "bare-selection-facts",
    "launch-vllm",
    "launch-cpu-new-dump",
    "launch-cpu-cached",
)


def _one(case: str, dump: str, limit: int, tmp: Path, memory_limit: str) -> dict[str, Any]:
    """One run of ``case``; returns its seconds and what it wrote."""
    if case in ("bare-selection", "bare-selection-facts"):
        from robotoff_batch.extraction import extract_to_parquet

        started, cpu = time.monotonic(), time.process_time()
        result = extract_to_parquet(
            dump_path=dump,
            sql=(BARE_SELECTION_SQL if case == "bare-selection" else BARE_WITH_FACTS_SQL).format(
                limit=int(limit)
            ),
            params={},
            output_path=tmp / "bare.parquet",
            memory_limit=memory_limit,
        )
        return {
            "seconds": time.monotonic() - started,
            "cpu_s": time.process_time() - cpu,
            "rows": result.rows,
            "files": 1,
        }
    try:
        from robotoff_batch.batch.submit import stage_files
    except ImportError:  # code before the pipeline module's split
        from robotoff_batch.pipeline import stage_files  # type: ignore[no-redef]
    from robotoff_batch.config.loader import load_job_config
    from robotoff_batch.job_types import load_registry
    from robotoff_batch.paths import JOB_CONFIGS_DIR
    from robotoff_batch.staging import staging_from_uri

    registered = load_registry()["ingredients-spellcheck"]
    jt = registered.job_type
    config = load_job_config(JOB_CONFIGS_DIR / "ingredients-spellcheck.yaml").config
    if case != "launch-vllm":  # the local runner's config: the CPU engine
        config = jt.config_for_local_runner(config)
    params = jt.launch_config(limit=limit)
    out = tmp / f"out-{time.monotonic_ns()}"
    staging = staging_from_uri((tmp / "staging").as_uri())
    started, cpu = time.monotonic(), time.process_time()
    extracted = jt.extract(dump, params, config, out)
    extract_s = time.monotonic() - started
    stage_files(
        staging=staging,
        job_type=jt.name,
        job_id=f"bench-{time.monotonic_ns()}",
        files=extracted.files,
    )
    seconds = time.monotonic() - started
    meta = {k: v for k, v in extracted.metadata.items() if isinstance(v, (int, float, str))}
    return {
        "seconds": seconds,
        "cpu_s": time.process_time() - cpu,
        "extract_s": extract_s,
        "rows": extracted.rows,
        "files": len(extracted.files),
        "metadata": meta,
    }


def worker(args: argparse.Namespace) -> int:
    """Run one case ``repeat`` times in this process; print a JSON line with the figures."""
    if args.code is not None:  # another checkout's robotoff_batch, before this project's
        sys.path.insert(0, str(args.code))
    runs = []
    os.environ["ROBOTOFF_BATCH_LAUNCH_MEMORY_LIMIT"] = args.memory_limit
    with tempfile.TemporaryDirectory(dir=args.tmp_dir) as tmp:
        home = Path(tmp) / "home"
        if args.case == "launch-cpu-cached":  # the lexicon cached beforehand, not timed
            os.environ["ROBOTOFF_BATCH_HOME"] = str(home)
            _one("launch-cpu-new-dump", str(args.dump), args.limit, Path(tmp), args.memory_limit)
        for i in range(args.repeat):
            if args.case == "launch-cpu-new-dump":  # a new dump: nothing cached
                os.environ["ROBOTOFF_BATCH_HOME"] = str(home / str(i))
            elif args.case != "launch-cpu-cached":
                os.environ["ROBOTOFF_BATCH_HOME"] = str(home)
            runs.append(_one(args.case, str(args.dump), args.limit, Path(tmp), args.memory_limit))
    print(json.dumps({"runs": runs, "peak_rss_bytes": max_rss_bytes()}))
    return 0


def run_case(args: argparse.Namespace, dump: Path, case: str, code: Path | None) -> dict:
    cmd = [
        sys.executable,
        __file__,
        "--worker",
        "--dump",
        str(dump),
        "--case",
        case,
        "--repeat",
        str(args.repeat),
        "--limit",
        str(args.limit),
        "--memory-limit",
        args.memory_limit,
    ]
    if args.tmp_dir:
        cmd += ["--tmp-dir", str(args.tmp_dir)]
    if code is not None:
        cmd += ["--code", str(code)]
    return run_worker(cmd)


def to_markdown(report: dict) -> str:
    env = report["environment"]
    floor = next(r for r in report["results"] if r["case"] == "bare-selection")["median_s"]
    table = [
        "| code | case | products | median s | runs s | × bare selection | CPU s | peak RSS |",
        "|---|---|---:|---:|---|---:|---:|---:|",
    ]
    for r in report["results"]:
        runs = ", ".join(f"{s:.2f}" for s in r["seconds"])
        table.append(
            f"| {r['code']} | {r['case']} | {r['rows']:,} | {r['median_s']:.2f} | {runs} "
            f"| {r['median_s'] / floor:.2f} | {r.get('cpu_s', 0.0):.2f} "
            f"| {mib(r['peak_rss_bytes'])} |"
        )
    return markdown_report(
        "# Launch benchmark (ingredients-spellcheck: the launch step against the bare selection)",
        [
            f"{generated_line(report)}; dump {env['dump_rows']:,} rows ({mib(env['dump_bytes'])}, "
            f"benchmarks/generate_dump.py seed {env['seed']}), limit {env['limit']:,}, "
            f"DuckDB memory_limit {env['memory_limit']}, load average at start "
            f"{env['load_average']}, at the end {env.get('load_average_end', '?')}. "
            + (
                f"Interleaved: {env['repeat']} rounds, each one fresh process per case in this "
                "order (median of the rounds). "
                if env.get("interleaved")
                else "One fresh process per case, cases in this order, "
                f"{env['repeat']} runs each (median). "
            )
            + "Data: Open Food Facts contributors, ODbL 1.0.",
            "launch = the job type's extraction (selection + facts [+ lexicon]) and the staging "
            "of its files (file://); bare selection = Robotoff's query alone to Parquet. "
            "launch-cpu-new-dump counts the CPU engine's lexicon (a fresh cache each run).",
        ],
        table,
    )


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    to_int = lambda s: int(s.replace("_", ""))  # noqa: E731
    parser.add_argument("--size", type=to_int, default=1_000_000)
    parser.add_argument("--seed", type=int, default=42)
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--limit", type=to_int, default=10_000)
    parser.add_argument("--memory-limit", default="1GB")
    parser.add_argument("--cases", nargs="+", choices=CASES, default=list(CASES))
    parser.add_argument("--code", type=Path, default=None, help="another checkout's code")
    parser.add_argument("--label", default="this branch")
    parser.add_argument("--before", type=Path, default=None, help="code to run beside, 'before'")
    parser.add_argument("--before-repeat", type=int, default=1)
    parser.add_argument(
        "--rounds",
        type=int,
        default=0,
        help="interleave: N rounds of one run per case (each a fresh process), not --repeat "
        "runs of a case in a row (steadier ratios on a shared machine)",
    )
    parser.add_argument("--dumps-dir", type=Path, default=None)
    parser.add_argument("--results-dir", type=Path, default=RESULTS_DIR)
    parser.add_argument("--name", default="launch")
    parser.add_argument("--tmp-dir", type=Path, default=None)
    parser.add_argument("--worker", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--dump", type=Path, help=argparse.SUPPRESS)
    parser.add_argument("--case", choices=CASES, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.worker:
        return worker(args)

    configure_logging()
    if args.dumps_dir is None:
        from robotoff_batch.paths import home_dir

        args.dumps_dir = home_dir() / "benchmarks"
    import pyarrow.parquet as pq

    dump = args.dumps_dir / f"food_generated_{args.size}_seed{args.seed}.parquet"
    if not (dump.exists() and pq.ParquetFile(dump).metadata.num_rows == args.size):
        logger.info("generating %s", dump)
        subprocess.run(
            [
                sys.executable,
                str(Path(__file__).with_name("generate_dump.py")),
                str(args.size),
                str(dump),
                "--seed",
                str(args.seed),
            ],
            check=True,
        )
    load = os.getloadavg()
    results = []
    plan: list[tuple[str, Path | None, str, int]] = []
    for case in args.cases:
        plan.append((args.label, args.code, case, args.repeat))
        if args.before is not None and not case.startswith("bare-selection"):
            plan.append(("before", args.before, case, args.before_repeat))
    if args.rounds:  # interleaved: round after round, one fresh process per case and run
        plan = [(label, code, case, 1) for label, code, case, _ in plan]
    gathered: dict[tuple[str, str], dict[str, Any]] = {}
    for _ in range(args.rounds or 1):
        for label, code, case, repeat in plan:
            logger.info("%s: %s (%d runs)", label, case, repeat)
            saved = args.repeat
            args.repeat = repeat
            figures = run_case(args, dump, case, code)
            args.repeat = saved
            into = gathered.setdefault((label, case), {"runs": [], "peak_rss_bytes": 0})
            into["runs"] += figures["runs"]
            into["peak_rss_bytes"] = max(into["peak_rss_bytes"], figures["peak_rss_bytes"])
    for (label, case), figures in gathered.items():
        seconds = [float(r["seconds"]) for r in figures["runs"]]
        row = {
            "code": label,
            "case": case,
            "rows": figures["runs"][0]["rows"],
            "seconds": seconds,
            "median_s": statistics.median(seconds),
            "extract_s": [r.get("extract_s") for r in figures["runs"]],
            "cpu_s": statistics.median(float(r.get("cpu_s", 0.0)) for r in figures["runs"]),
            "metadata": figures["runs"][0].get("metadata", {}),
            "peak_rss_bytes": figures["peak_rss_bytes"],
        }
        logger.info(
            "%s %s: %.2f s median, peak RSS %s",
            label,
            case,
            row["median_s"],
            mib(row["peak_rss_bytes"]),
        )
        results.append(row)
    import duckdb

    env = environment(
        duckdb=duckdb.__version__,
        dump_rows=args.size,
        dump_bytes=dump.stat().st_size,
        seed=args.seed,
        limit=args.limit,
        memory_limit=args.memory_limit,
        repeat=args.rounds or args.repeat,
        interleaved=bool(args.rounds),
        load_average=" ".join(f"{x:.2f}" for x in load),
        load_average_end=" ".join(f"{x:.2f}" for x in os.getloadavg()),
    )
    floor = next((r["median_s"] for r in results if r["case"] == "bare-selection"), None)
    if floor:
        env["ratios"] = {
            f"{r['code']}: {r['case']}": round(r["median_s"] / floor, 3)
            for r in results
            if r["case"] != "bare-selection"
        }
        env["cpu_s"] = {f"{r['code']}: {r['case']}": r["cpu_s"] for r in results}
    write_report(build_report(env, results), args.results_dir, args.name, to_markdown)
    return 0


if __name__ == "__main__":
    sys.exit(main())
