"""The follow function, case by case: the real ``CloudBatchEngine`` and ``BatchServiceClient``
against the fake Batch service (job states scripted per case), a real Dagster instance and a
real PostgreSQL import ledger."""

from __future__ import annotations

import logging
import os
import time
import uuid
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import dagster as dg
import grpc
import psycopg
import pytest
from google.cloud import batch_v1

from robotoff_batch.assets.batch_job import failure_reason
from robotoff_batch.batch.cloud_batch import CloudBatchEngine
from robotoff_batch.batch.engine import JobState, cancel_once
from robotoff_batch.follow import (
    FallbackPolicy,
    FollowCache,
    FollowPlan,
    FollowSettings,
    PendingLimit,
    follow,
)
from robotoff_batch.follow.settle import retry_delay
from robotoff_batch.follow.storage import worker_gone, worker_id
from robotoff_batch.names import (
    BATCH_JOB_ID_TAG,
    FALLBACK_INDEX_LABEL,
    FALLBACK_OF_LABEL,
    FINISH_KIND,
    OWNER_LABEL,
    REFUSED_TAG,
    RUN_KIND_TAG,
    SUPERSEDED_TAG,
    WORKER_TAG,
    partitions_def_name,
    predictions_asset_key,
)
from robotoff_batch.predictions.store import PredictionStore
from tests.counting_storage import CountingStorage
from tests.fakes.fake_batch_service import FakeBatchService, running_fake_batch_service
from tests.fakes.scripted_backend import ScriptedBackend
from tests.fakes.settings import TEST_LOCATION, TEST_PROJECT, fast_batch_retry

JT = "ingredients-spellcheck"
PARTITIONS = partitions_def_name(JT)


@dataclass
class World:
    backend: ScriptedBackend
    service: FakeBatchService
    engine: CloudBatchEngine
    instance: dg.DagsterInstance
    storage: CountingStorage
    database_url: str

    def submit(
        self, n: int = 1, *, owner: str | None = None, registered: bool = False
    ) -> list[str]:
        ids = []
        for _ in range(n):
            job_id = f"spell-{uuid.uuid4().hex[:12]}"
            labels = {"app": "robotoff-batch", "job-type": JT}
            if owner:
                labels[OWNER_LABEL] = owner
            self.engine.submit(
                request=batch_v1.CreateJobRequest(
                    parent=self.engine.parent, job_id=job_id, job=batch_v1.Job(labels=labels)
                )
            )
            ids.append(job_id)
        if registered:
            self.instance.add_dynamic_partitions(PARTITIONS, ids)
        return ids

    def tick(
        self,
        cursor: str | None,
        *,
        imports: bool = True,
        now: float | None = None,
        only: set[str] | None = None,
        **settings: Any,
    ) -> FollowPlan:
        """One follow, its partitions registered as the daemon would; ``settings``: those of
        :class:`FollowSettings` other than ``imports``."""
        cache, _ = FollowCache.decode(cursor)
        plan = follow(
            engine=self.engine,
            cache=cache,
            storage=self.storage,
            settings=FollowSettings(imports={JT: imports}, **settings),
            only=only,
            now=now,
        )
        for jt, ids in plan.new_partitions.items():
            self.instance.add_dynamic_partitions(partitions_def_name(jt), ids)
        return plan

    def finish_run(
        self, job_id: str, status: dg.DagsterRunStatus, *, worker: str | None = None, **tags: str
    ) -> str:
        run_id = str(uuid.uuid4())
        all_tags = {BATCH_JOB_ID_TAG: job_id, RUN_KIND_TAG: FINISH_KIND, **tags}
        if worker:
            all_tags[WORKER_TAG] = worker
        failed = status == dg.DagsterRunStatus.FAILURE
        run = dg.DagsterRun(
            job_name="finish_ingredients_spellcheck",
            run_id=run_id,
            status=dg.DagsterRunStatus.STARTED if failed else status,
            tags=all_tags,
        )
        self.instance.add_run(run)
        if failed:  # with its failure event, so the run has an end time
            self.instance.report_run_failed(run, "injected failure")
        return run_id

    def ledger(self, job_id: str) -> None:
        with psycopg.connect(self.database_url) as conn:
            conn.execute(
                "INSERT INTO batch_job_import (batch_job_id, job_type, predictions, source_rows,"
                " skipped_rows) VALUES (%s, %s, 1, 1, 0)",
                (job_id, JT),
            )


