"""Benchmark the launch step with skip_unchanged (issue 22) against the same launch without it,
side by side.

On a generated OFF dump (``generate_dump.py``, 1M rows by default) and an embedded PostgreSQL
holding ``--known`` (500k by default) rows of ``batch_known_text`` for the production (vLLM)
model identity: every selectable product but one in 40 with its current text (so a launch with
skipping still finds products that need work), the rest other products' or stale texts. Each
case runs in a fresh subprocess (its own peak RSS) and the cases alternate, ``--repeat`` times
(median):

- ``launch``: the job type's extraction for the vLLM job (one pass: selection, facts), as a
  launch by hand (skip_unchanged false);
- ``launch-skip``: the same with skip_unchanged: the known set read once from PostgreSQL as
  Arrow (``PredictionStore.known_texts``), then the pass with the anti-join.

Target: launch-skip <= 1.5 x launch. Writes ``results/skip.json`` and ``results/skip.md``.

    .venv/bin/python benchmarks/skip_benchmark.py --dump /tmp/food_1m.parquet
"""

from __future__ import annotations

import argparse
import io
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
    configure_logging,
    max_rss_bytes,
    mib,
    run_worker,
)

logger = logging.getLogger("skip_benchmark")
CASES = ("launch", "launch-skip")
JOB_TYPE = "ingredients-spellcheck"


def _job_config() -> Any:
    from robotoff_batch.config.loader import load_job_config
    from robotoff_batch.paths import JOB_CONFIGS_DIR

    config = load_job_config(JOB_CONFIGS_DIR / f"{JOB_TYPE}.yaml").config
    env = {**config.resources.environment, "SPELLCHECK_MODEL_REVISION": "0" * 40}
    return config.model_copy(
        update={"resources": config.resources.model_copy(update={"environment": env})}
    )


def worker(case: str, dump: str, url: str, limit: int) -> dict[str, Any]:
    from robotoff_batch.job_types.ingredients_spellcheck.job_type import JOB_TYPE as jt
    from robotoff_batch.job_types.ingredients_spellcheck.selection import SpellcheckLaunch
    from robotoff_batch.predictions.store import PredictionStore

    config = _job_config()
    params = SpellcheckLaunch(limit=limit, skip_unchanged=case == "launch-skip")
    started = time.monotonic()
    known = None
    read_s = 0.0
    if params.skip_unchanged:
        found = jt.known_set(params, config, PredictionStore(conninfo=url))
        assert found is not None
        known = found[1]
        read_s = time.monotonic() - started
    with tempfile.TemporaryDirectory(prefix="skip-bench-") as tmp:
        extracted = jt.extract(dump, params, config, Path(tmp), known=known)
    seconds = time.monotonic() - started
    return {
        "case": case,
        "seconds": round(seconds, 3),
        "known_read_s": round(read_s, 3),
        "known_rows": 0 if known is None else known.num_rows,
        "rows": extracted.rows,
        "skipped_unchanged": extracted.metadata.get("skipped_unchanged"),
        "peak_rss_bytes": max_rss_bytes(),
    }


