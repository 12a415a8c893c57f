"""Capacity fallback end to end: the real code location (sensor, launch, fallback and finish
runs), the real BatchServiceClient against the gRPC fake (a region that never allocates, one
that runs the real spellcheck container through the local runner), and a real PostgreSQL."""

from __future__ import annotations

import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import dagster as dg
import grpc
import psycopg
import pytest
import yaml

from robotoff_batch.batch.engine import JobNotFoundError, JobState
from robotoff_batch.batch.local import LocalBatchEngine
from robotoff_batch.config.loader import load_job_configs
from robotoff_batch.definitions import build_definitions
from robotoff_batch.job_types import load_registry
from robotoff_batch.job_types.ingredients_spellcheck import cached_lexicon
from robotoff_batch.names import BATCH_JOB_ID_TAG, FINISH_KIND, RUN_KIND_TAG, SUPERSEDED_TAG
from robotoff_batch.paths import JOB_CONFIGS_DIR, SAMPLE_DATA_DIR
from tests.fakes.fake_batch_service import (
    EmulatedCloudBatchEngineResource,
    FakeBatchService,
    emulated_cloud_resources,
    running_fake_batch_service,
)
from tests.fakes.pinned_weights import pin, stage_marker
from tests.fakes.settings import TEST_LOCATION, TEST_PROJECT
from tests.test_e2e import db_rows, failure_text, launch, launched_job_id, run_request, tick

JOB_TYPE = "ingredients-spellcheck"
IMAGE = "europe-docker.pkg.dev/robotoff/robotoff-batch/ingredients-spellcheck:0.1.0"
FALLBACK_LOCATION = "europe-west1"
QUOTA = (
    "Quota checking process decides to delay scheduling for the job due to inadequate "
    "quota [Quota: NVIDIA_L4_GPUS, limit: 0, usage: 0, wanted: 1]."
)


@pytest.fixture
def world(
    request: pytest.FixtureRequest, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, pg_db: str
) -> Iterator[Any]:
    """(defs, instance, resources, fake service): the spellcheck config with one alternative
    in europe-west1 (or the config keys a test's parameter sets), and europe-west4 never
    allocating."""
    monkeypatch.setenv("ROBOTOFF_BATCH_HOME", str(tmp_path / "home"))
    monkeypatch.setenv("ROBOTOFF_BATCH_IMPORT_RETRY_DELAY_S", "0")
    data = yaml.safe_load((JOB_CONFIGS_DIR / f"{JOB_TYPE}.yaml").read_text())
    data["resources"]["container_image_uri"] = IMAGE  # multi-region: readable in both
    data["fallback_after"] = "30m"
    subnet = f"projects/robotoff/regions/{FALLBACK_LOCATION}/subnetworks/default"
    data["fallbacks"] = [{"location": FALLBACK_LOCATION, "subnetwork": subnet}]
    data.update(getattr(request, "param", {}))
    pin(data)  # a deployment that staged the model's weights (marker below)
    path = tmp_path / "job_configs" / f"{JOB_TYPE}.yaml"
    path.parent.mkdir()
    path.write_text(yaml.safe_dump(data, sort_keys=False))
    registry = load_registry(load_job_configs([path]))
    lexicon, _ = cached_lexicon(str(SAMPLE_DATA_DIR / "food_sample_2026.parquet"))
    command = [*registry[JOB_TYPE].job_type.local_command, "--lexicon", lexicon.as_uri()]
    backend = LocalBatchEngine(state_dir=tmp_path / "vms", commands_by_image={IMAGE: command})
    with running_fake_batch_service(backend=backend) as service, dg.instance_for_test() as inst:
        service.hold_location(TEST_LOCATION, QUOTA)
        resources = emulated_cloud_resources(service.address, pg_db)
        stage_marker(resources["staging"].get_staging())
        resources["batch_engine"] = EmulatedCloudBatchEngineResource(
            gcp_project=TEST_PROJECT,
            gcp_location=TEST_LOCATION,
            emulator_host=service.address,
            extra_locations=registry[JOB_TYPE].config.locations,
        )
        defs = build_definitions(resources=resources, registry=list(registry.values()))
        yield defs, inst, resources, service
        for name in service.job_names():
            backend.cancel(job_id=name.rsplit("/", 1)[-1])