@pytest.fixture
def world(pg_db: str) -> Iterator[World]:
    backend = ScriptedBackend()
    store = PredictionStore(conninfo=pg_db)
    store.ensure_schema()
    with running_fake_batch_service(backend=backend) as service, dg.instance_for_test() as inst:
        engine = CloudBatchEngine(
            project=TEST_PROJECT,
            location=TEST_LOCATION,
            client=service.client(),
            retry=fast_batch_retry(),
            timeout=10.0,
        )
        yield World(backend, service, engine, inst, CountingStorage(inst, store), pg_db)


@pytest.mark.parametrize(
    "cursor",
    [None, "", "{not json", '{"tracked": {"x": {"job_type": "a"}}}', '{"version": 2}', "[1, 2]"],
    ids=["none", "empty", "corrupt", "old-format", "missing-keys", "not-an-object"],
)
def test_a_lost_or_corrupt_cursor_loses_no_job(world: World, cursor: str | None) -> None:
    running = world.submit(2) + world.submit(1, registered=True)
    done = world.submit(1, registered=True)  # SUCCEEDED while nobody followed: the old bug
    for job_id in running:
        world.backend.set(job_id, JobState.RUNNING)
    world.backend.set(done[0], JobState.SUCCEEDED, exit_codes=[0])

    plan = world.tick(cursor)
    assert sorted(plan.new_partitions[JT]) == sorted(running[:2])
    assert {o.partition for o in plan.observations} == set(running)
    assert [(r.job_id, r.attempt, r.with_import) for r in plan.finish_requests] == [
        (done[0], 0, True)
    ]
    assert not plan.errors
    # the rebuilt cache is complete: a second tick records nothing new
    again = world.tick(plan.cache.encode())
    assert not again.observations and not again.new_partitions
    assert world.service.calls["ListJobs"] == 2 and world.service.calls["GetJob"] == 0


def test_a_job_deleted_behind_our_back_ends_deleted_with_a_reason(world: World) -> None:
    tracked, unwatched = world.submit(2, registered=True)
    for job_id in (tracked, unwatched):
        world.backend.set(job_id, JobState.RUNNING)
    plan = world.tick(None)
    world.service.delete_behind_back(tracked)
    world.service.delete_behind_back(unwatched)

    # one follower had it in its cache; another lost its cache (the partition is all we have)
    for cursor in (plan.cache.encode(), None):
        later = world.tick(cursor)
        assert sorted(r.job_id for r in later.finish_requests) == sorted([tracked, unwatched])
        assert all(not r.with_import for r in later.finish_requests)
        assert later.statuses[tracked].state == JobState.DELETED
        assert "deleted outside robotoff-batch" in later.statuses[tracked].failure_summary
        assert not later.errors


def test_a_cancellation_in_progress_is_not_sent_again(world: World) -> None:
    owner = str(uuid.uuid4())
    world.instance.add_run(
        dg.DagsterRun(
            job_name="launch_ingredients_spellcheck",
            run_id=owner,
            status=dg.DagsterRunStatus.CANCELED,
        )
    )
    (job_id,) = world.submit(owner=owner)
    world.backend.set(job_id, JobState.RUNNING)
    cursor: str | None = None
    seen: list[str] = []
    for tick in range(5):
        plan = world.tick(None if tick == 3 else cursor)  # tick 3: the cursor was lost
        cursor = plan.cache.encode()
        seen += [str(o.metadata["state"].value) for o in plan.observations]
        assert not plan.finish_requests
    assert world.backend.cancels[job_id] == 1
    assert world.service.calls["CancelJob"] == 1
    assert seen[:2] == ["RUNNING", "CANCELLATION_IN_PROGRESS"]
    assert seen.count("CANCELLATION_IN_PROGRESS") == 2  # once, and once more after the loss

    world.backend.set(job_id, JobState.CANCELLED)
    ended = world.tick(cursor)
    assert [(r.job_id, r.with_import) for r in ended.finish_requests] == [(job_id, False)]