def prepare_known(dump: str, url: str, known_rows: int) -> dict[str, int]:
    """Fill batch_known_text with ``known_rows`` rows for the benchmark's model identity."""
    import duckdb
    import psycopg

    from robotoff_batch.job_types.ingredients_spellcheck.identity import model_identity
    from robotoff_batch.job_types.ingredients_spellcheck.selection import launch_pass
    from robotoff_batch.predictions.store import PredictionStore

    identity = model_identity(_job_config())
    PredictionStore(conninfo=url).ensure_schema()
    with tempfile.TemporaryDirectory(prefix="skip-bench-prep-") as tmp:
        done = launch_pass(
            dump_path=dump,
            work_dir=Path(tmp),
            limit=5_000_000,
            min_fraction=0.0,
            max_fraction=0.4,
            facts=False,
        )
        with duckdb.connect() as con:
            csv = con.execute(
                f"""SELECT code, coalesce(lang, ''), md5(text) FROM (
                    SELECT *, row_number() OVER () AS n FROM read_parquet('{done.input_path}'))
                WHERE n % 40 <> 0
                UNION ALL
                SELECT 'x' || range::VARCHAR, 'en', md5(range::VARCHAR) FROM range(
                    greatest(0, {known_rows} - (SELECT count(*) FROM
                    read_parquet('{done.input_path}')) * 39 // 40))"""
            ).fetchall()
    matching = sum(1 for c, _, _ in csv if not c.startswith("x"))
    csv = csv[:known_rows]
    buffer = io.StringIO()
    for code, lang, digest in csv:
        buffer.write(f"{code},{lang},{digest}\n")
    with psycopg.connect(url) as conn:
        conn.execute("TRUNCATE batch_known_text")
        conn.execute("CREATE TEMP TABLE k (barcode text, lang text, h text)")
        with conn.cursor().copy("COPY k FROM STDIN (FORMAT csv)") as copy:
            copy.write(buffer.getvalue())
        conn.execute(
            "INSERT INTO batch_known_text SELECT %s, %s, %s, barcode, lang, decode(h, 'hex'), "
            "'bench' FROM k",
            (JOB_TYPE, identity.predictor, identity.predictor_version),
        )
        conn.execute("ANALYZE batch_known_text")
    return {"selectable": done.rows, "known": len(csv), "known_matching": matching}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--dump", required=True)
    parser.add_argument("--known", type=int, default=500_000)
    parser.add_argument("--limit", type=int, default=10_000)
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--worker", choices=CASES)
    parser.add_argument("--url")
    args = parser.parse_args()
    if args.worker:
        print(json.dumps(worker(args.worker, args.dump, args.url, args.limit)))
        return
    configure_logging()
    from robotoff_batch.predictions.embedded import (
        ensure_embedded_postgres,
        stop_embedded_postgres,
    )

    work = Path(tempfile.mkdtemp(prefix="skip-bench-pg-"))
    url = ensure_embedded_postgres(work / "pg")
    try:
        prep = prepare_known(args.dump, url, args.known)
        logger.info("prepared: %s", prep)
        runs: dict[str, list[dict[str, Any]]] = {c: [] for c in CASES}
        loads = []
        for i in range(args.repeat):
            for case in CASES:
                loads.append(os.getloadavg())
                cmd = [sys.executable, __file__, "--worker", case, "--dump", args.dump]
                cmd += ["--url", url, "--limit", str(args.limit)]
                out = run_worker(cmd)
                logger.info("run %d %s: %s (load %s)", i + 1, case, out, loads[-1])
                runs[case].append(out)
    finally:
        stop_embedded_postgres(work / "pg")
        subprocess.run(["rm", "-rf", str(work)], check=False)
    median = {c: statistics.median(r["seconds"] for r in runs[c]) for c in CASES}
    ratio = median["launch-skip"] / median["launch"]
    report = {
        "dump": args.dump,
        "limit": args.limit,
        **prep,
        "cases": runs,
        "median_s": median,
        "ratio_skip_vs_plain": round(ratio, 3),
        "target": 1.5,
        "load_averages": loads,
        "cpus": os.cpu_count(),
    }
    RESULTS_DIR.mkdir(exist_ok=True)
    (RESULTS_DIR / "skip.json").write_text(json.dumps(report, indent=2) + "\n")
    lines = [
        "# skip_unchanged benchmark (issue 22)",
        "",
        f"Dump {args.dump} ({prep['selectable']:,} selectable products), "
        f"{prep['known']:,} known texts ({prep['known_matching']:,} matching a product's current "
        f"text), limit {args.limit:,}, {os.cpu_count()} CPUs, load averages during the runs "
        f"{min(la[0] for la in loads):.1f}-{max(la[0] for la in loads):.1f}. One fresh process "
        f"per case, cases alternating, {args.repeat} runs each (median).",
        "",
        "| case | median s | runs s | known read s | products | skipped | peak RSS |",
        "|---|---:|---|---:|---:|---:|---:|",
    ]
    for case in CASES:
        r = runs[case]
        lines.append(
            f"| {case} | {median[case]:.2f} | {', '.join(str(x['seconds']) for x in r)} | "
            f"{statistics.median(x['known_read_s'] for x in r):.2f} | {r[-1]['rows']:,} | "
            f"{r[-1]['skipped_unchanged'] or 0:,} | "
            f"{mib(max(x['peak_rss_bytes'] for x in r))} |"
        )
    lines += ["", f"launch-skip / launch = **{ratio:.2f}** (target <= 1.5)."]
    (RESULTS_DIR / "skip.md").write_text("\n".join(lines) + "\n")
    print("\n".join(lines))


if __name__ == "__main__":
    main()