def launch_until_fallback(world: Any) -> tuple[str, dg.RunRequest, str | None]:
    """Launch a job (held in europe-west4), let it wait past fallback_after: the sensor asks
    for its fallback run."""
    defs, instance, resources, service = world
    result = launch(defs, instance, limit=15)
    assert result.success, failure_text(result)
    first = launched_job_id(result)
    early = tick(defs, instance, resources, None)
    assert not [r for r in early.run_requests if r.job_name.startswith("fallback_")]
    service.age_job(first, 31 * 60)
    due = tick(defs, instance, resources, early.cursor)
    (request,) = due.run_requests
    assert request.job_name == "fallback_ingredients_spellcheck"
    assert request.run_key == f"fallback-{first}-1" and request.partition_key == first
    return first, request, due.cursor


def follow_to_the_end(world: Any, cursor: str | None, job_ids: set[str]) -> dict[str, Any]:
    """Tick, running each finish run requested, until every one of ``job_ids`` has had one."""
    defs, instance, resources, _ = world
    finished: dict[str, Any] = {}
    for _ in range(400):
        result = tick(defs, instance, resources, cursor)
        cursor = result.cursor
        for request in result.run_requests:
            assert request.job_name.startswith("finish_"), request
            finished[request.partition_key] = run_request(defs, instance, request)
        if job_ids <= set(finished):
            return finished
        time.sleep(0.25)
    raise AssertionError(f"finish runs of {job_ids - set(finished)} never requested")


def imports(database_url: str) -> list[str]:
    with psycopg.connect(database_url) as conn:
        return [r[0] for r in conn.execute("SELECT batch_job_id FROM batch_job_import")]


def latest_meta(instance: dg.DagsterInstance, job_id: str) -> dict[str, Any]:
    event = instance.get_latest_materialization_event(
        dg.AssetKey(["ingredients_spellcheck", "batch_job"])
    )
    records = instance.fetch_materializations(
        dg.AssetRecordsFilter(
            asset_key=dg.AssetKey(["ingredients_spellcheck", "batch_job"]),
            asset_partitions=[job_id],
        ),
        limit=1,
    ).records
    assert event is not None and records
    mat = records[0].asset_materialization
    assert mat is not None
    return dict(mat.metadata)


def env_of(service: FakeBatchService, job_id: str) -> dict[str, str]:
    (created,) = [r for r in service.requests["CreateJob"] if r.job_id == job_id][:1]
    return dict(created.job.task_groups[0].task_spec.environment.variables)


def test_a_job_stuck_on_capacity_completes_in_the_fallback_location(world: Any, pg_db: str) -> None:
    defs, instance, resources, service = world
    first, request, cursor = launch_until_fallback(world)
    new = f"{first}-f1"
    relaunched = run_request(defs, instance, request)
    assert relaunched.success, failure_text(relaunched)
    engine = resources["batch_engine"].get_engine()
    assert engine.get_job(job_id=new).location == FALLBACK_LOCATION
    # a retried fallback run re-attaches: at most one job per alternative
    again = run_request(defs, instance, dg.RunRequest(**{**request._asdict(), "run_key": "again"}))
    assert again.success, failure_text(again)
    assert [n for n in service.job_names() if n.endswith(f"/jobs/{new}")] == [
        f"projects/{TEST_PROJECT}/locations/{FALLBACK_LOCATION}/jobs/{new}"
    ]
    assert [r.job_id for r in service.requests["CreateJob"]] == [first, new, new]
    # the same staged input, no re-extraction (one launch run); its own output folder
    assert env_of(service, new)["INPUT_FILE_PATH"] == env_of(service, first)["INPUT_FILE_PATH"]
    assert f"/{new}/output" in env_of(service, new)["OUTPUT_FILE_PATH"]
    # the chunks the replaced job finished are carried (none here: it never started)
    assert env_of(service, new)["CARRY_OUTPUT_URIS"] == env_of(service, first)["OUTPUT_FILE_PATH"]
    launches = instance.get_run_records(dg.RunsFilter(job_name="launch_ingredients_spellcheck"))
    assert len(launches) == 1

    finished = follow_to_the_end(world, cursor, {first, new})
    assert engine.get_job(job_id=first).state == JobState.CANCELLED
    assert engine.get_job(job_id=new).state == JobState.SUCCEEDED
    assert finished[first].success and finished[new].success, failure_text(finished[new])
    assert imports(pg_db) == [new]  # exactly one import
    assert db_rows(pg_db, new) and not db_rows(pg_db, first)
    # the chain, on both partitions
    meta = latest_meta(instance, new)
    assert meta["fallback_of"].value == first
    rows = [r.data for r in meta["chain"].value.records]
    assert [(r["batch job"], r["location"], r["state"]) for r in rows] == [
        (first, TEST_LOCATION, "CANCELLED"),
        (new, FALLBACK_LOCATION, "SUCCEEDED"),
    ]
    assert "NVIDIA_L4_GPUS" in rows[0]["why it moved on"]
    assert latest_meta(instance, first)["superseded_by"].value == new