def test_a_deletion_in_progress_for_several_ticks_is_recorded_once(world: World) -> None:
    (job_id,) = world.submit()
    world.backend.set(job_id, JobState.DELETION_IN_PROGRESS)
    cursor = None
    states = []
    for _ in range(4):
        plan = world.tick(cursor)
        cursor = plan.cache.encode()
        states += [str(o.metadata["state"].value) for o in plan.observations]
        assert not plan.finish_requests and not plan.cancelled
    assert states == ["DELETION_IN_PROGRESS"]


@pytest.mark.parametrize(
    ("state", "exit_codes", "import_requested"),
    [
        (JobState.FAILED, [50001, 3], False),  # preempted, then the container's own failure
        (JobState.SUCCEEDED, [50001, 0], True),  # a stale 50001 in a job that succeeded
        (JobState.FAILED, [], False),  # QUEUED -> FAILED with no task (no GPU in the zone)
    ],
)
def test_finished_jobs_get_a_finish_run(
    world: World, state: JobState, exit_codes: list[int], import_requested: bool
) -> None:
    (job_id,) = world.submit(registered=True)
    world.backend.set(job_id, state, exit_codes=exit_codes, description="no L4 in the zone")
    plan = world.tick(None)
    assert [(r.job_id, r.attempt, r.with_import) for r in plan.finish_requests] == [
        (job_id, 0, import_requested)
    ]
    assert plan.finish_requests[0].run_key == f"finish-{job_id}"
    # before its finish run ends, the next tick records no state change again
    again = world.tick(plan.cache.encode())
    assert not again.changes and not again.observations
    assert not [m for _, m in again.messages if f"-> {state.value}" in m], again.messages
    if state == JobState.FAILED:
        reason = failure_reason(world.engine.get_job(job_id=job_id))
        if exit_codes:
            assert reason.splitlines()[1] == "task 0: exit code 3: container exited with code 3"
        else:
            assert "no L4 in the zone" in reason


def test_a_succeeded_job_whose_import_already_ran_is_settled(world: World) -> None:
    done, imported_elsewhere = world.submit(2, registered=True)
    for job_id in (done, imported_elsewhere):
        world.backend.set(job_id, JobState.SUCCEEDED, exit_codes=[0])
        world.ledger(job_id)
    world.finish_run(done, dg.DagsterRunStatus.SUCCESS)
    plan = world.tick(None)
    # the imported job without a finish run still gets one (its outcome is recorded)
    assert [(r.job_id, r.attempt) for r in plan.finish_requests] == [(imported_elsewhere, 0)]
    assert done in plan.cache.settled
    world.finish_run(imported_elsewhere, dg.DagsterRunStatus.SUCCESS)
    second = world.tick(plan.cache.encode())
    assert not second.finish_requests and {done, imported_elsewhere} <= second.cache.settled
    # settled jobs cost no query: nothing to look up in the runs or the ledger
    before = Counter(world.storage.calls)
    world.tick(second.cache.encode())
    assert world.storage.calls["finish_runs"] == before["finish_runs"]
    assert world.storage.calls["imported"] == before["imported"]


def _dead_worker() -> str:
    """A worker tag of this host whose process has exited."""
    pid = os.fork()
    if pid == 0:
        os._exit(0)
    os.waitpid(pid, 0)
    host, _, rest = worker_id().partition(":")
    return f"{host}:{pid}:{time.time() - 5:.2f}"


