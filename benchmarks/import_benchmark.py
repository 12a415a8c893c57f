"""Benchmark the import of a batch job's output into the ``prediction`` table.

Measures the whole read → convert → COPY path of an import, as the ``predictions`` asset runs
it: N-row ingredients-spellcheck output Parquet files (code, lang, text, correction, engine,
engine_version, written like the container writes them: one ``pq.write_table`` per task file)
are streamed through the job type's ``to_predictions`` into
``PredictionStore.import_predictions`` (one COPY, one transaction), against an embedded
PostgreSQL started in a fresh temporary directory (``tempfile.mkdtemp``, outside pytest's temp
area) and stopped at the end.

Each case runs in a fresh subprocess, so its peak RSS (VmHWM) is its own: it shows whether
memory stays bounded as N grows (the import streams) or grows with N. Each case also re-imports
the already-imported job (``--reimports`` times: the ledger makes it a no-op, which should take
about constant time whatever N) and times the read + convert alone (no database), to tell the
Python side of the import from PostgreSQL's. Writes ``benchmarks/results/import.json`` and
``benchmarks/results/import.md``.

    .venv/bin/python benchmarks/import_benchmark.py --sizes 10_000 100_000 1_000_000

Output texts are the real main-language ingredient lists of ``data/off/food_sample_2026.parquet``
(Data: Open Food Facts contributors, ODbL 1.0); a ``--changed-fraction`` of the rows (default
all, the stress case: every row becomes a prediction) have a typo in ``text`` (two adjacent
letters of one word swapped) and the real list as ``correction``; the others are unchanged and
skipped by ``to_predictions``.
"""

from __future__ import annotations

import argparse
import json
import logging
import random
import shutil
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.parquet as pq

PROJECT_ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(PROJECT_ROOT))

from benchmarks.common import (  # noqa: E402
    RESULTS_DIR,
    build_report,
    configure_logging,
    environment,
    generated_line,
    markdown_report,
    mib,
    proc_status_bytes,
    remove_work_dir,
    run_worker,
    write_report,
)

SAMPLE = PROJECT_ROOT / "data" / "off" / "food_sample_2026.parquet"
JOB_TYPE = "ingredients-spellcheck"
ENGINE, ENGINE_VERSION = "lexicon-cpu", "1"  # what the CPU container writes
logger = logging.getLogger("import_benchmark")


# -- output files ---------------------------------------------------------------------------


def _typo(text: str, rng: random.Random) -> str | None:
    """``text`` with two adjacent letters of one word swapped; None if no word allows it."""
    words = text.split(" ")
    candidates = [i for i, w in enumerate(words) if len(w) >= 4 and w.isalpha()]
    if not candidates:
        return None
    i = rng.choice(candidates)
    w = words[i]
    j = rng.randrange(1, len(w) - 2)
    if w[j] == w[j + 1]:
        return None
    words[i] = w[:j] + w[j + 1] + w[j] + w[j + 2 :]
    return " ".join(words)


