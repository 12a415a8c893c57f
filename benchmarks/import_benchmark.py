"""Benchmark the import of a batch job's output into Robotoff's tables, side by side.

For each size N, in one run, against one embedded PostgreSQL, these cases, each in a fresh
subprocess (its peak RSS, VmHWM, is its own) against a fresh database (dropped and re-created
before every case, then ``CHECKPOINT`` and ``sync``):

* ``import``: the whole import as the ``predictions`` asset runs it,
  ``output.import_job_output`` over a file:// staged job (N-row ingredients-spellcheck task
  files written like the container writes them, plus the job's ``products.parquet``): read the
  Parquet, COPY into temporary tables, checks, dedup rule, prediction INSERT, job links,
  Robotoff's insight rules, ledger; into **empty** tables, and into **prefilled** ones;
* ``copy_all``: the floor: a raw ``COPY ... FROM STDIN (FORMAT csv)`` of exactly the rows the
  import writes (its predictions, in id order, its insights, in the order it inserted them,
  and its ``batch_known_text`` rows, the texts' hashes for skip_unchanged: the three tables,
  one transaction), into empty and into prefilled tables; each table's seconds are kept, so
  the floor of Robotoff's two tables alone comes from the same runs
  (``import_vs_copy_robotoff_*``);
* ``insert100_all``: the same rows with ``INSERT ... VALUES`` of 100 rows per statement, one
  transaction, into empty tables.

Prefilled = Robotoff-sized tables: a seeded, set-based generator fills ``prediction`` (default
5,000,000 rows: half ``ingredient_spellcheck`` with Robotoff's constants, ``source_image`` and
``value`` NULL, ``automatic_processing`` false; the rest category, label, brand, packaging,
nutrient predictions, with images where Robotoff's have them) and ``product_insight`` (default
2,000,000: half spellcheck, a tenth annotated) of other products than the job's, then
VACUUM ANALYZE, as a production database is. It is filled once, in a template database
(indexes dropped during the fill and re-created as Robotoff's migrations define them); each
prefilled case gets a fresh copy of it (``CREATE DATABASE ... TEMPLATE``, statistics included).
So the import writes the same rows into empty and prefilled tables, and ``prefilled_vs_empty``
compares like with like. Both tables are counted after every case (what was there plus what
the case wrote, else the run fails).

Cases run interleaved (each repetition runs every case once, in this order), ``--repeat``
times (default 3; one number per size, e.g. ``--repeat 3 1``, for a long run at 1M); figures are
medians. The load average is recorded before each case.
Writes ``benchmarks/results/import.json`` (per size: medians, every run, ``ratios``) and
``benchmarks/results/import.md``.

    .venv/bin/python benchmarks/import_benchmark.py --sizes 100_000 1_000_000
    .venv/bin/python benchmarks/import_benchmark.py --sizes 100_000 \
        --prefill-predictions 500_000 --prefill-insights 200_000      # smaller tables

Ratios (> 1: the import is faster), as the issue states them: ``import_vs_copy_all_empty`` =
copy_all(empty) / import(empty); ``import_vs_copy_all_prefilled`` likewise on prefilled tables;
``import_vs_insert100_all`` = insert100_all(empty) / import(empty); ``prefilled_vs_empty`` =
import(prefilled) / import(empty), a time ratio (< 1.2 is the target).

Output texts are the real main-language ingredient lists of ``data/off/food_sample_2026.parquet``
(Data: Open Food Facts contributors, ODbL 1.0); a ``--changed-fraction`` of the rows (default
all, the stress case: every row becomes a prediction and an insight) have a typo in ``text``
(two adjacent letters of one word swapped) and the real list as ``correction``.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
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
TABLES = ("prediction", "product_insight")  # Robotoff's
# ours: the hashes of the texts given a verdict (skip_unchanged, predictions/known.py), written
# by the import in its transaction: part of everything it writes, so the floors write it too
KNOWN_TABLE = "batch_known_text"
COUNTED = (*TABLES, KNOWN_TABLE)
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


#: The outputs' row orders: production's (the spellcheck launch orders its input by
#: popularity, selection.sql ``input``, so each task's rows come in that order, which has no
#: relation to the barcodes: one seeded permutation of the codes across the files), or the
#: codes ascending through the files (kinder to every index: the default until 2026-12-04).
OUTPUT_ORDERS = ("popularity", "code")


def write_outputs(
    out_dir: Path,
    *,
    rows: int,
    files: int,
    changed_fraction: float,
    seed: int,
    order: str = "popularity",
) -> list[Path]:
    """Write ``rows`` output rows in ``files`` Parquet files, as the container's tasks do, in
    the row order ``order`` (:data:`OUTPUT_ORDERS`)."""
    if order not in OUTPUT_ORDERS:
        raise ValueError(f"order {order!r}: one of {', '.join(OUTPUT_ORDERS)}")
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
    numbers = list(range(rows))
    if order == "popularity":
        random.Random(seed + 1).shuffle(numbers)
    per_file = -(-rows // files)
    for f in range(files):
        start, stop = f * per_file, min(rows, (f + 1) * per_file)
        picks = [texts[rng.randrange(len(texts))] for _ in range(stop - start)]
        changed = [rng.random() < changed_fraction for _ in range(stop - start)]
        table = pa.table(
            {
                "code": pa.array([f"2{base + numbers[i]:012d}" for i in range(start, stop)]),
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


def _table_counts(conninfo: str) -> dict[str, int]:
    import psycopg

    with psycopg.connect(conninfo) as conn:
        counts = {}
        for t in COUNTED:  # (our table does not exist before the store's schema is made)
            exists = conn.execute("SELECT to_regclass(%s) IS NOT NULL", (t,)).fetchone()
            counted = conn.execute(f"SELECT count(*) FROM {t}").fetchone() if exists[0] else (0,)  # type: ignore[index]
            counts[t] = int(counted[0])  # type: ignore[index]
        return counts


def worker_import(args: argparse.Namespace) -> dict[str, Any]:
    from robotoff_batch.job_types.ingredients_spellcheck import JOB_TYPE as SPELLCHECK
    from robotoff_batch.predictions import output
    from robotoff_batch.predictions.store import PredictionStore
    from robotoff_batch.staging import staging_from_uri

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
        job_type=SPELLCHECK,
        job_id=args.job_id,
    )
    seconds = time.monotonic() - t0
    peak = proc_status_bytes("VmHWM")
    assert not outcome.already_imported, outcome
    t0 = time.monotonic()
    again = output.import_job_output(
        engine=engine,  # type: ignore[arg-type]
        staging=staging,
        store=store,
        job_type=SPELLCHECK,
        job_id=args.job_id,
    )
    reimport = time.monotonic() - t0
    assert again.already_imported and again.predictions == outcome.predictions
    return {
        "seconds": seconds,
        "predictions": outcome.predictions,
        "insights": dict(outcome.insights),
        "reimport_s": reimport,
        "rss_before_bytes": rss_before,
        "peak_rss_bytes": peak,
        "steps_s": steps.phases,
        "counts": _table_counts(args.conninfo),
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
    """The floor: COPY of the import's rows into both tables, one transaction."""
    import psycopg

    from robotoff_batch.predictions.store import PredictionStore

    PredictionStore(conninfo=args.conninfo).ensure_schema()
    rss_before = proc_status_bytes("VmRSS")
    t0 = time.monotonic()
    tables_s: dict[str, float] = {}
    with psycopg.connect(args.conninfo) as conn, conn.cursor() as cur:
        for table, statement, path in (
            (
                "prediction",
                f"COPY prediction ({_COPY_COLUMNS}) FROM STDIN (FORMAT csv)",
                args.rows_csv,
            ),
            ("product_insight", "COPY product_insight FROM STDIN (FORMAT csv)", args.insights_csv),
            (KNOWN_TABLE, f"COPY {KNOWN_TABLE} FROM STDIN (FORMAT csv)", args.known_csv),
        ):
            started = time.monotonic()
            with cur.copy(statement) as copy, open(path, "rb") as source:
                while chunk := source.read(1 << 20):
                    copy.write(chunk)
            tables_s[table] = time.monotonic() - started
    seconds = time.monotonic() - t0
    return {
        "seconds": seconds,
        "tables_s": tables_s,
        "rss_before_bytes": rss_before,
        "peak_rss_bytes": proc_status_bytes("VmHWM"),
        "counts": _table_counts(args.conninfo),
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
    """The same rows, ``INSERT ... VALUES`` of 100 rows per statement, one transaction."""
    import psycopg

    from robotoff_batch.predictions.queries import ROBOTOFF_COLUMNS
    from robotoff_batch.predictions.store import PredictionStore

    PredictionStore(conninfo=args.conninfo).ensure_schema()
    rss_before = proc_status_bytes("VmRSS")
    t0 = time.monotonic()
    with psycopg.connect(args.conninfo) as conn, conn.cursor() as cur:
        _insert_batches(cur, "prediction", _COPY_COLUMNS, 12, args.rows_csv)
        width = len(ROBOTOFF_COLUMNS["product_insight"])
        _insert_batches(cur, "product_insight", None, width, args.insights_csv)
        _insert_batches(cur, KNOWN_TABLE, None, 7, args.known_csv)
    seconds = time.monotonic() - t0
    return {
        "seconds": seconds,
        "rss_before_bytes": rss_before,
        "peak_rss_bytes": proc_status_bytes("VmHWM"),
        "counts": _table_counts(args.conninfo),
    }


def worker(args: argparse.Namespace) -> int:
    cases = {"import": worker_import, "copy_all": worker_copy, "insert100_all": worker_insert}
    print(json.dumps(cases[args.mode](args)))
    return 0


# (mode, tables), in the order each repetition runs them
CASES = (
    ("import", "empty"),
    ("copy_all", "empty"),
    ("import", "prefilled"),
    ("copy_all", "prefilled"),
    ("insert100_all", "empty"),
)
CASE_NAMES = {
    ("import", "empty"): "whole import, empty tables",
    ("import", "prefilled"): "whole import, prefilled tables",
    ("copy_all", "empty"): "raw COPY of the same rows, empty tables",
    ("copy_all", "prefilled"): "raw COPY of the same rows, prefilled tables",
    ("insert100_all", "empty"): "INSERT×100 of the same rows, empty tables",
}


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
    # in code order, as the launch writes them (facts.sql: ORDER BY code) and the import
    # reads them from the dump (facts_at_import)
    facts = pa.table(
        {
            "code": pa.chunked_array(codes).combine_chunks(),
            "lang": pa.chunked_array(langs).combine_chunks(),
            "ingredients_text_lang": pa.chunked_array(texts).combine_chunks(),
            "countries": pa.array(['["en:france"]'] * n, pa.string()),
            "brands": pa.array(["[]"] * n, pa.string()),
            "unique_scans_n": pa.array([1] * n, pa.int64()),
        }
    ).sort_by("code")
    pq.write_table(facts, job_dir / "products.parquet", row_group_size=16_384)


# -- Robotoff-sized tables -------------------------------------------------------------------

# Seeded, set-based: every value a function of the row number i and the seed (hashint8extended),
# so a run is reproducible; products '3' || 12 digits, never the job's ('2' || 12 digits).
_H = "abs(hashint8extended(i, {seed}))"
_LANG = "(ARRAY['fr','en','de','es','it','nl','pt','pl'])[(" + _H + " % 8)::int + 1]"
_TEXTS = (
    "'sucre, farine de blé, huile de palme, lait écrémé en poudre, sel, émulsifiant: lécithines "
    "de soja, arôme naturel de vanille, poudre à lever: carbonates de sodium '"
)
PREFILL_PREDICTIONS_SQL = (
    """
INSERT INTO prediction (barcode, type, data, "timestamp", value_tag, value, source_image,
    automatic_processing, predictor, predictor_version, confidence, server_type)
SELECT '3' || lpad((i / 2)::text, 12, '0'),
    CASE WHEN i % 2 = 0 THEN 'ingredient_spellcheck'
        ELSE (ARRAY['category','label','brand','packaging','nutrient'])[(h % 5)::int + 1] END,
    CASE WHEN i % 2 = 0 THEN jsonb_build_object('original', """
    + _TEXTS
    + """ || h, 'correction', """
    + _TEXTS
    + """ || (h + 1), 'lang', lang, 'lang_confidence', NULL)
        ELSE jsonb_build_object('model_version', 'v' || (h % 7)) END,
    timestamp '2025-01-01' + (h % 31536000) * interval '1 second',
    CASE WHEN i % 2 = 0 THEN lang ELSE 'en:tag-' || (h % 500) END, NULL,
    CASE WHEN i % 2 = 1 AND h % 5 IN (1, 3, 4) THEN '/' || (i / 2) || '/' || (h % 9) || '.jpg' END,
    CASE WHEN i % 2 = 0 THEN false ELSE h % 3 = 0 END,
    CASE WHEN i % 2 = 0 THEN (ARRAY['lexicon-cpu','vllm-mistral-7b'])[(h % 2)::int + 1]
        ELSE (ARRAY['neural','flashtext','universal-logo-detector'])[(h % 3)::int + 1] END,
    CASE WHEN i % 2 = 0 THEN '0' ELSE (h % 4)::text END,
    CASE WHEN i % 2 = 1 THEN (h % 1000) / 1000.0 END,
    CASE WHEN h % 20 = 0 THEN 'obf' ELSE 'off' END
FROM (SELECT i, """
    + _H
    + """ AS h, """
    + _LANG
    + """ AS lang FROM generate_series(0, {rows} - 1) AS i) AS g
"""
)
PREFILL_INSIGHTS_SQL = (
    """
INSERT INTO product_insight (id, barcode, type, data, "timestamp", completed_at, annotation,
    n_votes, countries, brands, value_tag, automatic_processing, server_type, unique_scans_n,
    reserved_barcode, predictor, predictor_version, campaign, lc, with_image)
SELECT md5(i::text || '-{seed}')::uuid, '3' || lpad(i::text, 12, '0'),
    CASE WHEN i % 2 = 0 THEN 'ingredient_spellcheck'
        ELSE (ARRAY['category','label','brand','packaging'])[(h % 4)::int + 1] END,
    jsonb_build_object('original', 'old text ' || h, 'correction', 'old correction ' || h),
    timestamp '2025-01-01' + (h % 31536000) * interval '1 second',
    CASE WHEN h % 10 = 0 THEN timestamp '2025-06-01' END,
    CASE WHEN h % 10 = 0 THEN (h % 2)::int END, (h % 3)::int, '["en:france"]'::jsonb,
    '[]'::jsonb, CASE WHEN i % 2 = 0 THEN lang ELSE 'en:tag-' || (h % 500) END,
    i % 2 = 1 AND h % 7 = 0, 'off', (h % 100)::int, false,
    CASE WHEN i % 2 = 0 THEN 'lexicon-cpu' ELSE 'neural' END, '0', '[]'::jsonb,
    ARRAY[lang]::varchar(255)[], false
FROM (SELECT i, """
    + _H
    + """ AS h, """
    + _LANG
    + """ AS lang FROM generate_series(0, {rows} - 1) AS i) AS g
"""
)


def prefill_template(admin: str, name: str, *, predictions: int, insights: int, seed: int) -> str:
    """A database with Robotoff's schema and tables of this size (see the module docstring),
    VACUUM ANALYZEd: the template each prefilled case copies."""
    import psycopg

    from robotoff_batch.predictions.store import PredictionStore

    url = _fresh_database(admin, name)
    PredictionStore(conninfo=url).ensure_schema()
    t0 = time.monotonic()
    with psycopg.connect(url, autocommit=True) as conn:
        indexes = conn.execute(
            "SELECT indexname, indexdef FROM pg_indexes WHERE tablename = ANY(%s) "
            "AND indexname NOT LIKE '%%_pkey'",
            (list(TABLES),),
        ).fetchall()
        for index, _ in indexes:
            conn.execute(f"DROP INDEX {index}")
        conn.execute("SET maintenance_work_mem = '512MB'")
        for table, statement, rows in (
            ("prediction", PREFILL_PREDICTIONS_SQL, predictions),
            ("product_insight", PREFILL_INSIGHTS_SQL, insights),
        ):
            logger.info("prefilling %s with %d rows", table, rows)
            conn.execute(statement.replace("{rows}", str(rows)).replace("{seed}", str(seed)))
        logger.info("re-creating %d indexes", len(indexes))
        for _, definition in indexes:
            conn.execute(definition)
        for table in TABLES:
            conn.execute(f"VACUUM ANALYZE {table}")
        conn.execute("CHECKPOINT")
    logger.info("prefilled template %s in %.1f s", name, time.monotonic() - t0)
    return url


def dump_rows(conninfo: str, target: Path, *, table: str) -> int:
    """The rows an import wrote into ``table`` (of an empty database), in the order it wrote
    them, as the CSV the floors load: predictions in id order (the columns the import writes),
    insights in physical order (every column; a table only ever inserted into keeps the order
    of its inserts)."""
    import psycopg

    columns, order = (_COPY_COLUMNS, "id") if table == "prediction" else ("*", "ctid")
    with psycopg.connect(conninfo) as conn, conn.cursor() as cur, open(target, "wb") as out:
        query = f"COPY (SELECT {columns} FROM {table} ORDER BY {order}) TO STDOUT (FORMAT csv)"
        with cur.copy(query) as copy:
            for data in copy:
                out.write(data)
        row = cur.execute(f"SELECT count(*) FROM {table}").fetchone()
    return int(row[0]) if row else 0


# -- report ---------------------------------------------------------------------------------


def to_markdown(report: dict) -> str:
    env = report["environment"]
    table = [
        "| output rows | case | seconds (median) | runs | vs raw COPY | vs INSERT×100 "
        "| peak RSS | load avg |",
        "|---:|---|---:|---|---:|---:|---:|---:|",
    ]
    for r in report["results"]:
        copy_empty = r["median_s"]["copy_all_empty"]
        insert = r["median_s"].get("insert100_all_empty")
        for key, name in r["case_names"].items():
            seconds = r["median_s"][key]
            runs = ", ".join(f"{c['seconds']:.2f}" for c in r["runs"] if c["case"] == key)
            loads = [c["loadavg_1m"] for c in r["runs"] if c["case"] == key]
            peak = max(c["peak_rss_bytes"] for c in r["runs"] if c["case"] == key)
            copy = r["median_s"]["copy_all_prefilled"] if "prefilled" in key else copy_empty
            table.append(
                f"| {r['output_rows']:,} | {name} | {seconds:.2f} | {runs} "
                f"| {copy / seconds:.2f} | {_ratio(insert, seconds)} | {mib(peak)} "
                f"| {statistics.median(loads):.2f} |"
            )
    table += [
        "",
        "Ratios (> 1: the import is faster; prefilled_vs_empty: import time on prefilled "
        "tables / on empty ones) and targets:",
        "",
        "| output rows | import_vs_copy_all_empty (≥ 0.8) | import_vs_copy_all_prefilled (≥ 0.8) "
        "| prefilled_vs_empty (≤ 1.2) | import_vs_insert100_all (≥ 2) | peak_rss_mib (≤ 300) "
        "| import_vs_copy_robotoff_empty | import_vs_copy_robotoff_prefilled |",
        "|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for r in report["results"]:
        q = r["ratios"]
        table.append(
            f"| {r['output_rows']:,} | {q['import_vs_copy_all_empty']:.2f} "
            f"| {q['import_vs_copy_all_prefilled']:.2f} | {q['prefilled_vs_empty']:.2f} "
            f"| {_ratio(q['import_vs_insert100_all'], 1.0)} | {q['peak_rss_mib']:.1f} "
            f"| {q['import_vs_copy_robotoff_empty']:.2f} "
            f"| {q['import_vs_copy_robotoff_prefilled']:.2f} |"
        )
    steps = [r.get("import_steps_s") or {} for r in report["results"]]
    names = list(dict.fromkeys(name for s in steps for kind in s.values() for name in kind))
    table += [
        "",
        "Where the whole import's time goes (seconds per step as it logs them, the median run):",
        "",
        "| step | "
        + " | ".join(
            f"{r['output_rows']:,} {kind}"
            for r in report["results"]
            for kind in r["import_steps_s"]
        )
        + " |",
        "|---|" + "---:|" * sum(len(r["import_steps_s"]) for r in report["results"]),
    ]
    for name in names:
        table.append(
            f"| {name} | "
            + " | ".join(f"{kind.get(name, 0):.2f}" for s in steps for kind in s.values())
            + " |"
        )
    return markdown_report(
        "# Import benchmark (ingredients-spellcheck output → Robotoff's tables), side by side",
        [
            f"{generated_line(report)}, pyarrow {env['pyarrow']}, psycopg {env['psycopg']}, "
            f"embedded PostgreSQL {env['postgresql']} ({_settings_text(env)}). Output: "
            f"{env['files_per_job']} task file(s) per job, real ingredient lists of "
            "data/off/food_sample_2026.parquet (Data: Open Food Facts contributors, ODbL 1.0), "
            f"changed fraction {env['changed_fraction']}: every output row a prediction and an "
            f"insight; rows in {env.get('output_order', 'code')} order"
            + (
                " (production's: the launch orders its input by popularity, so the rows "
                "come in no relation to the barcodes; facts in code order)"
                if env.get("output_order", "code") == "popularity"
                else " (barcodes ascending through the files)"
            )
            + ". Prefilled tables: "
            f"{env['prefill_predictions']:,} predictions and {env['prefill_insights']:,} "
            f"insights of other products (seeded generator, seed {env['seed']}, VACUUM "
            "ANALYZEd), filled in "
            f"{env['prefill_s']:.0f} s. Load average (1, 5, 15 min) at the start "
            f"{', '.join(f'{x:.2f}' for x in env['loadavg_start'])}, at the end "
            f"{', '.join(f'{x:.2f}' for x in env['loadavg_end'])}.",
            f"Cases interleaved, {_repetitions(env['repeat'], report['results'])}, median; "
            "each in its own process "
            "against a fresh database (CHECKPOINT and a sync of the kernel's dirty pages before "
            "it). import = "
            "`output.import_job_output` wall time (Parquet → Arrow → binary COPY into temporary "
            "tables → checks → dedup → INSERT into `prediction` + job links → Robotoff's insight "
            "rules into `product_insight` → known texts → ledger, one transaction); raw COPY = "
            "the rows the import writes (predictions in id order, insights in the order it "
            "inserts them, the known texts' hashes in `batch_known_text`) streamed from CSV "
            "files with `COPY ... (FORMAT csv)` into the three tables, one transaction "
            "(`import_vs_copy_robotoff_*`: the same runs' seconds in Robotoff's two tables only); "
            "INSERT×100 = the same rows, 100 per INSERT statement. vs raw COPY = "
            "COPY's time (same tables) / the case's time; vs INSERT×100 likewise (empty tables). "
            "Peak RSS = VmHWM of the case's process (the import's loads Dagster, DuckDB and the "
            "job type: "
            + ", ".join(
                f"{mib(r['import_rss_before_bytes'])} at {r['output_rows']:,}"
                for r in report["results"]
            )
            + " before reading anything). Both tables counted after every case.",
        ],
        table,
    )


def _ratio(numerator: float | None, denominator: float) -> str:
    """A ratio to two decimals, "–" for a case not run (INSERT×100 above --insert100-max-rows)."""
    return "–" if numerator is None else f"{numerator / denominator:.2f}"


def _repetitions(repeat: int | list[int], results: list[dict]) -> str:
    if isinstance(repeat, int):
        return f"{repeat} repetitions"
    return "repetitions " + ", ".join(
        f"{n} at {r['output_rows']:,} rows" for n, r in zip(repeat, results, strict=False)
    )


def _settings_text(env: dict[str, Any]) -> str:
    settings = env.get("server_settings")
    if not settings:
        return "default settings"
    return ", ".join(f"{k} {v}" for k, v in settings.items())


def _show(conninfo: str, name: str) -> str:
    import psycopg

    with psycopg.connect(conninfo) as conn:
        row = conn.execute(f"SHOW {name}").fetchone()
        return str(row[0]) if row else ""


def _pg_version(conninfo: str) -> str:
    import psycopg

    with psycopg.connect(conninfo) as conn:
        row = conn.execute("SHOW server_version").fetchone()
    return str(row[0]) if row else "?"


def _fresh_database(admin: str, name: str, template: str | None = None) -> str:
    import psycopg
    from psycopg import sql

    from robotoff_batch.predictions.embedded import with_database

    with psycopg.connect(admin, autocommit=True) as conn:
        conn.execute(
            sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(sql.Identifier(name))
        )
        if template is None:
            conn.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(name)))
        else:  # a file copy of the template (statistics included), not its WAL
            conn.execute(
                sql.SQL("CREATE DATABASE {} TEMPLATE {} STRATEGY FILE_COPY").format(
                    sql.Identifier(name), sql.Identifier(template)
                )
            )
        conn.execute("CHECKPOINT")
    # and the kernel's dirty pages (the previous case's writes, the template's file copy)
    # written out before the case starts, so that their writeback is not timed in this case
    os.sync()
    return with_database(admin, name)