@pytest.mark.parametrize(
    ("runs", "delay_s", "expected_attempt", "settled"),
    [
        (["FAILURE"], 0, 1, False),  # the database was down: a new attempt, a new run key
        (["FAILURE", "FAILURE"], 0, 2, False),
        (["FAILURE"], 3600, None, False),  # backoff: not yet
        (["REFUSED"], 0, None, True),  # bad output: never retried
        (["DEAD"], 3600, 1, False),  # its process died with the daemon: failed, then retried
        (["ALIVE"], 0, None, False),  # running in a live process: wait
        (["NOT_STARTED"], 0, None, False),  # requested, not yet started
        (["SUCCESS_NO_LEDGER"], 0, None, True),  # ran, but the ledger was reset: not looped
    ],
)
def test_an_unfinished_import_is_requested_again_until_the_ledger_has_it(
    world: World, runs: list[str], delay_s: float, expected_attempt: int | None, settled: bool
) -> None:
    (job_id,) = world.submit(registered=True)
    world.backend.set(job_id, JobState.SUCCEEDED, exit_codes=[0])
    run_ids = []
    for kind in runs:
        if kind == "FAILURE":
            run_ids.append(world.finish_run(job_id, dg.DagsterRunStatus.FAILURE))
        elif kind == "REFUSED":
            run_ids.append(
                world.finish_run(job_id, dg.DagsterRunStatus.FAILURE, **{REFUSED_TAG: "true"})
            )
        elif kind == "DEAD":
            run_ids.append(
                world.finish_run(job_id, dg.DagsterRunStatus.STARTED, worker=_dead_worker())
            )
        elif kind == "ALIVE":
            run_ids.append(
                world.finish_run(job_id, dg.DagsterRunStatus.STARTED, worker=worker_id())
            )
        elif kind == "NOT_STARTED":
            run_ids.append(world.finish_run(job_id, dg.DagsterRunStatus.NOT_STARTED))
        else:
            run_ids.append(world.finish_run(job_id, dg.DagsterRunStatus.SUCCESS))
    plan = world.tick(None, retry_delay_s=delay_s)
    attempts = [r.attempt for r in plan.finish_requests]
    assert attempts == ([] if expected_attempt is None else [expected_attempt])
    if expected_attempt:
        assert plan.finish_requests[0].run_key == f"finish-{job_id}-retry-{expected_attempt}"
    assert (job_id in plan.cache.settled) is settled
    if runs == ["DEAD"]:
        run = world.instance.get_run_by_id(run_ids[0])
        assert run is not None and run.status == dg.DagsterRunStatus.FAILURE
    if runs == ["FAILURE"] and delay_s:
        later = world.tick(None, retry_delay_s=delay_s, now=time.time() + delay_s + 1)
        assert [r.attempt for r in later.finish_requests] == [1]
    # once the ledger holds it, it is settled whatever happened before
    world.ledger(job_id)
    if expected_attempt is not None:
        world.finish_run(job_id, dg.DagsterRunStatus.SUCCESS)
    if runs not in (["ALIVE"], ["NOT_STARTED"]):
        done = world.tick(None, retry_delay_s=0)
        assert job_id in done.cache.settled and not done.finish_requests


def test_at_most_ten_finish_runs_are_in_progress_the_others_wait_their_turn(
    world: World,
) -> None:
    """No run queue holds a burst back (the embedded instance launches a run as it is
    requested; the sensor then caps them, tests/test_instance_config.py): 13 jobs ending in one
    tick get 10 finish runs, the 3 others one each as runs end, never a lost or doubled
    request."""
    ids = sorted(world.submit(13, registered=True))
    for job_id in ids:
        world.backend.set(job_id, JobState.SUCCEEDED, exit_codes=[0])
    cap = {"retry_delay_s": 0, "max_finish_runs_in_progress": 10}  # the sensor's, no run queue
    first = world.tick(None, **cap)
    assert [r.job_id for r in first.finish_requests] == ids[:10]  # in job id order
    waiting = [m for _, m in first.messages if "wait for their finish run" in m]
    assert waiting == [
        "3 finished job(s) wait for their finish run: 0 in progress, at most 10 at once; "
        "requested as they end"
    ]
    requested = [m.split(":")[0] for _, m in first.messages if m.endswith("import requested")]
    assert requested == ids[:10]  # no line says a waiting job's import was requested
    runs = {job_id: world.finish_run(job_id, dg.DagsterRunStatus.STARTED) for job_id in ids[:10]}
    assert world.tick(None, **cap).finish_requests == []  # 10 in progress: all wait
    for job_id in ids[:2]:  # two end: two slots
        world.instance.report_run_failed(world.instance.get_run_by_id(runs[job_id]))
        world.ledger(job_id)
    second = world.tick(None, **cap)
    assert [r.job_id for r in second.finish_requests] == ids[10:12]
    assert all(r.attempt == 0 for r in second.finish_requests)
    # another cap, as the settings say; none (a run queue holds them): every one at once
    capped = world.tick(None, retry_delay_s=0, max_finish_runs_in_progress=12)
    assert [r.job_id for r in capped.finish_requests] == ids[10:]
    assert [r.job_id for r in world.tick(None, retry_delay_s=0).finish_requests] == ids[10:]


