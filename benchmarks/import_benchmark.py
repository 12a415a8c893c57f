"""Benchmark the import of a batch job's output into Robotoff's tables, side by side.

For each size N, in one run, against one embedded PostgreSQL (a fresh database per case, so
each starts from empty tables with Robotoff's indexes), each case in a fresh subprocess (its
peak RSS, VmHWM, is its own):

* ``import``: the whole import as the ``predictions`` asset runs it,
  ``output.import_job_output`` over a file:// staged job (N-row ingredients-spellcheck task
  files written like the container writes them, plus the job's ``products.parquet``): read the
  Parquet, COPY into temporary tables, checks, dedup rule, prediction INSERT, job links,
  Robotoff's insight rules (one insight per product: the facts match the output), ledger;
* ``copy``: a raw ``COPY prediction FROM STDIN (FORMAT csv)`` of exactly the prediction rows
  the import wrote (dumped from its database beforehand, streamed from a file), the floor of
  what PostgreSQL can ingest into that table;
* ``insert100``: the same rows with ``INSERT ... VALUES`` of 100 rows per statement, one
  transaction (the CSV parsed as it goes);
* ``copy_all``, ``insert100_all``: the same two over everything the import writes, its
  prediction and its insight rows (both tables, one transaction);
* ``write_all``: the writes alone: those rows already in temporary tables on the server, then
  ``INSERT ... SELECT`` into Robotoff's tables and COMMIT (nothing parsed, checked or computed),
  the floor of any import that writes them.

Also times the re-import of the imported job (a ledger hit: nothing read). Writes
``benchmarks/results/import.json`` and ``benchmarks/results/import.md``.

    .venv/bin/python benchmarks/import_benchmark.py --sizes 100_000 1_000_000

Output texts are the real main-language ingredient lists of ``data/off/food_sample_2026.parquet``
(Data: Open Food Facts contributors, ODbL 1.0); a ``--changed-fraction`` of the rows (default
all, the stress case: every row becomes a prediction and an insight) have a typo in ``text``
(two adjacent letters of one word swapped) and the real list as ``correction``.
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
        # as the container writes it (spellcheck_job/io.py, ROW_GROUP_ROWS)
        pq.write_table(table, path, row_group_size=16_384)
        paths.append(path)
    return paths


# -- one case, in a subprocess --------------------------------------------------------------


class _SucceededEngine:
    """The batch engine's answer for the benchmark's job: SUCCEEDED, one task per file."""

    def __init__(self, tasks: int) -> None:
        self.tasks = tasks

    def get_job(self, *, job_id: str) -> Any:
        from robotoff_batch.batch.engine import JobState, JobStatus, TaskStatus

        return JobStatus(
            job_id=job_id,
            state=JobState.SUCCEEDED,
            tasks=tuple(TaskStatus(index=i, state="SUCCEEDED") for i in range(self.tasks)),
        )


def worker_import(args: argparse.Namespace) -> dict[str, Any]:
    from robotoff_batch.job_types.ingredients_spellcheck import JOB_TYPE as SPELLCHECK
    from robotoff_batch.predictions import output
    from robotoff_batch.predictions.store import PredictionStore
    from robotoff_batch.staging import staging_from_uri

    job_type = SPELLCHECK
    if args.mode == "import_no_insights":  # a job type that declares no insights
        from dataclasses import replace

        assert SPELLCHECK.import_spec is not None
        spec = replace(SPELLCHECK.import_spec, insights_sql=None, facts_schema=None)

        class NoInsights(type(SPELLCHECK)):  # type: ignore[misc]
            import_spec = spec
            facts_file = None

        job_type = NoInsights()
    staging = staging_from_uri(Path(args.staging).as_uri())
    store = PredictionStore(conninfo=args.conninfo)
    store.ensure_schema()
    engine = _SucceededEngine(args.files)
    steps = _StepTimes()
    logging.getLogger("robotoff_batch.predictions.import_steps").addHandler(steps)
    logging.getLogger("robotoff_batch.predictions.import_steps").setLevel(logging.INFO)
    rss_before = proc_status_bytes("VmRSS")
    t0 = time.monotonic()
    outcome = output.import_job_output(
        engine=engine,  # type: ignore[arg-type]
        staging=staging,
        store=store,
        job_type=job_type,
        job_id=args.job_id,
    )
    seconds = time.monotonic() - t0
    peak = proc_status_bytes("VmHWM")
    assert not outcome.already_imported, outcome
    reimports = []
    for _ in range(args.reimports):
        t0 = time.monotonic()
        again = output.import_job_output(
            engine=engine,  # type: ignore[arg-type]
            staging=staging,
            store=store,
            job_type=job_type,
            job_id=args.job_id,
        )
        reimports.append(time.monotonic() - t0)
        assert again.already_imported and again.predictions == outcome.predictions
    return {
        "seconds": seconds,
        "rows": outcome.predictions,
        "source_rows": outcome.source_rows,
        "insights": dict(outcome.insights),
        "in_database": store.count_predictions(batch_job_id=args.job_id),
        "reimport_s": reimports,
        "rss_before_bytes": rss_before,
        "peak_rss_bytes": peak,
        "steps_s": steps.phases,
    }


class _StepTimes(logging.Handler):
    """The seconds per step the import logs (``import_steps``: "seconds per step")."""

    def __init__(self) -> None:
        super().__init__()
        self.phases: dict[str, float] = {}

    def emit(self, record: logging.LogRecord) -> None:
        if "seconds per step" in str(record.msg) and isinstance(record.args, tuple):
            self.phases = dict(record.args[1])


_COPY_COLUMNS = (
    'barcode, type, data, "timestamp", value_tag, value, source_image, automatic_processing, '
    "predictor, predictor_version, confidence, server_type"
)


def worker_copy(args: argparse.Namespace) -> dict[str, Any]:
    import psycopg

    from robotoff_batch.predictions.store import PredictionStore

    PredictionStore(conninfo=args.conninfo).ensure_schema()
    rss_before = proc_status_bytes("VmRSS")
    t0 = time.monotonic()
    with psycopg.connect(args.conninfo) as conn, conn.cursor() as cur:
        with (
            cur.copy(f"COPY prediction ({_COPY_COLUMNS}) FROM STDIN (FORMAT csv)") as copy,
            open(args.rows_csv, "rb") as source,
        ):
            while chunk := source.read(1 << 20):
                copy.write(chunk)
        if args.insights_csv:  # the floor of what the whole import writes: both tables
            with (
                cur.copy("COPY product_insight FROM STDIN (FORMAT csv)") as copy,
                open(args.insights_csv, "rb") as source,
            ):
                while chunk := source.read(1 << 20):
                    copy.write(chunk)
        rows = cur.execute("SELECT count(*) FROM prediction").fetchone()
    seconds = time.monotonic() - t0
    return {
        "seconds": seconds,
        "rows": int(rows[0]) if rows else 0,
        "rss_before_bytes": rss_before,
        "peak_rss_bytes": proc_status_bytes("VmHWM"),
    }


def _insert_batches(
    cur: Any, table: str, columns: str | None, width: int, rows_csv: str, batch: int = 100
) -> int:
    """INSERT the CSV's rows into ``table``, ``batch`` rows per statement; returns the count."""
    import csv

    one = "(" + ", ".join(["%s"] * width) + ")"
    into = f"INSERT INTO {table}" + (f" ({columns})" if columns else "") + " VALUES "
    statement = into + ", ".join([one] * batch)
    inserted = 0
    pending: list[Any] = []
    with open(rows_csv, newline="", encoding="utf-8") as source:
        for row in csv.reader(source):
            pending.extend(v if v != "" else None for v in row)
            if len(pending) == width * batch:
                cur.execute(statement, pending)
                inserted += batch
                pending = []
    if pending:
        n = len(pending) // width
        cur.execute(into + ", ".join([one] * n), pending)
        inserted += n
    return inserted