def test_the_first_job_starting_as_the_fallback_fires_runs_exactly_one_job(
    world: Any, pg_db: str
) -> None:
    """The first job gets capacity just as the fallback run cancels it: it is cancelled, the
    fallback job runs; one job SUCCEEDS, one import."""
    defs, instance, resources, service = world
    first, request, cursor = launch_until_fallback(world)
    new = f"{first}-f1"
    service.capacity_on_cancel(first)
    relaunched = run_request(defs, instance, request)
    assert relaunched.success, failure_text(relaunched)
    finished = follow_to_the_end(world, cursor, {first, new})
    engine = resources["batch_engine"].get_engine()
    states = {j: engine.get_job(job_id=j).state for j in (first, new)}
    assert states == {first: JobState.CANCELLED, new: JobState.SUCCEEDED}
    assert all(r.success for r in finished.values())
    assert imports(pg_db) == [new]


def test_a_job_that_started_before_the_fallback_run_is_left_to_run(world: Any, pg_db: str) -> None:
    """The first job starts between the sensor's request and the fallback run: the run submits
    nothing, the first job completes and is the one import."""
    defs, instance, resources, service = world
    first, request, cursor = launch_until_fallback(world)
    service.release_hold(first)
    engine = resources["batch_engine"].get_engine()
    deadline = time.monotonic() + 60
    while engine.get_job(job_id=first).state != JobState.RUNNING:
        assert time.monotonic() < deadline
        time.sleep(0.1)
    relaunched = run_request(defs, instance, request)
    assert relaunched.success, failure_text(relaunched)
    with pytest.raises(JobNotFoundError):
        engine.get_job(job_id=f"{first}-f1")
    finished = follow_to_the_end(world, cursor, {first})
    assert finished[first].success and imports(pg_db) == [first]


def test_a_replaced_job_whose_cancel_failed_is_cancelled_by_the_follower(
    world: Any, pg_db: str
) -> None:
    """The fallback run submitted the new job but its cancel of the first one failed: the
    follower cancels the replaced job itself, so the chain still runs one job."""
    defs, instance, resources, service = world
    first, request, cursor = launch_until_fallback(world)
    new = f"{first}-f1"
    service.fail_calls_for_job("CancelJob", first, grpc.StatusCode.INTERNAL)
    run_request(defs, instance, request)
    engine = resources["batch_engine"].get_engine()
    assert engine.get_job(job_id=new).location == FALLBACK_LOCATION
    assert engine.get_job(job_id=first).state == JobState.QUEUED  # still waiting, not cancelled
    service.clear_job_faults()
    finished = follow_to_the_end(world, cursor, {first, new})
    states = {j: engine.get_job(job_id=j).state for j in (first, new)}
    assert states == {first: JobState.CANCELLED, new: JobState.SUCCEEDED}
    assert finished[first].success and imports(pg_db) == [new]


# -- the CLI without a daemon: `launch --wait` applies the sensor's result itself ----------------


def cli_workspace(world: Any, tmp_path: Path) -> Any:
    """The CLI's workspace on the world's code location and instance (no daemon runs)."""
    from robotoff_batch.cli import operations

    defs, instance, _, _ = world
    registry = load_registry(load_job_configs([tmp_path / "job_configs" / f"{JOB_TYPE}.yaml"]))
    assert not operations.daemon_follows(instance)
    return operations.Workspace(defs, instance, list(registry.values()))


def follow_with_the_cli(ws: Any, job_id: str, on_queued: Any) -> tuple[Any, list[str]]:
    """``launch --wait``'s follow of ``job_id``, ``on_queued(job_id)`` called once when the
    job is first seen QUEUED; the follower's warnings, as the CLI prints them."""
    from robotoff_batch.cli import operations

    said: list[str] = []

    def on_change(changed: str, old: str, new: str) -> None:
        if changed == job_id and new == "QUEUED":
            on_queued(job_id)

    outcome = operations.follow_job(
        ws,
        job_id=job_id,
        timeout_s=240,
        poll_s=0.25,
        on_change=on_change,
        on_message=lambda _level, message: said.append(message),
    )
    return outcome, said


def finish_run_tags(instance: dg.DagsterInstance, job_id: str) -> list[dict[str, str]]:
    runs = instance.get_runs(
        dg.RunsFilter(tags={BATCH_JOB_ID_TAG: job_id, RUN_KIND_TAG: FINISH_KIND})
    )
    return [dict(r.tags) for r in runs]