def test_retry_delay_doubles_up_to_an_hour() -> None:
    assert [retry_delay(n, 30) for n in (1, 2, 3, 4)] == [30, 60, 120, 240]
    assert retry_delay(20, 30) == 3600


def test_worker_gone_only_for_a_dead_process_of_this_host() -> None:
    assert not worker_gone(worker_id())
    assert worker_gone(_dead_worker())
    assert not worker_gone("another-host:1:1.0")
    assert not worker_gone(None)


def test_one_jobs_error_never_stops_the_others(world: World) -> None:
    owner_ok, owner_broken = sorted(str(uuid.uuid4()) for _ in range(2))
    for run_id in (owner_ok, owner_broken):
        world.instance.add_run(
            dg.DagsterRun(job_name="launch", run_id=run_id, status=dg.DagsterRunStatus.CANCELED)
        )
    listed, unreadable, deleted = world.submit(3, registered=True)
    (cancel_fails,) = world.submit(owner=owner_ok)
    (cancel_ok,) = world.submit(owner=owner_broken)
    for job_id in (listed, unreadable, deleted, cancel_fails, cancel_ok):
        world.backend.set(job_id, JobState.RUNNING)
    first = world.tick(None, only={listed, unreadable, deleted})
    world.service.delete_behind_back(unreadable)
    world.service.delete_behind_back(deleted)
    world.backend.set(listed, JobState.SUCCEEDED, exit_codes=[0])

    world.service.fail_calls_for_job("GetJob", unreadable, grpc.StatusCode.FAILED_PRECONDITION)
    world.service.fail_next("CancelJob", grpc.StatusCode.FAILED_PRECONDITION)
    plan = world.tick(first.cache.encode())
    assert set(plan.errors) == {unreadable, cancel_fails}
    assert sorted(r.job_id for r in plan.finish_requests) == sorted([listed, deleted])
    assert plan.cancelled == [cancel_ok]
    assert unreadable in plan.cache.states  # still followed: retried next tick
    assert cancel_fails not in plan.cache.cancel_sent  # the cancel is sent again next tick
    retried = world.tick(plan.cache.encode())
    assert retried.cancelled == [cancel_fails]


def test_the_ledger_down_delays_imports_and_nothing_else(world: World) -> None:
    ok, failed = world.submit(2, registered=True)
    world.backend.set(ok, JobState.SUCCEEDED, exit_codes=[0])
    world.backend.set(failed, JobState.FAILED, exit_codes=[3])
    down = PredictionStore(conninfo="postgresql://robotoff:pw@127.0.0.1:9/x?connect_timeout=1")
    world.storage = CountingStorage(world.instance, down)
    plan = world.tick(None)
    assert [r.job_id for r in plan.finish_requests] == [failed]
    assert any("import ledger" in m for _, m in plan.messages)
    assert ok not in plan.cache.settled


def test_a_thousand_jobs_in_flight_cost_one_listing_and_constant_queries(world: World) -> None:
    ids = world.submit(1000)
    for job_id in ids:
        world.backend.set(job_id, JobState.RUNNING)
    started = time.perf_counter()
    first = world.tick(None)
    first_s = time.perf_counter() - started
    assert len(first.new_partitions[JT]) == 1000 and len(first.observations) == 1000
    calls_before = Counter(world.service.calls)
    started = time.perf_counter()
    steady = world.tick(first.cache.encode())
    steady_s = time.perf_counter() - started
    assert not steady.observations
    assert world.service.calls["ListJobs"] - calls_before["ListJobs"] == 1
    assert world.service.calls["GetJob"] == calls_before["GetJob"] == 0
    for job_id in ids:
        world.backend.set(job_id, JobState.SUCCEEDED, exit_codes=[0])
    world.storage.calls.clear()
    ended = world.tick(steady.cache.encode())
    assert len(ended.finish_requests) == 1000
    assert world.storage.calls == Counter(registered=1, finish_runs=1, imported=1)
    print(f"\n1000 jobs: first tick {first_s:.2f} s, steady tick {steady_s:.2f} s")