def worker_insert(args: argparse.Namespace) -> dict[str, Any]:
    import psycopg

    from robotoff_batch.predictions.queries import ROBOTOFF_COLUMNS
    from robotoff_batch.predictions.store import PredictionStore

    PredictionStore(conninfo=args.conninfo).ensure_schema()
    rss_before = proc_status_bytes("VmRSS")
    t0 = time.monotonic()
    with psycopg.connect(args.conninfo) as conn, conn.cursor() as cur:
        inserted = _insert_batches(cur, "prediction", _COPY_COLUMNS, 12, args.rows_csv)
        if args.insights_csv:  # everything the whole import writes: both tables
            width = len(ROBOTOFF_COLUMNS["product_insight"])
            _insert_batches(cur, "product_insight", None, width, args.insights_csv)
    seconds = time.monotonic() - t0
    return {
        "seconds": seconds,
        "rows": inserted,
        "rss_before_bytes": rss_before,
        "peak_rss_bytes": proc_status_bytes("VmHWM"),
    }


def worker_write(args: argparse.Namespace) -> dict[str, Any]:
    """The rows already on the server (COPY into temporary tables, not timed), then timed:
    INSERT ... SELECT into both tables and the commit. Nothing parsed, nothing computed: what
    the writes alone cost, Robotoff's indexes included."""
    import psycopg

    from robotoff_batch.predictions.store import PredictionStore

    PredictionStore(conninfo=args.conninfo).ensure_schema()
    with psycopg.connect(args.conninfo) as conn, conn.cursor() as cur:
        for temp, table, path, columns in (
            ("rows_in", "prediction", args.rows_csv, _COPY_COLUMNS),
            ("insights_in", "product_insight", args.insights_csv, "*"),
        ):
            # the columns' types without their constraints (the id is the table's to give)
            cur.execute(f"CREATE TEMP TABLE {temp} AS SELECT {columns} FROM {table} WITH NO DATA")
            with cur.copy(f"COPY {temp} FROM STDIN (FORMAT csv)") as copy:
                with open(path, "rb") as source:
                    while chunk := source.read(1 << 20):
                        copy.write(chunk)
        rss_before = proc_status_bytes("VmRSS")
        t0 = time.monotonic()
        cur.execute(f"INSERT INTO prediction ({_COPY_COLUMNS}) SELECT {_COPY_COLUMNS} FROM rows_in")
        rows = cur.rowcount
        cur.execute("INSERT INTO product_insight SELECT * FROM insights_in")
        conn.commit()  # inside the timing: the writes are done when they are committed
        seconds = time.monotonic() - t0
    return {
        "seconds": seconds,
        "rows": rows,
        "rss_before_bytes": rss_before,
        "peak_rss_bytes": proc_status_bytes("VmHWM"),
    }


