"""Following jobs: sensor tick cost at 10/100/1,000 jobs in flight, click-to-imported with real
`dagster dev`, and the launch step on a large dump for a vLLM job and for the CPU engine.

    .venv/bin/python benchmarks/follow_benchmark.py            # --jobs 10 100 1000 --clicks 3
    # options: --launch-dump 1000000 (rows of a generated dump; 0 skips) --results-dir DIR

1. Ticks: the real ``batch_job_sensor`` of the real code location (``build_sensor_context``,
   requests applied as the daemon would), its engine the real ``BatchServiceClient`` against the
   gRPC fake (tests/fakes), a SQLite Dagster instance, the real PostgreSQL ledger. Per N: the first
   tick (registers N partitions, N observations), a steady tick (nothing changed), the tick at
   which all N ended (N finish runs requested); Batch API calls per tick from the fake's counters;
   Dagster/ledger reads per tick from ``follow`` with a counting ``FollowStorage``.
2. Click-to-imported: ``launchRun`` through the UI's GraphQL on `dagster dev` (the default
   sensor interval, 1 s for the local runner, and the embedded instance's dagster.yaml) until
   the job's finish run is SUCCESS, median of ``--clicks``.
3. Launch step: the launch run of 50,000 products on a generated dump, for the production
   config (vLLM: no lexicon) on the fake Cloud Batch, and for the local runner's CPU engine
   (lexicon built once, then cached).

Writes ``results/follow.json`` and ``results/follow.md``.
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
from collections import Counter
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from benchmarks.common import RESULTS_DIR, configure_logging, environment  # noqa: E402

logger = logging.getLogger("follow_benchmark")
JOB_TYPE = "ingredients-spellcheck"


def new_database(url: str, name: str) -> str:
    """A new, empty database on the benchmark's embedded server."""
    import psycopg

    from robotoff_batch.predictions.embedded import with_database

    with psycopg.connect(url, autocommit=True) as conn:
        conn.execute(f'CREATE DATABASE "{name}"')
    return with_database(url, name)


def tick_case(n: int, database_url: str) -> dict[str, Any]:
    import dagster as dg
    from google.cloud import batch_v1

    from robotoff_batch.batch.engine import JobState
    from robotoff_batch.definitions import build_definitions
    from robotoff_batch.follow import FollowCache, FollowSettings, follow
    from tests.counting_storage import CountingStorage
    from tests.fakes.fake_batch_service import (
        emulated_cloud_resources,
        running_fake_batch_service,
    )
    from tests.fakes.scripted_backend import ScriptedBackend

    backend = ScriptedBackend()
    out: dict[str, Any] = {"jobs": n}
    with running_fake_batch_service(backend=backend) as service, dg.instance_for_test() as inst:
        resources = emulated_cloud_resources(service.address, database_url)
        engine = resources["batch_engine"].get_engine()
        ids = [f"spell-{i:06d}-{int(time.time())}" for i in range(n)]
        for job_id in ids:
            engine.submit(
                request=batch_v1.CreateJobRequest(
                    parent=engine.parent,
                    job_id=job_id,
                    job=batch_v1.Job(labels={"app": "robotoff-batch", "job-type": JOB_TYPE}),
                )
            )
            backend.set(job_id, JobState.RUNNING)
        defs = build_definitions(resources=resources)
        sensor = defs.get_sensor_def("batch_job_sensor")

        def tick(cursor: str | None) -> tuple[dg.SensorResult, float, dict[str, int]]:
            """The sensor's evaluation (timed: what the daemon's 60 s timeout bounds), then its
            requests applied as the daemon would (timed apart, ``apply_s``)."""
            before = Counter(service.calls)
            started = time.perf_counter()
            context = dg.build_sensor_context(instance=inst, cursor=cursor, resources=resources)
            result = sensor(context)
            seconds = time.perf_counter() - started
            applied = time.perf_counter()
            for request in result.dynamic_partitions_requests or []:
                inst.add_dynamic_partitions(
                    request.partitions_def_name, list(request.partition_keys)
                )
            for event in result.asset_events or []:
                inst.report_runless_asset_event(event)
            out.setdefault("apply_s", []).append(time.perf_counter() - applied)
            calls = {k: v - before[k] for k, v in service.calls.items() if v - before[k]}
            return result, seconds, calls

        first, out["first_tick_s"], out["first_tick_calls"] = tick(None)
        assert len(first.asset_events) == n
        steady, out["steady_tick_s"], out["steady_tick_calls"] = tick(first.cursor)
        assert not steady.asset_events and not steady.run_requests
        for job_id in ids:
            backend.set(job_id, JobState.SUCCEEDED, exit_codes=[0])
        cache, _ = FollowCache.decode(steady.cursor)
        storage = CountingStorage(inst, resources["prediction_store"])
        settings = FollowSettings(imports={JOB_TYPE: True})
        plan = follow(engine=engine, cache=cache, storage=storage, settings=settings)
        out["ended_follow_storage_reads"] = dict(storage.calls)
        ended, out["ended_tick_s"], out["ended_tick_calls"] = tick(steady.cursor)
        assert len(ended.run_requests) == n == len(plan.finish_requests)
    logger.info("%d jobs: %s", n, out)
    return out