@pytest.mark.parametrize("cancel", [False, True])
def test_a_job_stuck_on_quota_is_reported_once_and_cancelled_when_asked(
    world: World, cancel: bool
) -> None:
    quota = (
        "Quota checking process decides to delay scheduling for the job due to inadequate "
        "quota [Quota: NVIDIA_L4_GPUS, limit: 0, usage: 0, wanted: 1]."
    )
    world.service.hold_in_queue(quota)
    (stuck,) = world.submit()
    (fresh,) = world.submit()
    limits = {JT: PendingLimit(max_pending_s=6 * 3600, cancel=cancel)}
    early = world.tick(None, pending_limits=limits)
    assert not early.stuck  # not yet past the limit
    later = time.time() + 7 * 3600  # both have waited 7 h
    world.backend.set(fresh, JobState.RUNNING)  # ... but this one got its VM
    plan = world.tick(early.cache.encode(), pending_limits=limits, now=later)
    assert list(plan.stuck) == [stuck]
    assert "NVIDIA_L4_GPUS" in plan.stuck[stuck] and "7.0 h" in plan.stuck[stuck]
    (warning,) = [o for o in plan.observations if "stuck" in o.metadata]
    assert warning.partition == stuck
    assert any(level == logging.WARNING and "stuck" in m for level, m in plan.messages)
    assert plan.cancelled == ([stuck] if cancel else [])
    assert world.service.calls["CancelJob"] == (1 if cancel else 0)
    again = world.tick(plan.cache.encode(), pending_limits=limits, now=later + 60)
    assert not again.stuck and not again.cancelled  # once
    assert world.service.calls["CancelJob"] == (1 if cancel else 0)


# -- every location, capacity fallback ----------------------------------------------------------

OTHER_LOCATION = "europe-west1"
QUOTA = (
    "Quota checking process decides to delay scheduling for the job due to inadequate "
    "quota [Quota: NVIDIA_L4_GPUS, limit: 0, usage: 0, wanted: 1]."
)


def two_region_engine(world: World) -> CloudBatchEngine:
    return CloudBatchEngine(
        project=TEST_PROJECT,
        location=TEST_LOCATION,
        client=world.service.client(),
        retry=fast_batch_retry(),
        timeout=10.0,
        locations=[OTHER_LOCATION],
    )


def submit_in(engine: CloudBatchEngine, location: str, job_id: str, **labels: str) -> str:
    engine.submit(
        request=batch_v1.CreateJobRequest(
            parent=f"projects/{TEST_PROJECT}/locations/{location}",
            job_id=job_id,
            job=batch_v1.Job(labels={"app": "robotoff-batch", "job-type": JT, **labels}),
        )
    )
    return job_id


def test_the_follower_sees_jobs_in_every_location(world: World) -> None:
    engine = two_region_engine(world)
    here = submit_in(engine, TEST_LOCATION, "spell-here")
    there = submit_in(engine, OTHER_LOCATION, "spell-there")
    before = world.service.calls["ListJobs"]
    world.engine = engine
    plan = world.tick(None)
    assert sorted(plan.new_partitions[JT]) == [here, there]
    assert world.service.calls["ListJobs"] - before == 2  # one per location, not per job
    assert plan.statuses[there].location == OTHER_LOCATION
    # an engine that never listed the job finds it in the other location, and cancels it there
    fresh = two_region_engine(world)
    assert fresh.get_job(job_id=there).location == OTHER_LOCATION
    fresh.cancel(job_id=there)
    (cancel,) = world.service.requests["CancelJob"]
    assert cancel.name == f"projects/{TEST_PROJECT}/locations/{OTHER_LOCATION}/jobs/{there}"
    # a one-region engine does not see it: that is why the resource lists every location
    one = CloudBatchEngine(project=TEST_PROJECT, location=TEST_LOCATION, client=fresh.client)
    assert [s.job_id for s in one.list_jobs(labels={"app": "robotoff-batch"})] == [here]