def worker(args: argparse.Namespace) -> int:
    cases = {
        "import": worker_import,
        "import_no_insights": worker_import,
        "copy": worker_copy,
        "copy_all": worker_copy,
        "insert100": worker_insert,
        "insert100_all": worker_insert,
        "write_all": worker_write,
    }
    print(json.dumps(cases[args.mode](args)))
    return 0


# (mode, what it writes), in the order they run; "_all" modes also write the insight rows
WRITE_CASES = (
    ("copy", "raw COPY of the prediction rows"),
    ("copy_all", "raw COPY of the prediction and insight rows"),
    ("insert100", "INSERT of the prediction rows, 100 per statement"),
    ("insert100_all", "INSERT of the prediction and insight rows, 100 per statement"),
    ("write_all", "INSERT ... SELECT of both, the rows already on the server"),
)


def run_case(mode: str, **options: Any) -> dict[str, Any]:
    cmd = [sys.executable, __file__, "--worker", "--mode", mode]
    for key, value in options.items():
        cmd += [f"--{key.replace('_', '-')}", str(value)]
    return run_worker(cmd)


# -- staging a job ----------------------------------------------------------------------------


def stage_job(staging_root: Path, job_id: str, paths: list[Path]) -> None:
    """Put the task files and the job's products.parquet where the import reads them."""
    job_dir = staging_root / JOB_TYPE / job_id
    (job_dir / "output").mkdir(parents=True)
    for path in paths:
        shutil.move(str(path), job_dir / "output" / path.name)
    codes, langs, texts = [], [], []
    for path in sorted((job_dir / "output").glob("part-*.parquet")):
        table = pq.read_table(path, columns=["code", "lang", "text"])
        codes.append(table.column("code"))
        langs.append(table.column("lang"))
        texts.append(table.column("text"))
    n = sum(len(c) for c in codes)
    facts = pa.table(
        {
            "code": pa.chunked_array(codes).combine_chunks(),
            "lang": pa.chunked_array(langs).combine_chunks(),
            "ingredients_text_lang": pa.chunked_array(texts).combine_chunks(),
            "countries": pa.array(['["en:france"]'] * n, pa.string()),
            "brands": pa.array(["[]"] * n, pa.string()),
            "unique_scans_n": pa.array([1] * n, pa.int64()),
        }
    )
    pq.write_table(facts, job_dir / "products.parquet", row_group_size=16_384)