def write_outputs(
    out_dir: Path, *, rows: int, files: int, changed_fraction: float, seed: int
) -> list[Path]:
    """Write ``rows`` output rows in ``files`` Parquet files, as the container's tasks do."""
    sample = pq.read_table(SAMPLE, columns=["lang", "ingredients_text"]).to_pylist()
    rng = random.Random(seed)
    texts: list[tuple[str, str, str]] = []  # lang, typo'd text, real text
    for row in sample:
        main = next((t["text"] for t in row["ingredients_text"] or [] if t["lang"] == "main"), "")
        if main and main.strip():
            typo = _typo(main, rng)
            if typo is not None:
                texts.append((row["lang"] or "en", typo, main))
    out_dir.mkdir(parents=True, exist_ok=True)
    paths = []
    base = rng.randrange(10**11)
    per_file = -(-rows // files)
    for f in range(files):
        start, stop = f * per_file, min(rows, (f + 1) * per_file)
        picks = [texts[rng.randrange(len(texts))] for _ in range(stop - start)]
        changed = [rng.random() < changed_fraction for _ in range(stop - start)]
        table = pa.table(
            {
                "code": pa.array([f"2{base + i:012d}" for i in range(start, stop)], pa.string()),
                "lang": pa.array([p[0] for p in picks], pa.string()),
                "text": pa.array(
                    [p[1] if c else p[2] for p, c in zip(picks, changed, strict=True)], pa.string()
                ),
                "correction": pa.array([p[2] for p in picks], pa.string()),
                "engine": pa.array([ENGINE] * (stop - start), pa.string()),
                "engine_version": pa.array([ENGINE_VERSION] * (stop - start), pa.string()),
                "task_index": pa.array([f] * (stop - start), pa.int32()),
            }
        )
        path = out_dir / f"part-{f:05d}.parquet"
        pq.write_table(table, path)  # as the container (spellcheck_job/io.py)
        paths.append(path)
    return paths


# -- one case, in a subprocess --------------------------------------------------------------


def _stream(paths: list[Path], job_id: str, stats: dict[str, int]) -> Any:
    """The prediction batches of ``paths``, as pipeline._prediction_batches streams them."""
    # imported by worker() before timing (the module imports dagster and duckdb)
    from robotoff_batch.job_types.ingredients_spellcheck import to_predictions

    for path in paths:
        with open(path, "rb") as source:
            yield from to_predictions(
                source=source, source_name=str(path), batch_job_id=job_id, stats=stats
            )


def worker(args: argparse.Namespace) -> int:
    """Import one job, re-import it, time read + convert alone; print a JSON line."""
    import robotoff_batch.job_types.ingredients_spellcheck  # noqa: F401 (loaded before timing)
    from robotoff_batch.predictions.store import PredictionStore, _rows_of

    paths = sorted(Path(args.outputs).glob("part-*.parquet"))
    store = PredictionStore(conninfo=args.conninfo)
    store.ensure_schema()
    rss_before = proc_status_bytes("VmRSS")
    job_id = args.job_id

    stats: dict[str, int] = {}
    t0 = time.monotonic()
    result = store.import_predictions(
        batch_job_id=job_id,
        job_type=JOB_TYPE,
        batches=_stream(paths, job_id, stats),
        source_stats=stats,
    )
    import_s = time.monotonic() - t0
    peak_import = proc_status_bytes("VmHWM")
    assert not result.already_imported, result
    in_db = store.count_predictions(batch_job_id=job_id)

    reimports = []
    for _ in range(args.reimports):
        again: dict[str, int] = {}
        t0 = time.monotonic()
        second = store.import_predictions(
            batch_job_id=job_id,
            job_type=JOB_TYPE,
            batches=_stream(paths, job_id, again),
            source_stats=again,
        )
        reimports.append(time.monotonic() - t0)
        assert second.already_imported and second.predictions == result.predictions, second
        assert not again, f"a re-import read the output: {again}"

    # read + convert only (what import_predictions does minus COPY and PostgreSQL)
    t0 = time.monotonic()
    converted = 0
    for rows in _rows_of(_stream(paths, job_id, {}), batch_job_id=job_id, job_type=JOB_TYPE):
        converted += len(rows)
    convert_s = time.monotonic() - t0

    print(
        json.dumps(
            {
                "import_s": import_s,
                "store_duration_s": result.duration_s,
                "predictions": result.predictions,
                "source_rows": result.source_rows,
                "skipped_rows": result.skipped_rows,
                "in_database": in_db,
                "reimport_s": reimports,
                "convert_only_s": convert_s,
                "converted_rows": converted,
                "rss_before_bytes": rss_before,
                "peak_rss_bytes": peak_import,
                "peak_rss_end_bytes": proc_status_bytes("VmHWM"),
            }
        )
    )
    return 0


def run_case(outputs: Path, *, conninfo: str, job_id: str, reimports: int) -> dict[str, Any]:
    cmd = [
        sys.executable,
        __file__,
        "--worker",
        "--outputs",
        str(outputs),
        "--conninfo",
        conninfo,
        "--job-id",
        job_id,
        "--reimports",
        str(reimports),
    ]
    return run_worker(cmd)


# -- report ---------------------------------------------------------------------------------


def to_markdown(report: dict) -> str:
    env = report["environment"]
    table = [
        "| output rows | output size | predictions | import s | rows/s | convert only s "
        "| convert rows/s | re-import ms | RSS before | peak RSS |",
        "|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for r in report["results"]:
        table.append(
            f"| {r['output_rows']:,} | {mib(r['output_bytes'])} | {r['predictions']:,} "
            f"| {r['import_s']:.2f} | {r['rows_per_s']:,.0f} | {r['convert_only_s']:.2f} "
            f"| {r['convert_rows_per_s']:,.0f} | {r['reimport_median_s'] * 1000:.1f} "
            f"| {mib(r['rss_before_bytes'])} | {mib(r['peak_rss_bytes'])} |"
        )
    return markdown_report(
        "# Import benchmark (ingredients-spellcheck output → `prediction` table)",
        [
            f"{generated_line(report)}, pyarrow {env['pyarrow']}, psycopg {env['psycopg']}, "
            f"embedded PostgreSQL {env['postgresql']} (default settings, fresh data directory, "
            f"started in {env['postgres_start_s']:.1f} s). Output files: "
            f"{env['files_per_job']} per job (one per container task, written with "
            "`pq.write_table` like the container), real ingredient lists of "
            "data/off/food_sample_2026.parquet (Data: Open Food Facts contributors, ODbL 1.0), "
            f"changed fraction {env['changed_fraction']} (each changed row is one prediction). "
            "The cases run in this order against one database: each import also updates the "
            "indexes (GIN on `data` among them) of the rows already there.",
            "import s = `import_predictions` wall time (read Parquet → `to_predictions` → "
            "validate → COPY, one transaction); rows/s = predictions imported per second; convert "
            "only = the same stream without the database; re-import = the same job again (ledger "
            "hit, nothing read), median of the repeats; peak RSS = VmHWM of a fresh process "
            "running the case (RSS before = after the imports of the modules, before the import).",
        ],
        table,
    )


def _pg_version(conninfo: str) -> str:
    import psycopg

    with psycopg.connect(conninfo) as conn:
        row = conn.execute("SHOW server_version").fetchone()
    return str(row[0]) if row else "?"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    to_int = lambda s: int(s.replace("_", ""))  # noqa: E731
    parser.add_argument("--sizes", nargs="+", type=to_int, default=[10_000, 100_000, 1_000_000])
    parser.add_argument("--files", type=int, default=1, help="output files (tasks) per job")
    parser.add_argument("--changed-fraction", type=float, default=1.0)
    parser.add_argument("--reimports", type=int, default=5)
    parser.add_argument("--seed", type=int, default=42)
    parser.add_argument("--results-dir", type=Path, default=RESULTS_DIR)
    parser.add_argument("--keep", action="store_true", help="keep the temporary directory")
    # internal: one case in a subprocess
    parser.add_argument("--worker", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--outputs", help=argparse.SUPPRESS)
    parser.add_argument("--conninfo", help=argparse.SUPPRESS)
    parser.add_argument("--job-id", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.worker:
        return worker(args)

    configure_logging()
    import psycopg

    from robotoff_batch.predictions.embedded import ensure_embedded_postgres
    from robotoff_batch.predictions.store import PredictionStore

    work = Path(tempfile.mkdtemp(prefix="robotoff-batch-import-bench-"))
    data_dir = work / "postgres"
    logger.info("work directory %s", work)
    results = []
    try:
        t0 = time.monotonic()
        conninfo = ensure_embedded_postgres(data_dir)
        pg_start = time.monotonic() - t0
        PredictionStore(conninfo=conninfo).ensure_schema()
        pg_version = _pg_version(conninfo)
        logger.info("embedded PostgreSQL %s started in %.1f s", pg_version, pg_start)
        stamp = time.strftime("%Y%m%d-%H%M%S", time.gmtime())
        for size in args.sizes:
            outputs = work / f"outputs-{size}"
            t0 = time.monotonic()
            paths = write_outputs(
                outputs,
                rows=size,
                files=args.files,
                changed_fraction=args.changed_fraction,
                seed=args.seed,
            )
            logger.info("wrote %d output rows in %.1f s", size, time.monotonic() - t0)
            job_id = f"{JOB_TYPE}-{stamp}-bench{size}"
            logger.info("importing %s", job_id)
            fig = run_case(outputs, conninfo=conninfo, job_id=job_id, reimports=args.reimports)
            if fig["in_database"] != fig["predictions"]:
                raise RuntimeError(f"{job_id}: {fig['in_database']} in the database, {fig}")
            row = {
                "output_rows": size,
                "output_files": len(paths),
                "output_bytes": sum(p.stat().st_size for p in paths),
                "batch_job_id": job_id,
                **fig,
                "rows_per_s": fig["predictions"] / fig["import_s"],
                "convert_rows_per_s": fig["converted_rows"] / fig["convert_only_s"],
                "reimport_median_s": statistics.median(fig["reimport_s"]),
            }
            logger.info(
                "%d rows: %d predictions in %.2f s (%.0f rows/s), re-import %.1f ms, peak RSS %s",
                size,
                fig["predictions"],
                fig["import_s"],
                row["rows_per_s"],
                row["reimport_median_s"] * 1000,
                mib(fig["peak_rss_bytes"]),
            )
            results.append(row)
            shutil.rmtree(outputs)
    finally:
        remove_work_dir(work, data_dir, keep=args.keep, log=logger)

    env = environment(
        pyarrow=pa.__version__,
        psycopg=psycopg.__version__,
        postgresql=pg_version,
        postgres_start_s=pg_start,
        files_per_job=args.files,
        changed_fraction=args.changed_fraction,
        reimports=args.reimports,
        seed=args.seed,
    )
    write_report(build_report(env, results), args.results_dir, "import", to_markdown)
    return 0


if __name__ == "__main__":
    sys.exit(main())