def test_a_job_waiting_on_capacity_is_relaunched_once_per_alternative(world: World) -> None:
    policy = {JT: FallbackPolicy(after_s=1800, alternatives=1)}
    world.service.hold_in_queue(QUOTA)
    (held,) = world.submit()
    (slow,) = world.submit()  # QUEUED too, but no capacity or quota event
    early = world.tick(None, fallbacks=policy)
    assert not early.fallback_requests  # not waited long enough
    later = time.time() + 3600
    plan = world.tick(early.cache.encode(), fallbacks=policy, now=later)
    (request,) = plan.fallback_requests
    assert (request.job_id, request.origin, request.index) == (held, held, 1)
    assert request.run_key == f"fallback-{held}-1" and "NVIDIA_L4_GPUS" in request.reason
    again = world.tick(plan.cache.encode(), fallbacks=policy, now=later + 60)
    assert not again.fallback_requests  # once
    # the alternative's job waits on quota too: there is no second alternative, and the first
    # job is replaced by it: nothing is requested again, even with the cursor lost
    world.service.hold_in_queue(QUOTA)
    labels = {"fallback-of": held, "fallback-index": "1"}
    submit_in(world.engine, TEST_LOCATION, f"{held}-f1", **labels)
    lost = world.tick(None, fallbacks=policy, now=later + 7200)
    assert not lost.fallback_requests


# -- rules that must hold (each test fails when its rule is broken in the code) ------------------


def test_a_cancel_is_sent_once_even_while_the_listing_still_shows_the_job_running(
    world: World,
) -> None:
    """The engine's listing lags behind a cancel: the job still reads RUNNING on the next
    ticks. The cursor remembers the cancel sent, so it is not sent again."""
    owner = str(uuid.uuid4())
    world.instance.add_run(
        dg.DagsterRun(
            job_name="launch_ingredients_spellcheck",
            run_id=owner,
            status=dg.DagsterRunStatus.CANCELED,
        )
    )
    (job_id,) = world.submit(owner=owner)
    world.backend.set(job_id, JobState.RUNNING)
    plan = world.tick(None)
    assert plan.cancelled == [job_id]
    for _ in range(3):
        world.backend.set(job_id, JobState.RUNNING)  # the cancel not visible yet
        plan = world.tick(plan.cache.encode())
        assert not plan.cancelled
    assert world.backend.cancels[job_id] == 1 and world.service.calls["CancelJob"] == 1


def test_cancel_once_leaves_a_job_being_cancelled_ended_or_gone_alone(world: World) -> None:
    """What the CLI's ``cancel``, the UI's cancel job and the follower share."""
    stopping, running, ended = world.submit(3)
    world.backend.set(stopping, JobState.CANCELLATION_IN_PROGRESS)
    world.backend.set(running, JobState.RUNNING)
    world.backend.set(ended, JobState.SUCCEEDED, exit_codes=[0])
    outcomes = {j: cancel_once(world.engine, j) for j in (stopping, running, ended, "spell-gone")}
    assert {j: o.sent for j, o in outcomes.items()} == {
        stopping: False,
        running: True,
        ended: False,
        "spell-gone": False,
    }
    assert outcomes[stopping].message.endswith("not sent again")
    assert outcomes[ended].message.endswith("already ended SUCCEEDED: nothing to cancel")
    assert outcomes["spell-gone"].message == "no batch job 'spell-gone': nothing to cancel"
    assert world.service.calls["CancelJob"] == 1 and dict(world.backend.cancels) == {running: 1}