def _robotoff_copy_s(runs: list[dict[str, Any]], key: str) -> float:
    """Median over the COPY runs of ``key`` of their seconds in Robotoff's two tables."""
    return statistics.median(
        sum(r["tables_s"][t] for t in TABLES) for r in runs if r["case"] == key
    )


def _median_run(runs: list[dict[str, Any]], key: str) -> dict[str, Any]:
    mine = sorted((r for r in runs if r["case"] == key), key=lambda r: r["seconds"])
    return mine[len(mine) // 2]


#: The embedded server's settings (``--server-settings``): PostgreSQL's defaults, or those of
#: Robotoff's own PostgreSQL as its repository ships them (docker-compose.yml:166 passes
#: ROBOTOFF_POSTGRES_SHARED_BUFFERS and ROBOTOFF_POSTGRES_WORK_MEM, .env:102-104 sets 1GB and
#: 64MB; its staging and production deployments 8GB/1GB and 16GB/2GB,
#: .github/workflows/container-deploy.yml:38-39, 61-62, more than this machine's share).
SERVER_SETTINGS: dict[str, dict[str, str]] = {
    "default": {},
    "robotoff": {"shared_buffers": "1GB", "work_mem": "64MB"},
}


def _apply_settings(data_dir: Path, settings: dict[str, str]) -> str:
    """Restart the embedded server of ``data_dir`` with ``settings``; its new URL."""
    import psycopg

    from robotoff_batch.predictions.embedded import (
        ensure_embedded_postgres,
        stop_embedded_postgres,
        with_database,
    )

    admin = with_database(ensure_embedded_postgres(data_dir), "postgres")
    with psycopg.connect(admin, autocommit=True) as conn:
        for name, value in settings.items():
            conn.execute(f"ALTER SYSTEM SET {name} = '{value}'")
    stop_embedded_postgres(data_dir)
    return ensure_embedded_postgres(data_dir)


def _load() -> float:
    return os.getloadavg()[0]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    to_int = lambda s: int(s.replace("_", ""))  # noqa: E731
    parser.add_argument("--sizes", nargs="+", type=to_int, default=[100_000, 1_000_000])
    parser.add_argument("--files", type=int, default=4, help="output files (tasks) per job")
    parser.add_argument("--changed-fraction", type=float, default=1.0)
    parser.add_argument(
        "--order",
        choices=OUTPUT_ORDERS,
        default="popularity",
        help="the outputs' row order: production's (popularity: no relation to the barcodes) "
        "or the barcodes ascending",
    )
    parser.add_argument(
        "--repeat",
        type=int,
        nargs="+",
        default=[3],
        help="repetitions (median): one number for every size, or one per size",
    )
    parser.add_argument("--prefill-predictions", type=to_int, default=5_000_000)
    parser.add_argument("--prefill-insights", type=to_int, default=2_000_000)
    parser.add_argument(
        "--insert100-max-rows",
        type=to_int,
        default=None,
        help="run the INSERT×100 case only up to this size (it takes ~10 min at 1M on 2 CPUs)",
    )
    parser.add_argument("--seed", type=int, default=42)
    parser.add_argument(
        "--server-settings",
        choices=sorted(SERVER_SETTINGS),
        default="default",
        help="the embedded server's settings: PostgreSQL's defaults, or Robotoff's "
        "(shared_buffers 1GB, work_mem 64MB); robotoff writes import_robotoff_settings.*",
    )
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
    parser.add_argument("--known-csv", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.worker:
        return worker(args)
    if len(args.repeat) not in (1, len(args.sizes)):
        parser.error("--repeat takes one number, or one per size")
    repeats = dict(zip(args.sizes, args.repeat * len(args.sizes), strict=False))

    configure_logging()
    import psycopg

    from robotoff_batch.predictions.embedded import ensure_embedded_postgres, with_database

    loadavg_start = list(os.getloadavg())
    work = Path(tempfile.mkdtemp(prefix="robotoff-batch-import-bench-"))
    data_dir = work / "postgres"
    logger.info("work directory %s", work)
    results = []
    try:
        conninfo = ensure_embedded_postgres(data_dir)
        if SERVER_SETTINGS[args.server_settings]:
            conninfo = _apply_settings(data_dir, SERVER_SETTINGS[args.server_settings])
        admin = with_database(conninfo, "postgres")
        server_settings = {
            name: _show(admin, name) for name in ("shared_buffers", "work_mem", "max_wal_size")
        }
        pg_version = _pg_version(conninfo)
        t0 = time.monotonic()
        template_url = prefill_template(
            admin,
            "bench_template",
            predictions=args.prefill_predictions,
            insights=args.prefill_insights,
            seed=args.seed,
        )
        prefill_s = time.monotonic() - t0
        base = _table_counts(template_url)
        assert base == {
            "prediction": args.prefill_predictions,
            "product_insight": args.prefill_insights,
            KNOWN_TABLE: 0,
        }, base
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
                order=args.order,
            )
            output_bytes = sum(p.stat().st_size for p in paths)
            stage_job(staging, job_id, paths)
            # what the import writes, in its order: from an untimed import into empty tables
            logger.info("%d rows: the rows the import writes (untimed import)", size)
            reference = _fresh_database(admin, "bench_reference")
            ref = run_case(
                "import", staging=staging, conninfo=reference, job_id=job_id, files=args.files
            )
            rows_csv, insights_csv = work / f"rows-{size}.csv", work / f"insights-{size}.csv"
            known_csv = work / f"known-{size}.csv"
            written = {
                "prediction": dump_rows(reference, rows_csv, table="prediction"),
                "product_insight": dump_rows(reference, insights_csv, table="product_insight"),
                KNOWN_TABLE: dump_rows(reference, known_csv, table=KNOWN_TABLE),
            }
            assert written["prediction"] == ref["predictions"], (written, ref)
            runs: list[dict[str, Any]] = []
            cases = [
                (m, t)
                for m, t in CASES
                if m != "insert100_all"
                or args.insert100_max_rows is None
                or size <= args.insert100_max_rows
            ]
            for repetition in range(repeats[size]):
                for mode, tables in cases:
                    key = f"{mode}_{tables}"
                    template = "bench_template" if tables == "prefilled" else None
                    db = _fresh_database(admin, "bench_case", template)
                    load = _load()
                    logger.info(
                        "%d rows, run %d/%d: %s (load %.2f)",
                        size,
                        repetition + 1,
                        repeats[size],
                        CASE_NAMES[(mode, tables)],
                        load,
                    )
                    options: dict[str, Any] = (
                        {"staging": staging, "job_id": job_id, "files": args.files}
                        if mode == "import"
                        else {
                            "rows_csv": rows_csv,
                            "insights_csv": insights_csv,
                            "known_csv": known_csv,
                        }
                    )
                    out = run_case(mode, conninfo=db, **options)
                    before = base if tables == "prefilled" else dict.fromkeys(COUNTED, 0)
                    expected = {t: before[t] + written[t] for t in COUNTED}
                    if out["counts"] != expected:
                        raise RuntimeError(f"{key}: tables hold {out['counts']}, not {expected}")
                    runs.append({"case": key, "repetition": repetition, "loadavg_1m": load, **out})
                    logger.info("  %.2f s", out["seconds"])
            median = {
                f"{m}_{t}": statistics.median(r["seconds"] for r in runs if r["case"] == f"{m}_{t}")
                for m, t in cases
            }

            peak = max(r["peak_rss_bytes"] for r in runs if r["case"].startswith("import"))
            row = {
                "output_rows": size,
                "output_files": args.files,
                "output_bytes": output_bytes,
                "predictions": written["prediction"],
                "insights_created": written["product_insight"],
                "median_s": median,
                "case_names": {f"{m}_{t}": CASE_NAMES[(m, t)] for m, t in cases},
                "ratios": {
                    "import_vs_copy_all_empty": median["copy_all_empty"] / median["import_empty"],
                    "import_vs_copy_all_prefilled": median["copy_all_prefilled"]
                    / median["import_prefilled"],
                    "prefilled_vs_empty": median["import_prefilled"] / median["import_empty"],
                    # the floor of Robotoff's two tables alone (the COPY runs' own per-table
                    # seconds, the same runs): the figure the issue first stated
                    "import_vs_copy_robotoff_empty": _robotoff_copy_s(runs, "copy_all_empty")
                    / median["import_empty"],
                    "import_vs_copy_robotoff_prefilled": _robotoff_copy_s(
                        runs, "copy_all_prefilled"
                    )
                    / median["import_prefilled"],
                    "import_vs_insert100_all": median["insert100_all_empty"]
                    / median["import_empty"]
                    if "insert100_all_empty" in median
                    else None,
                    "peak_rss_mib": peak / 2**20,
                },
                "import_rss_before_bytes": _median_run(runs, "import_empty")["rss_before_bytes"],
                "reimport_median_s": statistics.median(
                    r["reimport_s"] for r in runs if r["case"].startswith("import")
                ),
                "import_steps_s": {
                    "empty": _median_run(runs, "import_empty")["steps_s"],
                    "prefilled": _median_run(runs, "import_prefilled")["steps_s"],
                },
                "runs": runs,
            }
            logger.info("%d rows: %s", size, json.dumps(row["ratios"]))
            results.append(row)
            shutil.rmtree(staging, ignore_errors=True)
            for path in (rows_csv, insights_csv, known_csv):
                path.unlink()
            with psycopg.connect(admin, autocommit=True) as conn:
                for name in ("bench_case", "bench_reference"):
                    conn.execute(f"DROP DATABASE IF EXISTS {name} WITH (FORCE)")
    finally:
        remove_work_dir(work, data_dir, keep=args.keep, log=logger)

    env = environment(
        pyarrow=pa.__version__,
        psycopg=psycopg.__version__,
        postgresql=pg_version,
        files_per_job=args.files,
        changed_fraction=args.changed_fraction,
        output_order=args.order,
        repeat=args.repeat if len(args.repeat) > 1 else args.repeat[0],
        seed=args.seed,
        prefill_predictions=args.prefill_predictions,
        prefill_insights=args.prefill_insights,
        prefill_s=prefill_s,
        server_settings=server_settings,
        loadavg_start=loadavg_start,
        loadavg_end=list(os.getloadavg()),
    )
    name = (
        "import" if args.server_settings == "default" else f"import_{args.server_settings}_settings"
    )
    write_report(build_report(env, results), args.results_dir, name, to_markdown)
    return 0


if __name__ == "__main__":
    sys.exit(main())
