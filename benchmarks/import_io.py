"""Where the import's writes go through PostgreSQL's buffers, beside the raw COPY floor.

One import and one raw COPY of the same rows (``import_benchmark.py``'s cases, same workers),
into empty tables and into a fresh copy of the Robotoff-sized prefilled template. Before each
case the server's I/O statistics are reset (``pg_stat_reset_shared('io')``). After it they are
read from ``pg_stat_io`` (PostgreSQL 16+): per backend type and context, the relation pages
read, written, extended, hit, evicted and reused. ``normal`` is the shared pool. ``bulkwrite``
is the small ring COPY writes its new heap pages through. ``bulkread`` is the ring of large
sequential scans. The row counts after each case (``import_benchmark``'s check, a scan of
both tables) are counted too: the ``bulkread`` rows on empty tables, the ``background worker``
(parallel scan) rows on prefilled ones. One run per case, no median: this shows the mechanism,
not a timing. Writes ``results/import_io.json`` and ``results/import_io.md``.

    .venv/bin/python benchmarks/import_io.py --size 100_000
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

PROJECT_ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(PROJECT_ROOT))

from benchmarks import import_benchmark as bench  # noqa: E402
from benchmarks.common import (  # noqa: E402
    RESULTS_DIR,
    build_report,
    configure_logging,
    environment,
    generated_line,
    markdown_report,
    remove_work_dir,
    write_report,
)

IO_SQL = """
SELECT backend_type, context, reads, writes, extends, hits, evictions, reuses
FROM pg_stat_io
WHERE object = 'relation' AND (reads > 0 OR writes > 0 OR extends > 0 OR evictions > 0)
ORDER BY backend_type, context
"""
IO_COLUMNS = (
    "backend_type",
    "context",
    "reads",
    "writes",
    "extends",
    "hits",
    "evictions",
    "reuses",
)


def to_markdown(report: dict[str, Any]) -> str:
    env = report["environment"]
    table = [
        "| case | seconds | " + " | ".join(IO_COLUMNS) + " |",
        "|---|---:|---|---|" + "---:|" * (len(IO_COLUMNS) - 2),
    ]
    for case in report["results"]:
        for row in case["io"]:
            table.append(
                f"| {case['case']} | {case['seconds']:.2f} | "
                + " | ".join("" if v is None else str(v) for v in row.values())
                + " |"
            )
    return markdown_report(
        "# The import's writes through PostgreSQL's buffers (pg_stat_io), beside raw COPY",
        [
            f"{generated_line(report)}; {env['size']:,} output rows, prefilled tables "
            f"{env['prefill_predictions']:,} predictions and {env['prefill_insights']:,} "
            f"insights; embedded PostgreSQL {env['postgresql']} "
            f"({bench._settings_text(env)}). One run per case (the module's docstring)."
        ],
        table,
    )


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    to_int = lambda s: int(s.replace("_", ""))  # noqa: E731
    parser.add_argument("--size", type=to_int, default=100_000)
    parser.add_argument("--files", type=int, default=4)
    parser.add_argument("--prefill-predictions", type=to_int, default=5_000_000)
    parser.add_argument("--prefill-insights", type=to_int, default=2_000_000)
    parser.add_argument(
        "--server-settings", choices=sorted(bench.SERVER_SETTINGS), default="default"
    )
    parser.add_argument("--seed", type=int, default=42)
    parser.add_argument("--results-dir", type=Path, default=RESULTS_DIR)
    args = parser.parse_args(argv)
    configure_logging()
    import psycopg

    from robotoff_batch.predictions.embedded import ensure_embedded_postgres, with_database

    work = Path(tempfile.mkdtemp(prefix="robotoff-batch-import-io-"))
    data_dir = work / "postgres"
    results: list[dict[str, Any]] = []
    try:
        conninfo = ensure_embedded_postgres(data_dir)
        if bench.SERVER_SETTINGS[args.server_settings]:
            conninfo = bench._apply_settings(data_dir, bench.SERVER_SETTINGS[args.server_settings])
        admin = with_database(conninfo, "postgres")
        settings = {
            n: bench._show(admin, n) for n in ("shared_buffers", "work_mem", "max_wal_size")
        }
        bench.prefill_template(
            admin,
            "io_template",
            predictions=args.prefill_predictions,
            insights=args.prefill_insights,
            seed=args.seed,
        )
        staging, job_id = work / "staging", f"{bench.JOB_TYPE}-io{args.size}"
        paths = bench.write_outputs(
            work / "outputs", rows=args.size, files=args.files, changed_fraction=1.0, seed=args.seed
        )
        bench.stage_job(staging, job_id, paths)
        reference = bench._fresh_database(admin, "io_reference")
        bench.run_case(
            "import", staging=staging, conninfo=reference, job_id=job_id, files=args.files
        )
        csvs = {name: work / f"{name}.csv" for name in ("rows", "insights", "known")}
        for name, table in (
            ("rows", "prediction"),
            ("insights", "product_insight"),
            ("known", bench.KNOWN_TABLE),
        ):
            bench.dump_rows(reference, csvs[name], table=table)
        for tables in ("empty", "prefilled"):
            for mode in ("import", "copy_all"):
                template = "io_template" if tables == "prefilled" else None
                db = bench._fresh_database(admin, "io_case", template)
                with psycopg.connect(admin, autocommit=True) as conn:
                    conn.execute("SELECT pg_stat_reset_shared('io')")
                if mode == "import":
                    run = bench.run_case(
                        "import", staging=staging, conninfo=db, job_id=job_id, files=args.files
                    )
                else:
                    run = bench.run_case(
                        "copy_all",
                        conninfo=db,
                        rows_csv=csvs["rows"],
                        insights_csv=csvs["insights"],
                        known_csv=csvs["known"],
                    )
                time.sleep(1.5)  # the exited backend's statistics flushed
                with psycopg.connect(admin, autocommit=True) as conn:
                    io = [dict(zip(IO_COLUMNS, r, strict=True)) for r in conn.execute(IO_SQL)]
                results.append({"case": f"{mode}_{tables}", "seconds": run["seconds"], "io": io})
        pg_version = bench._pg_version(admin)
    finally:
        remove_work_dir(work, data_dir, keep=False, log=bench.logger)
    env = environment(
        size=args.size,
        prefill_predictions=args.prefill_predictions,
        prefill_insights=args.prefill_insights,
        postgresql=pg_version,
        server_settings=settings,
    )
    write_report(build_report(env, results), args.results_dir, "import_io", to_markdown)
    return 0


if __name__ == "__main__":
    sys.exit(main())