def click_case(database_url: str, work: Path, i: int) -> float:
    from tests.dagster_dev_harness import DagsterDev, is_finish_of

    # the default sensor interval (local: 1 s)
    dev = DagsterDev(work / f"click-{i}", database_url, sensor_interval_s=None)
    try:
        dev.start()
        clicked = time.monotonic()
        job_id = dev.launched_job_id(dev.launch(limit=40))
        finish = dev.wait_for_run(is_finish_of(job_id, "SUCCESS", "FAILURE"), what="finish run")
        seconds = time.monotonic() - clicked
        assert finish["status"] == "SUCCESS", finish
    finally:
        dev.stop()
    logger.info("click %d: %.1f s", i, seconds)
    return seconds


def launch_case(dump: Path, engine: str, work: Path, database_url: str) -> dict[str, Any]:
    """Seconds of the launch run (one step) of 50,000 products, from the Dagster event log."""
    import dagster as dg

    from robotoff_batch.assets.launch import launch_op_name
    from robotoff_batch.definitions import build_definitions
    from robotoff_batch.job_types import local_commands
    from robotoff_batch.job_types.ingredients_spellcheck import SpellcheckLaunch
    from robotoff_batch.resources import (
        LocalBatchEngineResource,
        LocalStagingResource,
        PostgresPredictionStoreResource,
        ProductDumpResource,
    )
    from tests.fakes.fake_batch_service import (
        EmulatedCloudBatchEngineResource,
        running_fake_batch_service,
    )
    from tests.fakes.settings import TEST_LOCATION, TEST_PROJECT

    with running_fake_batch_service(backend=None) as service, dg.instance_for_test() as inst:
        if engine == "vllm":
            batch = EmulatedCloudBatchEngineResource(
                gcp_project=TEST_PROJECT,
                gcp_location=TEST_LOCATION,
                emulator_host=service.address,
            )
        else:
            batch = LocalBatchEngineResource(
                state_dir=str(work / "batch"), job_type_commands=local_commands()
            )
        resources = {
            "product_dump": ProductDumpResource(path=str(dump)),
            "staging": LocalStagingResource(root_uri=(work / f"staging-{engine}").as_uri()),
            "batch_engine": batch,
            "prediction_store": PostgresPredictionStoreResource(database_url=database_url),
        }
        job = build_definitions(resources=resources).resolve_job_def(
            "launch_ingredients_spellcheck"
        )
        results = []
        for attempt in ("first", "second"):
            started = time.monotonic()
            run = job.execute_in_process(
                run_config=dg.RunConfig(
                    ops={launch_op_name("ingredients_spellcheck"): SpellcheckLaunch(limit=50_000)}
                ),
                instance=inst,
            )
            wall = time.monotonic() - started
            meta = {}
            for event in run.get_asset_materialization_events():
                mat = event.materialization
                if mat.asset_key.path[-1] in ("products", "staged_input"):
                    meta.update({k: v.value for k, v in mat.metadata.items()})
            results.append(
                {
                    "attempt": attempt,
                    "launch_run_s": wall,
                    "rows": meta.get("rows"),
                    "files": meta.get("files"),
                    "staged_bytes": meta.get("bytes"),
                    "lexicon_cache": meta.get("lexicon_cache"),
                }
            )
            logger.info("launch %s %s: %.1f s %s", engine, attempt, wall, results[-1])
            if batch.kind == "local":
                batch.get_engine().cancel(job_id=str(meta.get("batch_job_id")))
    return {"engine": engine, "runs": results}