def dump_rows(conninfo: str, target: Path, *, table: str = "prediction") -> int:
    """The rows an import wrote into ``table``, as the CSV the raw COPY and INSERT cases load
    (predictions: the columns the import writes, in id order; insights: every column)."""
    import psycopg

    n = 0
    columns = _COPY_COLUMNS if table == "prediction" else "*"
    with psycopg.connect(conninfo) as conn, conn.cursor() as cur, open(target, "wb") as out:
        query = f"COPY (SELECT {columns} FROM {table} ORDER BY id) TO STDOUT (FORMAT csv)"
        with cur.copy(query) as copy:
            for data in copy:
                out.write(data)
        row = cur.execute(f"SELECT count(*) FROM {table}").fetchone()
        n = int(row[0]) if row else 0
    return n


# -- report ---------------------------------------------------------------------------------


def to_markdown(report: dict) -> str:
    env = report["environment"]
    table = [
        "| output rows | case | seconds | prediction rows/s | vs raw COPY | vs INSERT×100 "
        "| peak RSS |",
        "|---:|---|---:|---:|---:|---:|---:|",
    ]
    for r in report["results"]:
        n = r["predictions"]
        cases = [
            ("whole import (predictions + insights)", r["import_s"], r["import_peak_rss_bytes"]),
            (
                "import, predictions only (no insights)",
                r["bare_import_s"],
                r["bare_peak_rss_bytes"],
            ),
            ("raw COPY of the same prediction rows", r["copy_s"], r["copy_peak_rss_bytes"]),
            (
                "raw COPY of the same prediction and insight rows",
                r["copy_all_s"],
                r["copy_all_peak_rss_bytes"],
            ),
            ("INSERT, 100 rows per statement", r["insert_s"], r["insert_peak_rss_bytes"]),
            (
                "INSERT, 100 rows per statement, of the same prediction and insight rows",
                r["insert_all_s"],
                r["insert_all_peak_rss_bytes"],
            ),
            (
                "INSERT ... SELECT of the same prediction and insight rows, already on the "
                "server (the writes alone)",
                r["write_all_s"],
                r["write_all_peak_rss_bytes"],
            ),
        ]
        for name, seconds, rss in cases:
            table.append(
                f"| {r['output_rows']:,} | {name} | {seconds:.2f} | {n / seconds:,.0f} "
                f"| {r['copy_s'] / seconds:.2f} | {r['insert_s'] / seconds:.2f} | {mib(rss)} |"
            )
    table += [
        "",
        "The whole import against writing what it writes (its prediction and insight rows, "
        "both tables, one transaction; a ratio is that case's time / the import's time):",
        "",
        "| output rows | insight rows | vs raw COPY of both | vs INSERT×100 of both "
        "| vs the writes alone |",
        "|---:|---:|---:|---:|---:|",
    ]
    for r in report["results"]:
        table.append(
            f"| {r['output_rows']:,} | {r['insights_created']:,} "
            f"| {r['import_vs_copy_all']:.2f} | {r['import_vs_insert_all']:.2f} "
            f"| {r['import_vs_write_all']:.2f} |"
        )
    steps = [r.get("import_steps_s") or {} for r in report["results"]]
    names = list(dict.fromkeys(name for s in steps for name in s))
    table += [
        "",
        "Where the whole import's time goes (seconds per step, as it logs them):",
        "",
        "| step | " + " | ".join(f"{r['output_rows']:,} rows" for r in report["results"]) + " |",
        "|---|" + "---:|" * len(report["results"]),
    ]
    for name in names:
        table.append(f"| {name} | " + " | ".join(f"{s.get(name, 0):.2f}" for s in steps) + " |")
    return markdown_report(
        "# Import benchmark (ingredients-spellcheck output → Robotoff's tables), side by side",
        [
            f"{generated_line(report)}, pyarrow {env['pyarrow']}, psycopg {env['psycopg']}, "
            f"embedded PostgreSQL {env['postgresql']} (default settings, fresh data directory). "
            f"Output: {env['files_per_job']} task file(s) per job, real ingredient lists of "
            "data/off/food_sample_2026.parquet (Data: Open Food Facts contributors, ODbL 1.0), "
            f"changed fraction {env['changed_fraction']}. Each case runs in its own process "
            "against its own fresh database (empty tables, Robotoff's indexes).",
            "import = `output.import_job_output` wall time (Parquet → Arrow CSV → COPY into "
            "temporary tables → checks → dedup → INSERT into `prediction` + job links → "
            "Robotoff's insight rules into `product_insight` → ledger, one transaction); raw "
            "COPY = the same prediction rows streamed from a CSV file into `prediction` with "
            "`COPY ... (FORMAT csv)`, nothing else; INSERT×100 = the same rows, 100 per INSERT "
            "statement, one transaction. rows/s = prediction rows per second. re-import = the "
            "same job again (ledger hit, nothing read), median. Peak RSS = VmHWM of the case's "
            "process (modules included: the import's process loads the pipeline, Dagster and "
            "DuckDB, "
            + ", ".join(
                f"{mib(r['import_rss_before_bytes'])} at {r['output_rows']:,}"
                for r in report["results"]
            )
            + " before reading anything). vs raw COPY = COPY's time / the case's time (1.00 = as "
            "fast as COPY); vs INSERT×100 likewise. Re-import (ledger hit, nothing read): "
            + ", ".join(
                f"{r['reimport_median_s'] * 1000:.1f} ms at {r['output_rows']:,}"
                for r in report["results"]
            )
            + ".",
            "The floor: Robotoff's `product_insight` carries 18 B-tree and 4 GIN indexes, so "
            "writing the insight rows costs more than writing the predictions. The writes alone "
            "(the same prediction and insight rows already in temporary tables on the server, "
            "then INSERT ... SELECT into Robotoff's tables and COMMIT: no parsing, no checks, no "
            "rules) take "
            + ", ".join(
                f"{r['write_all_s']:.2f} s = {r['write_all_s'] / r['copy_s']:.1f}× the raw COPY "
                f"of the predictions at {r['output_rows']:,}"
                for r in report["results"]
            )
            + ": no import that writes those rows can reach 0.8× that COPY, nor 2× INSERT×100 "
            "of the predictions alone.",
        ],
        table,
    )


