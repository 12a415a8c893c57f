"""A running job's progress, recorded by the follower: the real ``CloudBatchEngine`` against the
fake Batch service (task states and run times scripted), task manifests written in a real
local staging as the container writes them (docs/CONTRACTS.md), a real Dagster instance."""

from __future__ import annotations

import json
import time
import uuid
from dataclasses import replace
from datetime import UTC, datetime
from pathlib import Path

import pytest
from google.cloud import batch_v1

from robotoff_batch.batch.engine import JobState, TaskAttempt, TaskStatus
from robotoff_batch.follow import FollowCache, FollowSettings, follow
from robotoff_batch.follow.progress import StagingProgress, manifest_uri
from robotoff_batch.staging.local import LocalStaging
from tests.test_follow import JT, World, world  # noqa: F401 (fixture)

T0 = 1_800_000_000.0  # the follower's clock in these tests


def submit_running(w: World, tasks: int) -> str:
    """A job on an L4 machine, RUNNING, its tasks started 100 s before T0."""
    job_id = f"spell-{uuid.uuid4().hex[:12]}"
    policy = batch_v1.AllocationPolicy.InstancePolicy(
        machine_type="g2-standard-8",
        accelerators=[batch_v1.AllocationPolicy.Accelerator(type_="nvidia-l4", count=1)],
    )
    w.engine.submit(
        request=batch_v1.CreateJobRequest(
            parent=w.engine.parent,
            job_id=job_id,
            job=batch_v1.Job(
                labels={"app": "robotoff-batch", "job-type": JT},
                allocation_policy=batch_v1.AllocationPolicy(
                    instances=[batch_v1.AllocationPolicy.InstancePolicyOrTemplate(policy=policy)]
                ),
            ),
        )
    )
    w.backend.set(job_id, JobState.RUNNING)
    start = datetime.fromtimestamp(T0 - 100, UTC)
    w.backend.jobs[job_id] = replace(
        w.backend.jobs[job_id],
        tasks=tuple(
            TaskStatus(i, "RUNNING", attempts=1, runs=(TaskAttempt(1, start),))
            if i < tasks - 1
            else TaskStatus(i, "PENDING")
            for i in range(tasks)
        ),
    )
    return job_id


def write_manifest(
    staging: LocalStaging, job_id: str, index: int, shard: tuple[int, int], rows: list[int]
) -> None:
    uri = manifest_uri(staging.job_uri(job_type=JT, job_id=job_id), index)
    path = staging.path_of(uri)
    path.parent.mkdir(parents=True, exist_ok=True)
    chunks = [
        {"uri": f"{uri}/../chunk-{k:05d}.parquet", "first_row": 0, "rows": n, "skipped": 0}
        for k, n in enumerate(rows)
    ]
    path.write_text(
        json.dumps(
            {
                "format": 1,
                "task_index": index,
                "task_count": 3,
                "shard": list(shard),
                "chunk_rows": 1000,
                "engine": "lexicon-cpu",
                "predictor_version": "x",
                "complete": False,
                "chunks": chunks,
                "skipped": {},
                "attempts": [{"attempt": 1, "processed": sum(rows), "started_chunk": 0}],
            }
        )
    )


@pytest.fixture
def staging(tmp_path: Path) -> LocalStaging:
    return LocalStaging(root_uri=(tmp_path / "staging").as_uri())


def tick(w: World, staging: LocalStaging, cursor: str | None, now: float):  # type: ignore[no-untyped-def]
    cache, _ = FollowCache.decode(cursor)
    plan = follow(
        engine=w.engine,
        cache=cache,
        storage=w.storage,
        settings=FollowSettings(imports={JT: True}),
        now=now,
        progress=StagingProgress(w.engine, staging, w.instance),
    )
    return plan


