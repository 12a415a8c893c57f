"""The local runner (embedded Cloud Batch): real supervisor and task processes, fake containers
from tests/fixtures/task_*.py, requests built with the real batch_v1 classes."""

from __future__ import annotations

import contextlib
import fcntl
import json
import os
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Iterator, Mapping
from pathlib import Path

import pytest
from google.cloud import batch_v1
from google.protobuf import duration_pb2

from robotoff_batch.batch.engine import (
    BatchEngine,
    BatchEngineError,
    JobNotFoundError,
    JobState,
)
from robotoff_batch.batch.local import LocalBatchEngine
from robotoff_batch.batch.local.process import process_start_ticks
from robotoff_batch.batch.local.state import read_state, set_job_state, updating
from tests.fakes.counting_engine import CountingLocalBatchEngine
from tests.fakes.waiting import wait_until_ended

FIXTURES = Path(__file__).parent / "fixtures"
PROJECT_ROOT = Path(__file__).resolve().parents[1]
IMAGE_WRITE = "europe-docker.pkg.dev/off/robotoff/write-index:1"
IMAGE_FLAKY = "europe-docker.pkg.dev/off/robotoff/flaky:1"
IMAGE_SLEEP = "europe-docker.pkg.dev/off/robotoff/sleep-forever:1"
IMAGE_EXIT3 = "europe-docker.pkg.dev/off/robotoff/exit3:1"
IMAGE_LINES = "europe-docker.pkg.dev/off/robotoff/many-lines:1"
COMMANDS = {
    IMAGE_WRITE: [sys.executable, str(FIXTURES / "task_write_index.py")],
    IMAGE_FLAKY: [sys.executable, str(FIXTURES / "task_flaky.py")],
    IMAGE_SLEEP: [sys.executable, str(FIXTURES / "task_sleep_forever.py")],
    IMAGE_EXIT3: [sys.executable, str(FIXTURES / "task_exit3.py")],
    IMAGE_LINES: [sys.executable, str(FIXTURES / "task_many_lines.py")],
}
PARENT = "projects/off-test/locations/europe-west4"
WAIT_S = 90.0  # generous: the suite shares its CPUs (a timeout here is a load spike)


def make_request(
    job_id: str,
    *,
    image: str = IMAGE_WRITE,
    task_count: int = 1,
    parallelism: int = 1,
    max_retry_count: int = 0,
    max_run_duration_s: int = 600,
    variables: Mapping[str, str] | None = None,
    secret_variables: Mapping[str, str] | None = None,
    commands: list[str] | None = None,
    labels: Mapping[str, str] | None = None,
) -> batch_v1.CreateJobRequest:
    """A Cloud Batch request as the pipeline builds one, for a fake container image."""
    task_spec = batch_v1.TaskSpec(
        runnables=[
            batch_v1.Runnable(
                container=batch_v1.Runnable.Container(
                    image_uri=image, commands=list(commands or [])
                )
            )
        ],
        compute_resource=batch_v1.ComputeResource(cpu_milli=1000, memory_mib=512),
        max_retry_count=max_retry_count,
        max_run_duration=duration_pb2.Duration(seconds=max_run_duration_s),
        environment=batch_v1.Environment(
            variables=dict(variables or {}), secret_variables=dict(secret_variables or {})
        ),
    )
    job = batch_v1.Job(
        task_groups=[
            batch_v1.TaskGroup(task_count=task_count, parallelism=parallelism, task_spec=task_spec)
        ],
        allocation_policy=batch_v1.AllocationPolicy(
            instances=[
                batch_v1.AllocationPolicy.InstancePolicyOrTemplate(
                    policy=batch_v1.AllocationPolicy.InstancePolicy(machine_type="e2-standard-2")
                )
            ]
        ),
        labels={"app": "robotoff-batch", "job-type": "test", **(labels or {})},
        logs_policy=batch_v1.LogsPolicy(destination=batch_v1.LogsPolicy.Destination.CLOUD_LOGGING),
    )
    return batch_v1.CreateJobRequest(parent=PARENT, job_id=job_id, job=job)


@pytest.fixture
def out_dir(tmp_path: Path) -> Path:
    """Where the fake containers write what they saw."""
    path = tmp_path / "out"
    path.mkdir()
    return path