def to_markdown(report: dict[str, Any]) -> str:
    lines = [
        "# Following jobs: sensor ticks, click-to-imported, launch step",
        "",
        f"Generated {report['generated']} on {report['environment']['cpus']} CPUs, "
        f"{report['environment']['platform']}, Python {report['environment']['python']}. "
        "`benchmarks/follow_benchmark.py`; how it measures: its docstring.",
        "",
        "## Sensor tick (real sensor, real BatchServiceClient over gRPC to the fake, SQLite)",
        "",
        "Tick = the sensor's evaluation (what the daemon's 60 s sensor timeout bounds). "
        "Applying its result (N partitions added, N observations written, by the daemon) is "
        "timed apart: the first tick's apply.",
        "",
        "| jobs in flight | first tick s | first apply s | steady tick s | all-ended tick s "
        "| Batch calls per tick (first / steady / ended) | Dagster + ledger reads (ended) |",
        "|---:|---:|---:|---:|---:|---|---|",
    ]
    for t in report["ticks"]:
        calls = " / ".join(
            ", ".join(f"{k} {v}" for k, v in sorted(t[k].items()))
            for k in ("first_tick_calls", "steady_tick_calls", "ended_tick_calls")
        )
        reads = ", ".join(f"{k} {v}" for k, v in sorted(t["ended_follow_storage_reads"].items()))
        lines.append(
            f"| {t['jobs']:,} | {t['first_tick_s']:.2f} | {t['apply_s'][0]:.2f} "
            f"| {t['steady_tick_s']:.2f} "
            f"| {t['ended_tick_s']:.2f} | {calls} | {reads} |"
        )
    clicks = report.get("clicks") or []
    if clicks:
        lines += [
            "",
            "## Click to imported (real `dagster dev`, 40 products, default sensor interval 10 s)",
            "",
            f"Runs: {', '.join(f'{c:.1f}' for c in clicks)} s; median "
            f"**{statistics.median(clicks):.1f} s** (target ≤ 25 s).",
        ]
    launches = report.get("launches") or []
    if launches:
        lines += [
            "",
            f"## Launch step, 50,000 products of a generated {report['launch_dump_rows']:,}-row "
            "dump",
            "",
            "| engine | attempt | launch run s | files staged | lexicon |",
            "|---|---|---:|---|---|",
        ]
        for case in launches:
            for r in case["runs"]:
                lines.append(
                    f"| {case['engine']} | {r['attempt']} | {r['launch_run_s']:.1f} "
                    f"| {', '.join(r['files'] or [])} | {r['lexicon_cache'] or '—'} |"
                )
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--jobs", type=int, nargs="+", default=[10, 100, 1000])
    parser.add_argument("--clicks", type=int, default=3)
    parser.add_argument("--launch-dump", type=lambda s: int(s.replace("_", "")), default=1_000_000)
    parser.add_argument("--results-dir", type=Path, default=RESULTS_DIR)
    parser.add_argument(
        "--only-ticks", action="store_true", help="re-measure the ticks, keep the rest of the file"
    )
    args = parser.parse_args(argv)
    configure_logging()

    from robotoff_batch.paths import home_dir
    from robotoff_batch.predictions.embedded import ensure_embedded_postgres, stop_embedded_postgres

    dumps_dir = home_dir() / "benchmarks"
    work = Path(tempfile.mkdtemp(prefix="follow-benchmark-"))
    data_dir = work / "pg"
    url = ensure_embedded_postgres(data_dir)
    report: dict[str, Any] = {
        "generated": datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ"),
        "environment": environment(),
    }
    try:
        os.environ["ROBOTOFF_BATCH_HOME"] = str(work / "home")
        report["ticks"] = [tick_case(n, new_database(url, f"ticks_{n}")) for n in args.jobs]
        previous = args.results_dir / "follow.json"
        if args.only_ticks and previous.exists():
            old = json.loads(previous.read_text())
            report.update(
                {k: old[k] for k in ("clicks", "launches", "launch_dump_rows") if k in old}
            )
            args.clicks = args.launch_dump = 0
        if args.clicks:
            report["clicks"] = [
                click_case(new_database(url, f"click_{i}"), work, i) for i in range(args.clicks)
            ]
        if args.launch_dump:
            dump = dumps_dir / f"food_generated_{args.launch_dump}_seed42.parquet"
            if not dump.exists():
                dump.parent.mkdir(parents=True, exist_ok=True)
                generator = str(Path(__file__).with_name("generate_dump.py"))
                subprocess.run(
                    [sys.executable, generator, str(args.launch_dump), str(dump), "--seed", "42"],
                    check=True,
                )
            report["launch_dump_rows"] = args.launch_dump
            db = new_database(url, "launch")
            report["launches"] = [
                launch_case(dump, engine, work, db) for engine in ("vllm", "lexicon-cpu")
            ]
    finally:
        stop_embedded_postgres(data_dir)
    args.results_dir.mkdir(parents=True, exist_ok=True)
    (args.results_dir / "follow.json").write_text(json.dumps(report, indent=2) + "\n")
    (args.results_dir / "follow.md").write_text(to_markdown(report))
    print(to_markdown(report))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