def test_a_running_jobs_progress_is_observed_at_most_once_a_minute(
    world: World,  # noqa: F811 (fixture)
    staging: LocalStaging,
) -> None:
    job_id = submit_running(world, tasks=3)
    write_manifest(staging, job_id, 0, (0, 4000), [1000, 1000])
    write_manifest(staging, job_id, 1, (4000, 8000), [1000])
    # task 2 is PENDING: no manifest read; the total is then the launch's, unknown here
    first = tick(world, staging, None, T0)
    (observation,) = [o for o in first.observations if o.partition == job_id]
    meta = {k: v.value for k, v in observation.metadata.items()}
    assert meta["state"] == "RUNNING"  # the state change and the progress: one observation
    assert meta["tasks_by_state"] == "2 RUNNING, 1 PENDING"
    assert meta["products_done_count"] == 3000
    assert meta["products_done"] == "3,000 done"
    assert meta["throughput_per_s"] == 30.0  # 3,000 products in the 100 s since task 0 started
    assert "eta_s" not in meta and meta["eta"].startswith("unknown")
    assert (
        meta["cost_so_far"].startswith("$")
        and "2 attempt(s), 200.0 s of task time" in meta["cost_so_far"]
    )
    assert meta["cost_so_far_usd"] > 0
    # within the minute: nothing read, nothing observed
    calls = dict(world.service.calls)
    second = tick(world, staging, first.cache.encode(), T0 + 59)
    assert not second.observations
    assert world.service.calls["GetJob"] == calls.get("GetJob", 0)
    assert world.service.calls["ListTasks"] == calls.get("ListTasks", 0)
    # a minute later, every task started and wrote its manifest: the total and an ETA
    world.backend.jobs[job_id] = replace(
        world.backend.jobs[job_id],
        tasks=tuple(
            TaskStatus(
                i,
                "RUNNING",
                attempts=1,
                runs=(TaskAttempt(1, datetime.fromtimestamp(T0 - 100, UTC)),),
            )
            for i in range(3)
        ),
    )
    write_manifest(staging, job_id, 2, (8000, 12000), [1000, 1000, 1000])
    third = tick(world, staging, second.cache.encode(), T0 + 60)
    (observation,) = [o for o in third.observations if o.partition == job_id]
    meta = {k: v.value for k, v in observation.metadata.items()}
    assert meta["products_done"] == "6,000 / 12,000 (50.0 %)"
    assert meta["products_total"] == 12000
    # 6,000 products in 160 s: 37.5/s, 6,000 left: 160 s
    assert meta["throughput_per_s"] == 37.5 and meta["eta_s"] == 160.0
    assert meta["eta"].startswith("3 min (about ")


def test_reading_progress_stays_flat_in_the_number_of_jobs(
    world: World,  # noqa: F811 (fixture)
    staging: LocalStaging,
) -> None:
    """40 jobs QUEUED or ended and 2 RUNNING: progress reads the 2 only (one GetJob and one
    ListTasks each), once a minute; the ended and waiting jobs cost no call."""
    waiting = world.submit(20, registered=True)
    ended = world.submit(20, registered=True)
    for job_id in ended:
        world.backend.set(job_id, JobState.SUCCEEDED, exit_codes=[0])
    running = [submit_running(world, tasks=2) for _ in range(2)]
    before = dict(world.service.calls)
    plan = tick(world, staging, None, T0)
    got = {k: world.service.calls[k] - before.get(k, 0) for k in ("GetJob", "ListTasks")}
    assert got == {"GetJob": 2, "ListTasks": 2}
    progressed = {o.partition for o in plan.observations if "tasks_by_state" in o.metadata}
    assert progressed == set(running)
    assert not set(waiting) & set(plan.cache.progressed)
    cursor = plan.cache.encode()
    for minute in range(1, 4):
        before = dict(world.service.calls)
        plan = tick(world, staging, cursor, T0 + 60 * minute)
        cursor = plan.cache.encode()
        got = {k: world.service.calls[k] - before.get(k, 0) for k in ("GetJob", "ListTasks")}
        assert got == {"GetJob": 2, "ListTasks": 2}
    # a job that ends is forgotten by the progress reading
    world.backend.set(running[0], JobState.SUCCEEDED, exit_codes=[0])
    plan = tick(world, staging, cursor, T0 + 300)
    assert set(plan.cache.progressed) == {running[1]}
    assert time.time() > 0