@pytest.fixture
def engine(tmp_path: Path) -> Iterator[CountingLocalBatchEngine]:
    """A local engine on a fresh state directory; cancels whatever a failed test left running."""
    local = CountingLocalBatchEngine(
        state_dir=tmp_path / "local-batch", commands_by_image=COMMANDS, poll_interval_s=0.05
    )
    yield local
    for job in local.list_jobs(labels={}):
        if not job.state.is_terminal:
            local.cancel(job_id=job.job_id)
    local.close()


def wait_for(predicate, timeout_s: float = 10.0) -> None:  # type: ignore[no-untyped-def]
    """Poll ``predicate`` until it is true."""
    deadline = time.monotonic() + timeout_s
    while not predicate():
        if time.monotonic() > deadline:
            raise AssertionError("condition not met in time")
        time.sleep(0.05)


def pid_alive(pid: int) -> bool:
    """Whether a process runs (zombies count as gone)."""
    return process_start_ticks(pid) is not None


def states(status) -> list[JobState]:  # type: ignore[no-untyped-def]
    """The job states of the status history, in order."""
    return [e.new_state for e in status.status_events if e.new_state is not None]


def test_engine_satisfies_the_protocol(engine: LocalBatchEngine) -> None:
    assert isinstance(engine, BatchEngine)


def test_parallel_tasks_succeed_with_batch_env(engine: LocalBatchEngine, out_dir: Path) -> None:
    request = make_request(
        "par-job",
        task_count=4,
        parallelism=2,
        variables={"OUT_DIR": str(out_dir), "JOB_FLAVOUR": "plain", "SLEEP_S": "0.4"},
        commands=["--shard", "x"],
    )
    submitted = engine.submit(request=request)
    assert submitted.job_id == "par-job"
    assert not submitted.state.is_terminal

    final = wait_until_ended(engine, "par-job", WAIT_S)
    assert final.state is JobState.SUCCEEDED, final.failure_summary
    assert states(final) == [
        JobState.QUEUED,
        JobState.SCHEDULED,
        JobState.RUNNING,
        JobState.SUCCEEDED,
    ]
    assert "Job state is set from QUEUED to SCHEDULED for job " in "\n".join(
        e.description for e in final.status_events
    )
    assert f"{PARENT}/jobs/par-job" in final.status_events[1].description
    assert [(t.index, t.state, t.exit_code, t.attempts) for t in final.tasks] == [
        (i, "SUCCEEDED", 0, 1) for i in range(4)
    ]
    assert final.labels["job-type"] == "test"

    records = [json.loads((out_dir / f"task-{i}.json").read_text()) for i in range(4)]
    for i, record in enumerate(records):
        assert record["argv"] == ["--shard", "x"]
        assert record["env"]["BATCH_TASK_INDEX"] == str(i)
        assert record["env"]["BATCH_TASK_COUNT"] == "4"
        assert record["env"]["BATCH_JOB_ID"] == "par-job"
        assert record["env"]["BATCH_TASK_RETRY_ATTEMPT"] == "0"
        assert record["env"]["JOB_FLAVOUR"] == "plain"
    # Never more than `parallelism` tasks at once, and the two slots were both used.
    moments = sorted([(r["start"], 1) for r in records] + [(r["end"], -1) for r in records])
    running = peak = 0
    for _, delta in moments:
        running += delta
        peak = max(peak, running)
    assert peak == 2

    job_dir = engine.job_dir("par-job")
    assert engine.logs_uri(job_id="par-job") == (job_dir / "logs").as_uri()
    assert final.log_uri == (job_dir / "logs").as_uri()
    for i in range(4):
        log = (job_dir / "logs" / f"task-{i}-attempt-1.log").read_text()
        assert f"task {i} starting" in log and f"task {i} done" in log
    stored = batch_v1.Job.from_json((job_dir / "job.json").read_text())
    assert stored.task_groups[0].task_count == 4