def test_the_cli_without_a_daemon_falls_back_and_imports_the_fallback_job(
    world: Any, tmp_path: Path, pg_db: str
) -> None:
    from robotoff_batch.cli import operations

    defs, instance, resources, service = world
    ws = cli_workspace(world, tmp_path)
    first = operations.launch(ws, job_type=JOB_TYPE, params={"limit": 15}).job_id
    new = f"{first}-f1"
    outcome, said = follow_with_the_cli(ws, first, lambda j: service.age_job(j, 31 * 60))
    assert outcome.status.job_id == new and outcome.status.state == JobState.SUCCEEDED
    assert outcome.imported and imports(pg_db) == [new]
    assert any("relaunching with alternative 1" in m for m in said), said
    engine = resources["batch_engine"].get_engine()
    assert engine.get_job(job_id=first).state == JobState.CANCELLED
    assert engine.get_job(job_id=new).location == FALLBACK_LOCATION
    # the replaced job's outcome is recorded as superseded, as the sensor's finish run does
    (tags,) = finish_run_tags(instance, first)
    assert tags[SUPERSEDED_TAG] == new and tags["dagster/run_key"] == f"finish-{first}"


def test_the_cli_without_a_daemon_never_imports_a_superseded_job_that_succeeded(
    world: Any, tmp_path: Path, pg_db: str
) -> None:
    """The fallback run submitted the new job but could not cancel the first one, which then
    got capacity and SUCCEEDED too: only the chain's last job is imported."""
    from robotoff_batch.cli import operations

    defs, instance, resources, service = world
    ws = cli_workspace(world, tmp_path)
    first = operations.launch(ws, job_type=JOB_TYPE, params={"limit": 15}).job_id
    new = f"{first}-f1"

    def wait_past_fallback_after(job_id: str) -> None:
        service.fail_calls_for_job("CancelJob", job_id, grpc.StatusCode.INTERNAL)
        service.age_job(job_id, 31 * 60)

    outcome, said = follow_with_the_cli(ws, first, wait_past_fallback_after)
    assert outcome.status.job_id == new and imports(pg_db) == [new]
    service.release_hold(first)  # capacity after all: the first job runs to the end too
    engine = resources["batch_engine"].get_engine()
    deadline = time.monotonic() + 120
    while engine.get_job(job_id=first).state != JobState.SUCCEEDED:
        assert time.monotonic() < deadline, engine.get_job(job_id=first).state
        time.sleep(0.25)
    again = operations.follow_job(ws, job_id=first, timeout_s=120, poll_s=0.25)
    assert again.status.job_id == new
    assert imports(pg_db) == [new] and not db_rows(pg_db, first)
    assert all(t.get(SUPERSEDED_TAG) == new for t in finish_run_tags(instance, first))


@pytest.mark.parametrize(
    "world",
    [{"fallbacks": [], "max_pending_duration": "1h", "cancel_when_stuck": True}],
    indirect=True,
)
def test_the_cli_without_a_daemon_reports_a_stuck_job_and_cancels_it_when_asked(
    world: Any, tmp_path: Path, pg_db: str
) -> None:
    from robotoff_batch.cli import operations

    defs, instance, resources, service = world
    ws = cli_workspace(world, tmp_path)
    first = operations.launch(ws, job_type=JOB_TYPE, params={"limit": 15}).job_id
    outcome, said = follow_with_the_cli(ws, first, lambda j: service.age_job(j, 61 * 60))
    assert outcome.status.job_id == first and outcome.status.state == JobState.CANCELLED
    stuck = [m for m in said if m.startswith(f"{first}: stuck, cancelled")]
    assert len(stuck) == 1 and "NVIDIA_L4_GPUS" in stuck[0], said
    assert service.calls["CancelJob"] == 1 and outcome.imported is None
    (tags,) = finish_run_tags(instance, first)
    assert SUPERSEDED_TAG not in tags


# -- SPOT that pays off: fall back to STANDARD after N preemptions -------------------------