def test_the_sensor_records_a_running_jobs_progress_from_its_manifests(
    tmp_path: Path, pg_db: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """End to end on the local runner: a 'container' that writes its task manifest (under
    OUTPUT_FILE_PATH, as the real one does) then works on; the sensor's tick observes the
    products done from it."""
    import sys

    import dagster as dg

    from tests.test_e2e import launch, launched_job_id, make_defs, make_resources
    from tests.test_e2e import tick as sensor_tick

    monkeypatch.setenv("ROBOTOFF_BATCH_HOME", str(tmp_path / "home"))
    script = (
        "import json, os, pathlib, time, urllib.parse\n"
        "out = os.environ['OUTPUT_FILE_PATH']\n"
        "path = pathlib.Path(urllib.parse.urlparse(out).path) / 'task-00000' / 'manifest.json'\n"
        "path.parent.mkdir(parents=True, exist_ok=True)\n"
        "path.write_text(json.dumps({'shard': [0, 10], 'complete': False, 'chunks': "
        "[{'rows': 4}]}))\n"
        "time.sleep(600)\n"
    )
    resources = make_resources(tmp_path, pg_db, command=[sys.executable, "-c", script])
    defs = make_defs(resources)
    with dg.instance_for_test() as inst:
        job_id = launched_job_id(launch(defs, inst, limit=10))
        cursor = None
        seen: dict[str, object] = {}
        deadline = time.monotonic() + 60
        try:
            while time.monotonic() < deadline and "products_done_count" not in seen:
                result = sensor_tick(defs, inst, resources, cursor)
                cursor = result.cursor
                for event in result.asset_events or []:
                    if "products_done_count" in event.metadata:
                        seen = {k: v.value for k, v in event.metadata.items()}
                # the manifest may come after the first reading: forget it to read again
                cache, _ = FollowCache.decode(cursor)
                cache.progressed.clear()
                cursor = cache.encode()
                time.sleep(0.5)
        finally:
            resources["batch_engine"].get_engine().cancel(job_id=job_id)
        assert seen.get("products_done_count") == 4, seen
        assert seen["tasks_by_state"] == "1 RUNNING"
        assert str(seen["products_done"]).startswith("4 / ")


def test_status_of_a_running_job_prints_its_progress(
    tmp_path: Path, pg_db: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """``robotoff-batch status JOB`` on the embedded defaults: the same reading as the
    follower's (tasks, products, throughput, ETA, cost so far)."""
    import sys

    from typer.testing import CliRunner

    from robotoff_batch.batch.local import LocalBatchEngine
    from robotoff_batch.cli import app
    from robotoff_batch.job_types import load_registry
    from tests.test_cloud_batch import make_request, wait_for

    home = tmp_path / "home"
    monkeypatch.setenv("ROBOTOFF_BATCH_HOME", str(home))
    monkeypatch.setenv("DAGSTER_HOME", str(tmp_path / "dagster_home"))
    monkeypatch.setenv("ROBOTOFF_DATABASE_URL", pg_db)
    monkeypatch.delenv("ROBOTOFF_BATCH_ENV", raising=False)
    monkeypatch.delenv("ROBOTOFF_BATCH_STAGING_URI", raising=False)
    image = load_registry()[JT].config.resources.container_image_uri
    script = (
        "import json, os, pathlib, time, urllib.parse\n"
        "out = os.environ['OUTPUT_FILE_PATH']\n"
        "path = pathlib.Path(urllib.parse.urlparse(out).path) / 'task-00000' / 'manifest.json'\n"
        "path.parent.mkdir(parents=True, exist_ok=True)\n"
        "path.write_text(json.dumps({'shard': [0, 10], 'complete': False, 'chunks': "
        "[{'rows': 4}]}))\n"
        "print('manifest written', flush=True)\n"
        "time.sleep(600)\n"
    )
    engine = LocalBatchEngine(
        state_dir=home / "local-batch", commands_by_image={image: [sys.executable, "-c", script]}
    )
    job_id = "spell-cli-progress"
    out = LocalStaging(root_uri=(home / "staging").as_uri()).job_uri(job_type=JT, job_id=job_id)
    request = make_request(job_id, image=image, env={"OUTPUT_FILE_PATH": f"{out}/output"})
    request.parent = "projects/local/locations/local"
    engine.submit(request=request)
    try:
        wait_for(lambda: engine.log_tail(job_id=job_id) == "manifest written", timeout=60)
        shown = CliRunner().invoke(app, ["status", job_id])
    finally:
        engine.cancel(job_id=job_id)
    assert shown.exit_code == 0, shown.output
    assert "tasks: 1 RUNNING" in shown.output
    assert "products: 4 / 10 (40.0 %)" in shown.output
    assert "ETA: " in shown.output and "throughput: " in shown.output
    assert "would-be cost so far" in shown.output