def test_retries_until_success(engine: LocalBatchEngine, out_dir: Path) -> None:
    request = make_request(
        "flaky-ok",
        image=IMAGE_FLAKY,
        max_retry_count=2,
        variables={"OUT_DIR": str(out_dir), "FAIL_TIMES": "2"},
    )
    engine.submit(request=request)
    final = wait_until_ended(engine, "flaky-ok", WAIT_S)
    assert final.state is JobState.SUCCEEDED, final.failure_summary
    assert final.tasks[0].attempts == 3
    assert final.tasks[0].exit_code == 0
    retried = [e for e in final.status_events if e.task_exit_code == 7]
    assert len(retried) == 2 and all("retrying" in e.description for e in retried)
    logs = engine.job_dir("flaky-ok") / "logs"
    assert sorted(p.name for p in logs.iterdir()) == [f"task-0-attempt-{n}.log" for n in (1, 2, 3)]
    history = read_state(engine.job_dir("flaky-ok")).tasks[0].history
    assert [(h.attempt, h.exit_code) for h in history] == [(1, 7), (2, 7), (3, 0)]


def test_retries_exhausted_fail_the_job(engine: LocalBatchEngine, out_dir: Path) -> None:
    request = make_request(
        "flaky-ko",
        image=IMAGE_FLAKY,
        max_retry_count=1,
        variables={"OUT_DIR": str(out_dir), "FAIL_TIMES": "2"},
    )
    engine.submit(request=request)
    final = wait_until_ended(engine, "flaky-ko", WAIT_S)
    assert final.state is JobState.FAILED
    assert (final.tasks[0].state, final.tasks[0].exit_code, final.tasks[0].attempts) == (
        "FAILED",
        7,
        2,
    )
    assert "task 0: container exited with code 7" in final.failure_summary
    assert states(final)[-1] is JobState.FAILED


def test_max_run_duration_kills_with_50005(engine: LocalBatchEngine, out_dir: Path) -> None:
    request = make_request(
        "too-long",
        image=IMAGE_SLEEP,
        max_run_duration_s=1,
        variables={"OUT_DIR": str(out_dir)},
    )
    engine.submit(request=request)
    final = wait_until_ended(engine, "too-long", WAIT_S)
    assert final.state is JobState.FAILED
    task = final.tasks[0]
    assert task.exit_code == 50005
    assert task.exit_reason is not None and task.exit_reason.startswith("Cloud Batch:")
    assert "task 0 exceeded max run duration" in final.failure_summary
    # The whole process group went: the task and the child it started.
    pids = [int(p) for p in (out_dir / "pids-0").read_text().split()]
    wait_for(lambda: not any(pid_alive(p) for p in pids))


def test_exit_code_3_fails_and_stops_scheduling(engine: LocalBatchEngine) -> None:
    engine.submit(request=make_request("exit-three", image=IMAGE_EXIT3, task_count=3))
    final = wait_until_ended(engine, "exit-three", WAIT_S)
    assert final.state is JobState.FAILED
    assert final.tasks[0].exit_reason == "container exited with code 3"
    assert "task 0: container exited with code 3" in final.failure_summary
    # The first task failed for good: the others never started (parallelism 1).
    assert [t.state for t in final.tasks[1:]] == ["UNEXECUTED", "UNEXECUTED"]
    assert [t.attempts for t in final.tasks[1:]] == [0, 0]


def test_job_survives_the_process_that_submitted_it(
    engine: LocalBatchEngine, out_dir: Path
) -> None:
    request = make_request(
        "detached", task_count=2, variables={"OUT_DIR": str(out_dir), "SLEEP_S": "1"}
    )
    launcher = (
        "import sys\n"
        "from pathlib import Path\n"
        "from google.cloud import batch_v1\n"
        "from robotoff_batch.batch.local import LocalBatchEngine\n"
        "commands = {k: v for k, v in __import__('json').loads(sys.argv[2]).items()}\n"
        "engine = LocalBatchEngine(state_dir=Path(sys.argv[1]), commands_by_image=commands,\n"
        "                          poll_interval_s=0.05)\n"
        "request = batch_v1.CreateJobRequest.from_json(sys.stdin.read())\n"
        "print(engine.submit(request=request).state)\n"
    )
    done = subprocess.run(
        [sys.executable, "-c", launcher, str(engine.state_dir), json.dumps(COMMANDS)],
        input=batch_v1.CreateJobRequest.to_json(request),
        capture_output=True,
        text=True,
        cwd=PROJECT_ROOT,
        timeout=WAIT_S,
        check=True,
    )
    assert done.stdout.strip() in ("QUEUED", "SCHEDULED", "RUNNING"), done.stderr
    # The launcher has exited; the job goes on and this process sees it end.
    assert not engine.get_job(job_id="detached").state.is_terminal
    final = wait_until_ended(engine, "detached", WAIT_S)
    assert final.state is JobState.SUCCEEDED, final.failure_summary
    assert (out_dir / "task-1.json").exists()