def _pg_version(conninfo: str) -> str:
    import psycopg

    with psycopg.connect(conninfo) as conn:
        row = conn.execute("SHOW server_version").fetchone()
    return str(row[0]) if row else "?"


def _fresh_database(admin: str, name: str) -> str:
    import psycopg
    from psycopg import sql

    from robotoff_batch.predictions.embedded import with_database

    with psycopg.connect(admin, autocommit=True) as conn:
        conn.execute(
            sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(sql.Identifier(name))
        )
        conn.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(name)))
    return with_database(admin, name)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    to_int = lambda s: int(s.replace("_", ""))  # noqa: E731
    parser.add_argument("--sizes", nargs="+", type=to_int, default=[100_000, 1_000_000])
    parser.add_argument("--files", type=int, default=4, help="output files (tasks) per job")
    parser.add_argument("--changed-fraction", type=float, default=1.0)
    parser.add_argument("--reimports", type=int, default=5)
    parser.add_argument("--seed", type=int, default=42)
    parser.add_argument("--results-dir", type=Path, default=RESULTS_DIR)
    parser.add_argument("--keep", action="store_true", help="keep the temporary directory")
    # internal: one case in a subprocess
    parser.add_argument("--worker", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--mode", help=argparse.SUPPRESS)
    parser.add_argument("--staging", help=argparse.SUPPRESS)
    parser.add_argument("--conninfo", help=argparse.SUPPRESS)
    parser.add_argument("--job-id", help=argparse.SUPPRESS)
    parser.add_argument("--rows-csv", help=argparse.SUPPRESS)
    parser.add_argument("--insights-csv", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.worker:
        return worker(args)

    configure_logging()
    import psycopg

    from robotoff_batch.predictions.embedded import ensure_embedded_postgres, with_database

    work = Path(tempfile.mkdtemp(prefix="robotoff-batch-import-bench-"))
    data_dir = work / "postgres"
    logger.info("work directory %s", work)
    results = []
    try:
        conninfo = ensure_embedded_postgres(data_dir)
        admin = with_database(conninfo, "postgres")
        pg_version = _pg_version(conninfo)
        stamp = time.strftime("%Y%m%d-%H%M%S", time.gmtime())
        for size in args.sizes:
            staging = work / f"staging-{size}"
            job_id = f"{JOB_TYPE}-{stamp}-bench{size}"
            paths = write_outputs(
                work / f"outputs-{size}",
                rows=size,
                files=args.files,
                changed_fraction=args.changed_fraction,
                seed=args.seed,
            )
            output_bytes = sum(p.stat().st_size for p in paths)
            stage_job(staging, job_id, paths)
            db = _fresh_database(admin, f"bench_import_{size}")
            logger.info("%d rows: whole import", size)
            imp = run_case(
                "import",
                staging=staging,
                conninfo=db,
                job_id=job_id,
                files=args.files,
                reimports=args.reimports,
            )
            if imp["in_database"] != imp["rows"]:
                raise RuntimeError(f"{job_id}: {imp}")
            logger.info("%d rows: import, predictions only (no insights)", size)
            bare = run_case(
                "import_no_insights",
                staging=staging,
                conninfo=_fresh_database(admin, f"bench_bare_{size}"),
                job_id=job_id,
                files=args.files,
                reimports=1,
            )
            rows_csv = work / f"rows-{size}.csv"
            dumped = dump_rows(db, rows_csv)
            insights_csv = work / f"insights-{size}.csv"
            dumped_insights = dump_rows(db, insights_csv, table="product_insight")
            # the ways of writing the same rows, each into its own fresh database: the
            # predictions alone (the comparators), then everything the import wrote
            writes: dict[str, dict[str, Any]] = {}
            for mode, what in WRITE_CASES:
                logger.info("%d rows (%d insights): %s", size, dumped_insights, what)
                both = {"insights_csv": insights_csv} if mode.endswith("_all") else {}
                writes[mode] = run_case(
                    mode,
                    conninfo=_fresh_database(admin, f"bench_{mode}_{size}"),
                    rows_csv=rows_csv,
                    **both,
                )
            cp, cp_all, ins, ins_all, wr_all = (writes[mode] for mode, _ in WRITE_CASES)
            counts = (imp["rows"], bare["rows"], cp["rows"], ins["rows"], ins_all["rows"])
            assert set(counts) == {dumped} and wr_all["rows"] == dumped, (imp, cp, wr_all)
            row = {
                "output_rows": size,
                "output_files": args.files,
                "output_bytes": output_bytes,
                "predictions": imp["rows"],
                "insights_created": imp["insights"]["created"],
                "import_s": imp["seconds"],
                "copy_s": cp["seconds"],
                "copy_all_s": cp_all["seconds"],
                "copy_all_peak_rss_bytes": cp_all["peak_rss_bytes"],
                "import_vs_copy_all": cp_all["seconds"] / imp["seconds"],
                "insert_s": ins["seconds"],
                "insert_all_s": ins_all["seconds"],
                "insert_all_peak_rss_bytes": ins_all["peak_rss_bytes"],
                "import_vs_insert_all": ins_all["seconds"] / imp["seconds"],
                "write_all_s": wr_all["seconds"],
                "write_all_peak_rss_bytes": wr_all["peak_rss_bytes"],
                "import_vs_write_all": wr_all["seconds"] / imp["seconds"],
                "import_rows_per_s": imp["rows"] / imp["seconds"],
                "copy_rows_per_s": cp["rows"] / cp["seconds"],
                "insert_rows_per_s": ins["rows"] / ins["seconds"],
                "import_vs_copy": cp["seconds"] / imp["seconds"],
                "import_vs_insert": ins["seconds"] / imp["seconds"],
                "bare_import_s": bare["seconds"],
                "bare_rows_per_s": bare["rows"] / bare["seconds"],
                "bare_vs_copy": cp["seconds"] / bare["seconds"],
                "bare_vs_insert": ins["seconds"] / bare["seconds"],
                "bare_peak_rss_bytes": bare["peak_rss_bytes"],
                "reimport_median_s": statistics.median(imp["reimport_s"]),
                "import_rss_before_bytes": imp["rss_before_bytes"],
                "import_peak_rss_bytes": imp["peak_rss_bytes"],
                "import_steps_s": imp["steps_s"],
                "copy_peak_rss_bytes": cp["peak_rss_bytes"],
                "insert_peak_rss_bytes": ins["peak_rss_bytes"],
            }
            logger.info("%s", json.dumps(row))
            results.append(row)
            shutil.rmtree(staging, ignore_errors=True)
            rows_csv.unlink()
            insights_csv.unlink()
            with psycopg.connect(admin, autocommit=True) as conn:
                for prefix in ("import", "bare", *(mode for mode, _ in WRITE_CASES)):
                    conn.execute(f"DROP DATABASE IF EXISTS bench_{prefix}_{size} WITH (FORCE)")
    finally:
        remove_work_dir(work, data_dir, keep=args.keep, log=logger)

    env = environment(
        pyarrow=pa.__version__,
        psycopg=psycopg.__version__,
        postgresql=pg_version,
        files_per_job=args.files,
        changed_fraction=args.changed_fraction,
        reimports=args.reimports,
        seed=args.seed,
    )
    write_report(build_report(env, results), args.results_dir, "import", to_markdown)
    return 0


if __name__ == "__main__":
    sys.exit(main())