def _running_with_preemptions(engine: LocalBatchEngine, job_id: str, n: int) -> None:
    """A running job whose tasks Batch reports preempted ``n`` times (exit code 50001), as
    Cloud Batch's status events say it; the local runner's VMs are never reclaimed, so the
    events are written into its state as Batch would append them."""
    import sys

    from robotoff_batch.batch.local.state import updating
    from tests.test_local_runner import IMAGE_SLEEP, make_request

    engine.commands_by_image[IMAGE_SLEEP] = [
        sys.executable,
        str(Path(__file__).parent / "fixtures" / "task_sleep_forever.py"),
    ]
    engine.submit(
        request=make_request(
            job_id,
            image=IMAGE_SLEEP,
            max_retry_count=3,
            variables={"OUT_DIR": str(engine.state_dir)},
        )
    )
    deadline = time.monotonic() + 30
    while engine.get_job(job_id=job_id).state is not JobState.RUNNING:
        assert time.monotonic() < deadline
        time.sleep(0.05)
    with updating(engine.job_dir(job_id)) as state:
        for _ in range(n):
            state.add_event(
                "TASK_STATE_CHANGED",
                "Task 0 failed with exit code 50001 (VM preempted); retrying.",
                task_index=0,
                task_exit_code=50001,
            )


@pytest.mark.parametrize(("preempted", "moves_on"), [(1, False), (2, True)])
def test_a_spot_job_preempted_n_times_falls_back(
    tmp_path: Path, preempted: int, moves_on: bool
) -> None:
    """plan_fallbacks asks for the next alternative once a running job was preempted
    fallback_after_preemptions times; relaunch then replaces it although it has started
    (a capacity fallback would leave a started job alone)."""
    from robotoff_batch.follow import FallbackPolicy, FollowCache, FollowPlan
    from robotoff_batch.follow.fallback import plan_fallbacks, relaunch
    from tests.test_local_runner import IMAGE_SLEEP, make_request

    engine = LocalBatchEngine(
        state_dir=tmp_path / "vms", commands_by_image={}, poll_interval_s=0.05
    )
    try:
        _running_with_preemptions(engine, "spot-job", preempted)
        status = engine.get_job(job_id="spot-job")
        plan = FollowPlan(cache=FollowCache())
        policies = {"test": FallbackPolicy(after_s=1800, alternatives=1, after_preemptions=2)}
        plan_fallbacks(plan, {"spot-job": status}, lambda j, s: "test", policies, time.time())
        if not moves_on:
            assert plan.fallback_requests == []
        else:
            (asked,) = plan.fallback_requests
            assert (asked.job_id, asked.origin, asked.index) == ("spot-job", "spot-job", 1)
            assert asked.reason.startswith("preempted 2 times (exit code 50001")
            # asked once: the next tick does not ask again
            plan_fallbacks(plan, {"spot-job": status}, lambda j, s: "test", policies, time.time())
            assert len(plan.fallback_requests) == 1

        def submit(new_id: str, labels: dict[str, str]) -> Any:
            return engine.submit(
                request=make_request(
                    new_id, image=IMAGE_SLEEP, labels=labels, variables={"OUT_DIR": str(tmp_path)}
                )
            )

        done = relaunch(
            engine=engine, job_id="spot-job", index=1, submit=submit, after_preemptions=2
        )
        if moves_on:
            assert done.new_job is not None and done.new_job.job_id == "spot-job-f1"
            deadline = time.monotonic() + 30
            while engine.get_job(job_id="spot-job").state is not JobState.CANCELLED:
                assert time.monotonic() < deadline
                time.sleep(0.05)
        else:  # started, not preempted enough: left to run, as a capacity fallback would
            assert done.new_job is None and "it runs, no fallback job" in done.note
            with pytest.raises(JobNotFoundError):
                engine.get_job(job_id="spot-job-f1")
    finally:
        for job in engine.list_jobs(labels={}):
            if not job.state.is_terminal:
                engine.cancel(job_id=job.job_id)
        engine.close()


def test_the_follow_settings_carry_fallback_after_preemptions(tmp_path: Path) -> None:
    """The sensor and the CLI follow by FollowSettings.from_registry: a config's
    fallback_after_preemptions reaches the policy plan_fallbacks reads."""
    from robotoff_batch.follow import FollowSettings

    data = yaml.safe_load((JOB_CONFIGS_DIR / f"{JOB_TYPE}.yaml").read_text())
    data["resources"]["container_image_uri"] = IMAGE  # multi-region: readable in both
    subnet = f"projects/robotoff/regions/{FALLBACK_LOCATION}/subnetworks/default"
    data["fallbacks"] = [{"location": FALLBACK_LOCATION, "subnetwork": subnet}]
    data["fallback_after_preemptions"] = 2
    path = tmp_path / f"{JOB_TYPE}.yaml"
    path.write_text(yaml.safe_dump(data, sort_keys=False))
    registry = load_registry(load_job_configs([path]))
    policy = FollowSettings.from_registry(registry.values()).fallbacks[JOB_TYPE]
    assert (policy.alternatives, policy.after_preemptions) == (1, 2)