def test_submitting_twice_runs_once(engine: LocalBatchEngine, out_dir: Path) -> None:
    request = make_request("twice", task_count=2, variables={"OUT_DIR": str(out_dir)})
    others = [
        LocalBatchEngine(state_dir=engine.state_dir, commands_by_image=COMMANDS) for _ in range(3)
    ]
    results = []
    threads = [
        threading.Thread(target=lambda e=e: results.append(e.submit(request=request)))
        for e in [engine, *others]
    ]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    again = engine.submit(request=request)
    assert len({r.uid for r in [*results, again]}) == 1
    final = wait_until_ended(engine, "twice", WAIT_S)
    assert final.state is JobState.SUCCEEDED, final.failure_summary
    for i in range(2):
        assert len((out_dir / f"runs-{i}.log").read_text().splitlines()) == 1
    assert not [p for p in engine.state_dir.iterdir() if p.name.startswith(".")]
    # Re-attaching to a finished job returns it as it is.
    assert engine.submit(request=request).state is JobState.SUCCEEDED


def test_cancel_kills_tasks_and_ends_cancelled(engine: LocalBatchEngine, out_dir: Path) -> None:
    request = make_request(
        "to-cancel",
        image=IMAGE_SLEEP,
        task_count=2,
        parallelism=2,
        variables={"OUT_DIR": str(out_dir)},
    )
    engine.submit(request=request)
    wait_for(lambda: all((out_dir / f"pids-{i}").exists() for i in range(2)))
    assert engine.get_job(job_id="to-cancel").state is JobState.RUNNING
    pids = [int(p) for i in range(2) for p in (out_dir / f"pids-{i}").read_text().split()]
    supervisor_pid = read_state(engine.job_dir("to-cancel")).supervisor.pid
    assert all(pid_alive(p) for p in [*pids, supervisor_pid])

    engine.cancel(job_id="to-cancel")
    assert not any(pid_alive(p) for p in pids)
    wait_for(lambda: not pid_alive(supervisor_pid))
    final = engine.get_job(job_id="to-cancel")
    assert final.state is JobState.CANCELLED
    assert final.state.is_terminal and not final.state.is_stopping
    # The whole history is kept, and says who ended the job.
    assert states(final) == [
        JobState.QUEUED,
        JobState.SCHEDULED,
        JobState.RUNNING,
        JobState.CANCELLATION_IN_PROGRESS,
        JobState.CANCELLED,
    ]
    cancelled = [e for e in final.status_events if e.type == "JOB_CANCELLED"]
    assert len(cancelled) == 1
    assert cancelled[0].description.endswith("/jobs/to-cancel was cancelled by a cancel request.")
    assert [t.attempts for t in final.tasks] == [1, 1]
    assert final.run_duration_s is not None and final.run_duration_s >= 0
    assert engine.job_dir("to-cancel").is_dir()
    assert [(j.job_id, j.state) for j in engine.list_jobs(labels={})] == [
        ("to-cancel", JobState.CANCELLED)
    ]

    engine.cancel(job_id="to-cancel")  # already cancelled: not an error, nothing changes
    engine.cancel(job_id="never-existed")
    again = engine.get_job(job_id="to-cancel")
    assert again.state is JobState.CANCELLED
    assert again.status_events == final.status_events