def test_the_ui_cancel_job_does_not_send_a_second_cancel(world: World, pg_db: str) -> None:
    from robotoff_batch.definitions import build_definitions
    from tests.fakes.fake_batch_service import emulated_cloud_resources

    defs = build_definitions(resources=emulated_cloud_resources(world.service.address, pg_db))
    job = defs.resolve_job_def("cancel_ingredients_spellcheck")
    stopping, running = world.submit(2, registered=True)
    world.backend.set(stopping, JobState.CANCELLATION_IN_PROGRESS)
    world.backend.set(running, JobState.RUNNING)
    for job_id in (stopping, running):
        result = job.execute_in_process(instance=world.instance, partition_key=job_id)
        assert result.success
    assert world.service.calls["CancelJob"] == 1 and dict(world.backend.cancels) == {running: 1}


def test_a_superseded_job_that_succeeded_is_recorded_but_never_imported(world: World) -> None:
    """The fallback's cancel came too late and the first job SUCCEEDED too: only the chain's
    last job is imported; the first one's finish run records it as superseded."""
    (first,) = world.submit(registered=True)
    new = f"{first}-f1"
    world.engine.submit(
        request=batch_v1.CreateJobRequest(
            parent=world.engine.parent,
            job_id=new,
            job=batch_v1.Job(
                labels={
                    "app": "robotoff-batch",
                    "job-type": JT,
                    FALLBACK_OF_LABEL: first,
                    FALLBACK_INDEX_LABEL: "1",
                }
            ),
        )
    )
    world.instance.add_dynamic_partitions(PARTITIONS, [new])
    for job_id in (first, new):
        world.backend.set(job_id, JobState.SUCCEEDED, exit_codes=[0])
    plan = world.tick(None)
    requests = {r.job_id: r for r in plan.finish_requests}
    assert (requests[first].with_import, requests[first].superseded_by) == (False, new)
    assert requests[first].tags[SUPERSEDED_TAG] == new
    assert predictions_asset_key(JT) not in requests[first].asset_selection
    assert (requests[new].with_import, requests[new].superseded_by) == (True, None)


def test_a_finish_run_is_found_by_its_batch_job_tag_and_settles_the_job(world: World) -> None:
    """The sensor's finish run carries the job's id as a tag: that is how the next ticks find
    it. A run started from the request (its tags, its run key) settles the job; no second run
    is requested."""
    (job_id,) = world.submit(registered=True)
    world.backend.set(job_id, JobState.FAILED, exit_codes=[3])
    plan = world.tick(None)
    (request,) = plan.sensor_result().run_requests
    assert request.tags[BATCH_JOB_ID_TAG] == job_id and request.partition_key == job_id
    world.instance.add_run(
        dg.DagsterRun(
            job_name=request.job_name,
            run_id=str(uuid.uuid4()),
            status=dg.DagsterRunStatus.SUCCESS,
            tags={**request.tags, "dagster/run_key": request.run_key},
        )
    )
    after = world.tick(plan.cache.encode())
    assert not after.finish_requests and job_id in after.cache.settled


def test_a_partial_or_retry_quarantined_import_request_says_so_to_the_finish_run() -> None:
    """`import JOB --partial` asks for the import alone (the FAILED job's outcome is already
    recorded), tagged partial; `--retry-quarantined` tags the run so that the import reads the
    held-back rows again. Both reach the finish run through the one applier, as a RunRequest."""
    from robotoff_batch.follow.plan import FinishRequest
    from robotoff_batch.names import (
        PARTIAL_IMPORT_TAG,
        RETRY_QUARANTINED_TAG,
        batch_job_asset_key,
        predictions_asset_key,
    )

    plain = FinishRequest("job-1", JT, attempt=0, with_import=True).run_request()
    assert list(plain.asset_selection or []) == [
        batch_job_asset_key(JT),
        predictions_asset_key(JT),
    ]
    assert PARTIAL_IMPORT_TAG not in plain.tags and RETRY_QUARANTINED_TAG not in plain.tags
    partial = FinishRequest("job-1", JT, attempt=1, with_import=True, partial=True).run_request()
    assert list(partial.asset_selection or []) == [predictions_asset_key(JT)]
    assert partial.tags[PARTIAL_IMPORT_TAG] == "true"
    retry = FinishRequest(
        "job-1", JT, attempt=1, with_import=True, retry_quarantined=True
    ).run_request()
    assert retry.tags[RETRY_QUARANTINED_TAG] == "true"
    assert list(retry.asset_selection or []) == list(plain.asset_selection or [])