@contextlib.contextmanager
def paused_supervisor(job_dir: Path) -> Iterator[int]:
    """SIGSTOP the job's supervisor while it does not hold the job's lock; SIGCONT on exit."""
    pid = read_state(job_dir).supervisor.pid
    assert pid is not None
    with open(job_dir / "lock", "a+b") as lock:
        for _ in range(100):
            os.kill(pid, signal.SIGSTOP)
            try:
                fcntl.flock(lock.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:  # stopped while holding it: let it go on a little
                os.kill(pid, signal.SIGCONT)
                time.sleep(0.01)
                continue
            fcntl.flock(lock.fileno(), fcntl.LOCK_UN)
            break
        else:
            raise AssertionError("the supervisor never released its lock")
    try:
        yield pid
    finally:
        with contextlib.suppress(ProcessLookupError):  # already killed and reaped
            os.kill(pid, signal.SIGCONT)


def test_cancel_while_cancelling_restarts_nothing(engine: LocalBatchEngine, out_dir: Path) -> None:
    engine.submit(
        request=make_request(
            "twice-cancelled", image=IMAGE_SLEEP, variables={"OUT_DIR": str(out_dir)}
        )
    )
    wait_for(lambda: (out_dir / "pids-0").exists())
    pids = [int(p) for p in (out_dir / "pids-0").read_text().split()]
    job_dir = engine.job_dir("twice-cancelled")
    with paused_supervisor(job_dir) as supervisor_pid:
        # A first cancel is under way (state set, its supervisor not yet stopped).
        with updating(job_dir) as state:
            set_job_state(state, JobState.CANCELLATION_IN_PROGRESS, "Cancellation requested.")
        started = time.monotonic()
        engine.cancel(job_id="twice-cancelled")
        elapsed = time.monotonic() - started
        # Returned at once: no new SIGTERM + grace period, nothing killed, nothing re-recorded.
        assert elapsed < 1.0
        assert pid_alive(supervisor_pid) and all(pid_alive(p) for p in pids)
        status = engine.get_job(job_id="twice-cancelled")
        assert status.state is JobState.CANCELLATION_IN_PROGRESS
        assert status.state.is_stopping and not status.state.is_terminal
        assert states(status).count(JobState.CANCELLATION_IN_PROGRESS) == 1
    # The supervisor, resumed, sees the job is being cancelled and ends it.
    final = wait_until_ended(engine, "twice-cancelled", WAIT_S)
    assert final.state is JobState.CANCELLED
    assert states(final)[-2:] == [JobState.CANCELLATION_IN_PROGRESS, JobState.CANCELLED]
    assert "was cancelled by a cancel request" in final.failure_summary
    wait_for(lambda: not any(pid_alive(p) for p in pids))


def test_cancelling_job_of_a_dead_supervisor_ends_cancelled(
    engine: LocalBatchEngine, out_dir: Path
) -> None:
    engine.submit(
        request=make_request(
            "cancel-orphan", image=IMAGE_SLEEP, variables={"OUT_DIR": str(out_dir)}
        )
    )
    wait_for(lambda: (out_dir / "pids-0").exists())
    pids = [int(p) for p in (out_dir / "pids-0").read_text().split()]
    job_dir = engine.job_dir("cancel-orphan")
    with paused_supervisor(job_dir) as supervisor_pid:
        with updating(job_dir) as state:
            set_job_state(state, JobState.CANCELLATION_IN_PROGRESS, "Cancellation requested.")
        os.kill(supervisor_pid, signal.SIGKILL)  # the canceller and the supervisor both died
    wait_for(lambda: not pid_alive(supervisor_pid))
    status = engine.get_job(job_id="cancel-orphan")
    assert status.state is JobState.CANCELLED  # not FAILED: it was being cancelled
    assert "local supervisor died" not in status.failure_summary
    wait_for(lambda: not any(pid_alive(p) for p in pids))


def test_cancel_of_a_finished_job_keeps_it(engine: LocalBatchEngine) -> None:
    engine.submit(request=make_request("finished", image=IMAGE_EXIT3))
    wait_until_ended(engine, "finished", WAIT_S)
    engine.cancel(job_id="finished")
    assert engine.get_job(job_id="finished").state is JobState.FAILED


def test_dead_supervisor_fails_the_job(engine: LocalBatchEngine, out_dir: Path) -> None:
    engine.submit(
        request=make_request("orphan", image=IMAGE_SLEEP, variables={"OUT_DIR": str(out_dir)})
    )
    wait_for(lambda: (out_dir / "pids-0").exists())
    pids = [int(p) for p in (out_dir / "pids-0").read_text().split()]
    supervisor_pid = read_state(engine.job_dir("orphan")).supervisor.pid
    os.kill(supervisor_pid, signal.SIGKILL)
    wait_for(lambda: not pid_alive(supervisor_pid))
    status = engine.get_job(job_id="orphan")
    assert status.state is JobState.FAILED
    assert "local supervisor died" in status.failure_summary
    wait_for(lambda: not any(pid_alive(p) for p in pids))  # its tasks do not linger


def test_list_jobs_filters_on_labels_in_one_call(engine: CountingLocalBatchEngine) -> None:
    for job_id, kind in [("list-a1", "a"), ("list-a2", "a"), ("list-b1", "b")]:
        engine.submit(
            request=make_request(job_id, image=IMAGE_EXIT3, labels={"kind": kind, "run": "r1"})
        )
    before = engine.calls
    found = engine.list_jobs(labels={"kind": "a", "app": "robotoff-batch"})
    assert engine.calls == before + 1
    assert sorted(j.job_id for j in found) == ["list-a1", "list-a2"]
    assert engine.list_jobs(labels={"kind": "c"}) == []
    assert len(engine.list_jobs(labels={"run": "r1"})) == 3
    assert engine.calls == before + 3
    for job_id in ("list-a1", "list-a2", "list-b1"):
        wait_until_ended(engine, job_id, WAIT_S)
    calls = engine.calls
    assert {j.state for j in engine.list_jobs(labels={})} == {JobState.FAILED}
    engine.get_job(job_id="list-b1")
    assert engine.calls == calls + 2


def test_unknown_image_and_job_are_refused(engine: LocalBatchEngine) -> None:
    request = make_request("bad-image", image="europe-docker.pkg.dev/off/robotoff/nope:1")
    with pytest.raises(BatchEngineError) as refused:
        engine.submit(request=request)
    message = str(refused.value)
    assert "europe-docker.pkg.dev/off/robotoff/nope:1" in message and IMAGE_WRITE in message
    assert not engine.job_dir("bad-image").exists()
    with pytest.raises(JobNotFoundError):
        engine.get_job(job_id="bad-image")
    with pytest.raises(BatchEngineError):
        engine.submit(request=make_request("Not_A_Valid_Id"))


def test_secret_variables_resolved_from_env_and_never_stored(
    engine: LocalBatchEngine, out_dir: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    secret = "s3cr3t-value-8f1c2e"
    monkeypatch.setenv("ROBOTOFF_API_TOKEN", secret)
    request = make_request(
        "with-secret",
        variables={"OUT_DIR": str(out_dir), "SLEEP_S": "0"},
        secret_variables={
            "SECRET_TOKEN": "projects/off-test/secrets/ROBOTOFF_API_TOKEN/versions/latest"
        },
    )
    engine.submit(request=request)
    final = wait_until_ended(engine, "with-secret", WAIT_S)
    assert final.state is JobState.SUCCEEDED, final.failure_summary
    record = json.loads((out_dir / "task-0.json").read_text())
    assert record["env"]["SECRET_TOKEN"] == secret
    stored = [p for p in engine.job_dir("with-secret").rglob("*") if p.is_file()]
    assert any(p.name == "job.json" for p in stored)
    for path in stored:
        assert secret not in path.read_text(errors="replace"), path
    assert (
        "ROBOTOFF_API_TOKEN/versions/latest"
        in (engine.job_dir("with-secret") / "job.json").read_text()
    )


def test_task_gets_only_what_cloud_batch_would_give(
    engine: LocalBatchEngine, out_dir: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Not the orchestrator's environment: its credentials and connection strings stay out."""
    from robotoff_batch.batch.local.spec import IMAGE_ENVIRONMENT, TASK_INHERITED_VARIABLES

    monkeypatch.setenv("GOOGLE_CREDENTIALS", "eyJrZXkiOiAic2VjcmV0In0=")
    monkeypatch.setenv("ROBOTOFF_DATABASE_URL", "postgresql://robotoff:pw@db/robotoff")
    monkeypatch.setenv("ROBOTOFF_BATCH_JOB_KEY", "k3y")
    request = make_request("only-job-env", variables={"OUT_DIR": str(out_dir), "SLEEP_S": "0"})
    engine.submit(request=request)
    final = wait_until_ended(engine, "only-job-env", WAIT_S)
    assert final.state is JobState.SUCCEEDED, final.failure_summary
    names = set(json.loads((out_dir / "task-0.json").read_text())["env_names"])
    batch = {"BATCH_TASK_INDEX", "BATCH_TASK_COUNT", "BATCH_JOB_ID", "BATCH_TASK_RETRY_ATTEMPT"}
    assert {"OUT_DIR", "SLEEP_S", "PATH"} | batch <= names
    allowed = {"OUT_DIR", "SLEEP_S", *batch, *TASK_INHERITED_VARIABLES, *IMAGE_ENVIRONMENT}
    assert names <= allowed | {"PWD", "LC_CTYPE"}
    assert not names & {"GOOGLE_CREDENTIALS", "ROBOTOFF_DATABASE_URL", "ROBOTOFF_BATCH_JOB_KEY"}


def test_unresolvable_secret_fails_the_job(
    engine: LocalBatchEngine, out_dir: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("MISSING_SECRET_XYZ", raising=False)
    request = make_request(
        "missing-secret",
        variables={"OUT_DIR": str(out_dir)},
        secret_variables={"TOKEN": "projects/p/secrets/MISSING_SECRET_XYZ/versions/1"},
    )
    engine.submit(request=request)
    final = wait_until_ended(engine, "missing-secret", WAIT_S)
    assert final.state is JobState.FAILED
    assert "TOKEN" in final.failure_summary and "MISSING_SECRET_XYZ" in final.failure_summary
    assert not (out_dir / "task-0.json").exists()


def test_supervisor_cli_refuses_garbage(tmp_path: Path) -> None:
    done = subprocess.run(
        [sys.executable, "-m", "robotoff_batch.batch.local", "bogus"],
        capture_output=True,
        cwd=PROJECT_ROOT,
        timeout=WAIT_S,
    )
    assert done.returncode == 2


# -- log_tail ---------------------------------------------------------------------------------


def test_log_tail_is_the_end_of_the_failed_tasks_log(engine: LocalBatchEngine) -> None:
    engine.submit(
        request=make_request(
            "noisy-fail",
            image=IMAGE_LINES,
            task_count=3,
            parallelism=3,
            variables={"LINES": "100", "FAIL_INDEX": "1"},
        )
    )
    final = wait_until_ended(engine, "noisy-fail", WAIT_S)
    assert final.state is JobState.FAILED
    assert [t.exit_code for t in final.tasks] == [0, 3, 0]

    tail = engine.log_tail(job_id="noisy-fail")
    assert tail is not None
    # Task 1 failed: its log, not that of a task that succeeded (or started last).
    assert tail.splitlines() == [f"task 1 line {n:03d}" for n in range(71, 101)]
    assert "task 1 line 001" not in tail
    assert engine.log_tail(job_id="noisy-fail", lines=3) == (
        "task 1 line 098\ntask 1 line 099\ntask 1 line 100"
    )


def test_log_tail_without_failure_is_the_last_attempt(
    engine: LocalBatchEngine, out_dir: Path
) -> None:
    request = make_request(
        "flaky-tail",
        image=IMAGE_FLAKY,
        max_retry_count=1,
        variables={"OUT_DIR": str(out_dir), "FAIL_TIMES": "1"},
    )
    engine.submit(request=request)
    final = wait_until_ended(engine, "flaky-tail", WAIT_S)
    assert final.state is JobState.SUCCEEDED, final.failure_summary
    assert engine.log_tail(job_id="flaky-tail") == "task 0 run 2: ok"


def test_log_tail_reads_only_the_end_of_a_big_log(engine: LocalBatchEngine) -> None:
    engine.submit(request=make_request("big-log", image=IMAGE_EXIT3))
    wait_until_ended(engine, "big-log", WAIT_S)
    log = engine.job_dir("big-log") / "logs" / "task-0-attempt-1.log"
    # One line far longer than what is read, then a line that is not valid UTF-8.
    log.write_bytes(b"first\n" + b"x" * 200_000 + b"\ncaf\xe9 crashed\nexit 3\n")
    assert engine.log_tail(job_id="big-log") == "caf\ufffd crashed\nexit 3"


def test_log_tail_is_none_without_a_log(
    engine: LocalBatchEngine, out_dir: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    assert engine.log_tail(job_id="never-existed") is None
    monkeypatch.delenv("MISSING_SECRET_XYZ", raising=False)
    request = make_request(
        "never-ran",
        variables={"OUT_DIR": str(out_dir)},
        secret_variables={"TOKEN": "projects/p/secrets/MISSING_SECRET_XYZ/versions/1"},
    )
    engine.submit(request=request)
    assert wait_until_ended(engine, "never-ran", WAIT_S).state is JobState.FAILED
    assert engine.log_tail(job_id="never-ran") is None  # no task ever started
