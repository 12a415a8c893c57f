"""CloudBatchEngine through the real BatchServiceClient, over gRPC, against the fake BatchService.

The fake runs each job's tasks through the local runner, so a submitted job really runs (a
tiny Python 'container'), and its state travels back as batch_v1 messages.
"""

from __future__ import annotations

import base64
import json
import logging
import os
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import grpc
import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import rsa
from google.cloud import batch_v1

from robotoff_batch.batch.cloud_batch import CloudBatchEngine, labels_filter, request_id
from robotoff_batch.batch.engine import (
    BatchEngine,
    BatchEngineError,
    JobNotFoundError,
    JobState,
    JobStatus,
)
from robotoff_batch.gcp_credentials import CredentialsError, load_credentials
from tests.fakes.fake_batch_service import (
    FakeBatchService,
    parse_label_filter,
    running_fake_batch_service,
)
from tests.fakes.settings import (
    FAKE_IMAGE_FAIL,
    FAKE_IMAGE_OK,
    FAKE_IMAGE_SLEEP,
    TEST_LOCATION,
    TEST_PROJECT,
    fast_batch_retry,
)

pytest_plugins = ["tests.gcp_fixtures"]  # also registered by tests/conftest.py

LABELS = {"app": "robotoff-batch", "job-type": "ingredients-spellcheck"}


def make_request(
    job_id: str,
    *,
    image: str = FAKE_IMAGE_OK,
    task_count: int = 1,
    env: dict[str, str] | None = None,
    labels: dict[str, str] | None = None,
) -> batch_v1.CreateJobRequest:
    """A CreateJobRequest as the request builder makes it (one container task group)."""
    container = batch_v1.Runnable.Container(image_uri=image, commands=[])
    task_spec = batch_v1.TaskSpec(
        runnables=[batch_v1.Runnable(container=container)],
        environment=batch_v1.Environment(variables=env or {}),
        max_retry_count=0,
    )
    return batch_v1.CreateJobRequest(
        parent=f"projects/{TEST_PROJECT}/locations/{TEST_LOCATION}",
        job_id=job_id,
        job=batch_v1.Job(
            task_groups=[
                batch_v1.TaskGroup(
                    task_count=task_count, parallelism=task_count, task_spec=task_spec
                )
            ],
            labels=labels or LABELS,
            logs_policy=batch_v1.LogsPolicy(
                destination=batch_v1.LogsPolicy.Destination.CLOUD_LOGGING
            ),
        ),
    )


def wait_for(predicate: Callable[[], JobStatus | bool | None], timeout: float = 30.0) -> object:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = predicate()
        if value:
            return value
        time.sleep(0.1)
    raise AssertionError("condition not met in time")


def listed(engine: CloudBatchEngine, job_id: str) -> JobStatus | None:
    return next((s for s in engine.list_jobs(labels=LABELS) if s.job_id == job_id), None)


@pytest.fixture
def queued_only_service() -> Iterator[FakeBatchService]:
    """A fake whose jobs never leave QUEUED (no backend): 'in flight' for polling tests."""
    with running_fake_batch_service(backend=None) as service:
        yield service


def engine_on(service: FakeBatchService) -> CloudBatchEngine:
    return CloudBatchEngine(
        project=TEST_PROJECT,
        location=TEST_LOCATION,
        client=service.client(),
        retry=fast_batch_retry(),
        timeout=10.0,
    )


# -- submit, run, poll ----------------------------------------------------------------------


def test_engine_implements_the_protocol(cloud_batch_engine: CloudBatchEngine) -> None:
    assert isinstance(cloud_batch_engine, BatchEngine)
    # no such job: no log tail (tests/test_cloud_logging.py reads real ones)
    assert cloud_batch_engine.log_tail(job_id="any-job") is None


def test_submitted_job_runs_and_list_jobs_sees_it_succeed(
    cloud_batch_engine: CloudBatchEngine, fake_batch_service: FakeBatchService, tmp_path: Path
) -> None:
    markers = tmp_path / "markers"
    markers.mkdir()
    submitted = cloud_batch_engine.submit(
        request=make_request("spellcheck-ok", task_count=2, env={"FAKE_MARKER_DIR": str(markers)})
    )
    assert submitted.job_id == "spellcheck-ok"
    assert (
        submitted.uid
        and submitted.log_uri
        and submitted.uid in submitted.log_uri.replace("%2D", "-")
    )

    done = wait_for(
        lambda: (s := listed(cloud_batch_engine, "spellcheck-ok")) and s.state.is_terminal and s
    )
    assert isinstance(done, JobStatus)
    assert done.state is JobState.SUCCEEDED, done.failure_summary
    assert dict(done.labels) == LABELS
    assert done.create_time is not None
    assert JobState.SUCCEEDED in [e.new_state for e in done.status_events]
    assert sorted(p.name for p in markers.iterdir() if p.name.startswith("done")) == [
        "done-0",
        "done-1",
    ]

    detailed = cloud_batch_engine.get_job(job_id="spellcheck-ok")
    assert [(t.index, t.exit_code) for t in detailed.tasks] == [(0, 0), (1, 0)]
    assert fake_batch_service.calls["ListTasks"] == 1
    assert cloud_batch_engine.logs_uri(job_id="spellcheck-ok") == submitted.log_uri


def test_failed_task_reports_the_container_exit_code(
    cloud_batch_engine: CloudBatchEngine,
) -> None:
    cloud_batch_engine.submit(request=make_request("spellcheck-fails", image=FAKE_IMAGE_FAIL))
    wait_for(lambda: cloud_batch_engine.get_job(job_id="spellcheck-fails").state.is_terminal)
    status = cloud_batch_engine.get_job(job_id="spellcheck-fails")
    assert status.state is JobState.FAILED
    assert [t.exit_code for t in status.tasks] == [3]
    assert "task 0: container exited with code 3" in status.failure_summary


def test_resubmission_reattaches_to_the_existing_job(
    cloud_batch_engine: CloudBatchEngine, fake_batch_service: FakeBatchService
) -> None:
    first = cloud_batch_engine.submit(request=make_request("spellcheck-twice"))
    again = cloud_batch_engine.submit(request=make_request("spellcheck-twice"))
    assert again.uid == first.uid
    assert fake_batch_service.calls["CreateJob"] == 2  # the second met ALREADY_EXISTS
    assert fake_batch_service.calls["GetJob"] == 1  # ... and re-attached
    assert len(fake_batch_service.job_names()) == 1


def test_resubmission_with_other_labels_is_a_collision(
    queued_only_service: FakeBatchService,
) -> None:
    engine = engine_on(queued_only_service)
    engine.submit(request=make_request("spellcheck-same-id"))
    other = {"app": "robotoff-batch", "job-type": "other"}
    with pytest.raises(BatchEngineError, match="taken by a job with other labels"):
        engine.submit(request=make_request("spellcheck-same-id", labels=other))


def test_lost_create_response_leaves_exactly_one_job(
    cloud_batch_engine: CloudBatchEngine, fake_batch_service: FakeBatchService
) -> None:
    fake_batch_service.lose_next_response("CreateJob")
    status = cloud_batch_engine.submit(request=make_request("spellcheck-lost"))
    assert status.job_id == "spellcheck-lost"
    assert fake_batch_service.calls["CreateJob"] == 2  # created + DEADLINE_EXCEEDED, then 409
    assert fake_batch_service.job_names() == [
        f"projects/{TEST_PROJECT}/locations/{TEST_LOCATION}/jobs/spellcheck-lost"
    ]
    done = wait_for(
        lambda: (s := listed(cloud_batch_engine, "spellcheck-lost")) and s.state.is_terminal and s
    )
    assert isinstance(done, JobStatus) and done.state is JobState.SUCCEEDED


@pytest.mark.parametrize(
    "code",
    [
        grpc.StatusCode.UNAVAILABLE,
        grpc.StatusCode.DEADLINE_EXCEEDED,
        grpc.StatusCode.RESOURCE_EXHAUSTED,
    ],
)
def test_transient_errors_are_retried(
    queued_only_service: FakeBatchService, code: grpc.StatusCode
) -> None:
    engine = engine_on(queued_only_service)
    queued_only_service.fail_next("CreateJob", code, times=3)
    assert engine.submit(request=make_request("spellcheck-retried")).state is JobState.QUEUED
    assert queued_only_service.calls["CreateJob"] == 4
    queued_only_service.fail_next("ListJobs", code, times=3)
    assert [s.job_id for s in engine.list_jobs(labels=LABELS)] == ["spellcheck-retried"]
    assert queued_only_service.calls["ListJobs"] == 4


def test_persistent_outage_and_refusals_raise_engine_errors(
    queued_only_service: FakeBatchService,
) -> None:
    engine = CloudBatchEngine(
        project=TEST_PROJECT,
        location=TEST_LOCATION,
        client=queued_only_service.client(),
        retry=fast_batch_retry().with_timeout(0.5),
    )
    queued_only_service.fail_next("CreateJob", grpc.StatusCode.UNAVAILABLE, times=1000)
    with pytest.raises(BatchEngineError, match="unreachable"):
        engine.submit(request=make_request("spellcheck-outage"))
    queued_only_service.fail_next("CreateJob", grpc.StatusCode.PERMISSION_DENIED)
    queued_only_service._faults["CreateJob"].clear()
    queued_only_service.fail_next("CreateJob", grpc.StatusCode.PERMISSION_DENIED)
    before = queued_only_service.calls["CreateJob"]
    with pytest.raises(BatchEngineError, match="refused"):
        engine.submit(request=make_request("spellcheck-denied"))
    assert queued_only_service.calls["CreateJob"] == before + 1  # not retried


def test_fifty_jobs_in_flight_cost_one_list_call(queued_only_service: FakeBatchService) -> None:
    engine = engine_on(queued_only_service)
    for index in range(50):
        engine.submit(request=make_request(f"spellcheck-{index:02d}"))
    for index in range(5):
        engine.submit(
            request=make_request(
                f"other-{index}", labels={"app": "robotoff-batch", "job-type": "other"}
            )
        )
    queued_only_service.calls.clear()

    statuses = engine.list_jobs(labels=LABELS)

    assert len(statuses) == 50
    assert all(s.state is JobState.QUEUED for s in statuses)
    assert dict(queued_only_service.calls) == {"ListJobs": 1}
    sent = queued_only_service.requests["ListJobs"][-1]
    assert (
        sent.filter == 'labels.app="robotoff-batch" AND labels."job-type"="ingredients-spellcheck"'
    )
    assert sent.page_size == 1000


def test_each_page_is_a_call_and_is_reported(caplog: pytest.LogCaptureFixture) -> None:
    with running_fake_batch_service(backend=None, max_page_size=20) as service:
        engine = engine_on(service)
        for index in range(45):
            engine.submit(request=make_request(f"spellcheck-{index:02d}"))
        service.calls.clear()
        with caplog.at_level(logging.WARNING):
            assert len(engine.list_jobs(labels=LABELS)) == 45
        assert service.calls["ListJobs"] == 3
        assert "needed 3 calls" in caplog.text


def test_queued_to_failed_without_task_surfaces_the_status_event(
    cloud_batch_engine: CloudBatchEngine, fake_batch_service: FakeBatchService
) -> None:
    reason = (
        "Job failed due to resource unavailability: accelerator type nvidia-l4 not available "
        "in zone europe-west4-a"
    )
    fake_batch_service.fail_next_job_allocation(reason)
    cloud_batch_engine.submit(request=make_request("spellcheck-no-gpu"))
    first = listed(cloud_batch_engine, "spellcheck-no-gpu")
    assert first is not None and first.state is JobState.QUEUED
    failed = listed(cloud_batch_engine, "spellcheck-no-gpu")
    assert failed is not None and failed.state is JobState.FAILED
    assert [e.new_state for e in failed.status_events] == [JobState.FAILED]
    assert reason in failed.failure_summary
    detailed = cloud_batch_engine.get_job(job_id="spellcheck-no-gpu")
    assert detailed.tasks == ()
    assert reason in detailed.failure_summary


def test_job_deleted_behind_our_back(
    cloud_batch_engine: CloudBatchEngine, fake_batch_service: FakeBatchService
) -> None:
    cloud_batch_engine.submit(request=make_request("spellcheck-kept"))
    cloud_batch_engine.submit(request=make_request("spellcheck-vanishes", image=FAKE_IMAGE_SLEEP))
    fake_batch_service.delete_behind_back("spellcheck-vanishes")

    with pytest.raises(JobNotFoundError):
        cloud_batch_engine.get_job(job_id="spellcheck-vanishes")
    statuses = cloud_batch_engine.list_jobs(labels=LABELS)
    assert [s.job_id for s in statuses] == ["spellcheck-kept"]


def test_cancel_is_cancel_job_and_the_cancelled_job_stays_listed(
    cloud_batch_engine: CloudBatchEngine, fake_batch_service: FakeBatchService, tmp_path: Path
) -> None:
    markers = tmp_path / "markers"
    markers.mkdir()
    cloud_batch_engine.submit(
        request=make_request(
            "spellcheck-cancelled", image=FAKE_IMAGE_SLEEP, env={"FAKE_MARKER_DIR": str(markers)}
        )
    )
    wait_for(lambda: (markers / "alive-0").exists())

    cloud_batch_engine.cancel(job_id="spellcheck-cancelled")

    assert fake_batch_service.calls["CancelJob"] == 1
    assert fake_batch_service.calls["DeleteJob"] == 0
    cancel = fake_batch_service.requests["CancelJob"][0]
    name = f"projects/{TEST_PROJECT}/locations/{TEST_LOCATION}/jobs/spellcheck-cancelled"
    assert cancel.name == name
    assert cancel.request_id == request_id("cancel", name)

    def stopped() -> bool:  # the task writes a heartbeat every 0.1 s while it runs
        before = (markers / "alive-0").read_text()
        time.sleep(0.5)
        return (markers / "alive-0").read_text() == before

    wait_for(stopped, timeout=15.0)
    assert not (markers / "done-0").exists()

    done = wait_for(
        lambda: (
            (s := listed(cloud_batch_engine, "spellcheck-cancelled")) and s.state.is_terminal and s
        )
    )
    assert isinstance(done, JobStatus) and done.state is JobState.CANCELLED
    detailed = cloud_batch_engine.get_job(job_id="spellcheck-cancelled")  # still there
    assert detailed.state is JobState.CANCELLED
    assert [e.new_state for e in detailed.status_events if e.new_state][-3:] == [
        JobState.RUNNING,
        JobState.CANCELLATION_IN_PROGRESS,
        JobState.CANCELLED,
    ]
    assert "was cancelled by a cancel request" in detailed.failure_summary

    cloud_batch_engine.cancel(job_id="spellcheck-cancelled")  # again: harmless, nothing sent
    assert fake_batch_service.calls["CancelJob"] == 1
    assert fake_batch_service.calls["DeleteJob"] == 0
    assert cloud_batch_engine.get_job(job_id="spellcheck-cancelled").state is JobState.CANCELLED


def test_cancel_reports_cancellation_in_progress_then_cancelled(
    queued_only_service: FakeBatchService,
) -> None:
    engine = engine_on(queued_only_service)
    engine.submit(request=make_request("spellcheck-queued-cancel"))
    engine.cancel(job_id="spellcheck-queued-cancel")
    assert queued_only_service.stopping_observations == 2
    stopping = listed(engine, "spellcheck-queued-cancel")
    assert stopping is not None and stopping.state is JobState.CANCELLATION_IN_PROGRESS
    assert stopping.state.is_stopping and not stopping.state.is_terminal
    # Cancelling again while it is in progress (2nd observation) sends nothing: Batch would
    # refuse it (FAILED_PRECONDITION) and the follower would report a failed cancel.
    engine.cancel(job_id="spellcheck-queued-cancel")
    assert queued_only_service.calls["CancelJob"] == 1
    cancelled = listed(engine, "spellcheck-queued-cancel")
    assert cancelled is not None and cancelled.state is JobState.CANCELLED
    assert [e.new_state for e in cancelled.status_events] == [
        JobState.CANCELLATION_IN_PROGRESS,
        JobState.CANCELLED,
    ]


@pytest.mark.parametrize("code", [grpc.StatusCode.PERMISSION_DENIED, grpc.StatusCode.UNIMPLEMENTED])
def test_cancel_falls_back_on_delete_when_cancel_job_is_refused(
    cloud_batch_engine: CloudBatchEngine,
    fake_batch_service: FakeBatchService,
    caplog: pytest.LogCaptureFixture,
    code: grpc.StatusCode,
) -> None:
    cloud_batch_engine.submit(request=make_request("spellcheck-denied", image=FAKE_IMAGE_SLEEP))
    fake_batch_service.fail_next("CancelJob", code)

    with caplog.at_level(logging.WARNING):
        cloud_batch_engine.cancel(job_id="spellcheck-denied")

    assert fake_batch_service.calls["CancelJob"] == 1  # not retried
    assert fake_batch_service.calls["DeleteJob"] == 1
    delete = fake_batch_service.requests["DeleteJob"][0]
    assert delete.name.endswith("/jobs/spellcheck-denied") and delete.request_id
    assert "spellcheck-denied" in caplog.text and "erases its history" in caplog.text
    # Like Batch: DELETION_IN_PROGRESS for a few observations, during which nothing is re-sent.
    for _ in range(fake_batch_service.stopping_observations - 1):
        assert cloud_batch_engine.get_job(job_id="spellcheck-denied").state is (
            JobState.DELETION_IN_PROGRESS
        )
    cloud_batch_engine.cancel(job_id="spellcheck-denied")
    assert (fake_batch_service.calls["CancelJob"], fake_batch_service.calls["DeleteJob"]) == (1, 1)
    with pytest.raises(JobNotFoundError):
        cloud_batch_engine.get_job(job_id="spellcheck-denied")
    assert listed(cloud_batch_engine, "spellcheck-denied") is None


def test_cancel_of_a_missing_job_is_not_an_error(
    cloud_batch_engine: CloudBatchEngine, fake_batch_service: FakeBatchService
) -> None:
    cloud_batch_engine.cancel(job_id="spellcheck-never-created")
    assert fake_batch_service.calls["GetJob"] == 1
    assert fake_batch_service.calls["CancelJob"] == 0
    assert fake_batch_service.calls["DeleteJob"] == 0


def test_cancel_refused_for_another_reason_raises_and_deletes_nothing(
    queued_only_service: FakeBatchService,
) -> None:
    engine = engine_on(queued_only_service)
    engine.submit(request=make_request("spellcheck-bad-cancel"))
    queued_only_service.fail_next("CancelJob", grpc.StatusCode.FAILED_PRECONDITION)
    with pytest.raises(BatchEngineError, match="could not cancel job spellcheck-bad-cancel"):
        engine.cancel(job_id="spellcheck-bad-cancel")
    assert queued_only_service.calls["DeleteJob"] == 0
    assert engine.get_job(job_id="spellcheck-bad-cancel").state is JobState.QUEUED


def test_labels_filter_round_trips_through_the_fake_parser() -> None:
    labels = {"app": "robotoff-batch", "job-type": "x", "dagster-run-id": 'a"b\\c'}
    text = labels_filter(labels)
    assert text.startswith('labels.app="robotoff-batch" AND labels."dagster-run-id"=')
    assert parse_label_filter(text) == labels


# -- credentials ----------------------------------------------------------------------------


def _service_account_info() -> dict[str, str]:
    key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    pem = key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    ).decode()
    return {
        "type": "service_account",
        "project_id": "off-robotoff",
        "private_key_id": os.urandom(20).hex(),
        "private_key": pem,
        "client_email": "robotoff-batch@off-robotoff.iam.gserviceaccount.com",
        "client_id": "1234567890",
        "token_uri": "https://oauth2.googleapis.com/token",
    }


def _b64(data: bytes) -> str:
    return base64.b64encode(data).decode()


def test_google_credentials_decoded_in_memory(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(tmp_path)
    info = _service_account_info()
    credentials, project = load_credentials(
        env={"GOOGLE_CREDENTIALS": _b64(json.dumps(info).encode())}
    )
    assert project == "off-robotoff"
    assert credentials is not None
    assert credentials.service_account_email == info["client_email"]  # type: ignore[attr-defined]
    assert list(tmp_path.iterdir()) == []  # nothing written to disk
    _, overridden = load_credentials(
        env={
            "GOOGLE_CREDENTIALS": _b64(json.dumps(info).encode()),
            "ROBOTOFF_BATCH_GCP_PROJECT": "other-project",
        }
    )
    assert overridden == "other-project"


def test_application_default_credentials(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    key_file = tmp_path / "key.json"
    key_file.write_text(json.dumps(_service_account_info()))
    monkeypatch.setenv("GOOGLE_APPLICATION_CREDENTIALS", str(key_file))
    credentials, project = load_credentials(env={})
    assert credentials is not None and project == "off-robotoff"


def _secret_cases() -> list[tuple[str, str]]:
    info = _service_account_info()
    no_email = {k: v for k, v in info.items() if k != "client_email"}
    bad_key = {**info, "private_key": "-----BEGIN PRIVATE KEY-----\n" + _b64(os.urandom(300))}
    return [
        ("not-base64", "%%%" + json.dumps(info) + "%%%"),
        ("not-json", _b64(b"{'private_key': '" + os.urandom(200).hex().encode() + b"'")),
        ("missing-keys", _b64(json.dumps(no_email).encode())),
        ("bad-private-key", _b64(json.dumps(bad_key).encode())),
    ]


@pytest.mark.parametrize("case", range(4), ids=[c[0] for c in _secret_cases()])
def test_malformed_credentials_never_echo_the_secret(
    case: int, caplog: pytest.LogCaptureFixture
) -> None:
    _, secret = _secret_cases()[case]
    with caplog.at_level(logging.DEBUG), pytest.raises(CredentialsError) as raised:
        load_credentials(env={"GOOGLE_CREDENTIALS": secret})
    exc = raised.value
    texts = [str(exc), repr(exc), caplog.text, str(exc.__cause__), str(exc.__context__)]
    assert "GOOGLE_CREDENTIALS" in str(exc)
    assert exc.__cause__ is None and (exc.__context__ is None or exc.__suppress_context__)
    decoded = ""
    try:
        decoded = base64.b64decode(secret).decode("utf-8", "replace")
    except ValueError:
        pass
    for source in (secret, decoded):
        fragments = {source[i : i + 12] for i in range(0, max(len(source) - 12, 0))}
        for text in texts:
            leaked = [f for f in fragments if f in text]
            assert not leaked, f"secret fragment leaked: {leaked[:1]}"


# -- the fake behaves like Batch where it matters (issue 8) ---------------------------------


def test_job_level_events_carry_no_exit_code_which_comes_from_list_tasks(
    cloud_batch_engine: CloudBatchEngine,
) -> None:
    cloud_batch_engine.submit(request=make_request("spellcheck-exit3", image=FAKE_IMAGE_FAIL))
    done = wait_for(
        lambda: (s := listed(cloud_batch_engine, "spellcheck-exit3")) and s.state.is_terminal and s
    )
    assert isinstance(done, JobStatus) and done.state is JobState.FAILED
    assert done.tasks == () and all(e.task_exit_code is None for e in done.status_events)
    detailed = cloud_batch_engine.get_job(job_id="spellcheck-exit3")
    assert [(t.index, t.exit_code) for t in detailed.tasks] == [(0, 3)]
    assert "task 0: container exited with code 3" in detailed.failure_summary


def test_a_job_held_by_quota_is_reported_stuck_with_the_quota_event(
    queued_only_service: FakeBatchService,
) -> None:
    from datetime import UTC, datetime

    engine = engine_on(queued_only_service)
    quota = (
        "Quota checking process decides to delay scheduling for the job spellcheck-quota due to "
        "inadequate quota [Quota: NVIDIA_L4_GPUS, limit: 0, usage: 0, wanted: 1]."
    )
    queued_only_service.hold_in_queue(quota)
    engine.submit(request=make_request("spellcheck-quota"))
    now = datetime.now(UTC)
    status = listed(engine, "spellcheck-quota")
    assert status is not None and status.state is JobState.QUEUED
    assert status.stuck_reason(now=now, max_pending_s=6 * 3600) is None
    queued_only_service.age_job("spellcheck-quota", 7 * 3600)
    aged = listed(engine, "spellcheck-quota")
    assert aged is not None and aged.state is JobState.QUEUED
    reason = aged.stuck_reason(now=now, max_pending_s=6 * 3600)
    assert reason is not None and "QUEUED for 7.0 h" in reason and "NVIDIA_L4_GPUS" in reason
    engine.cancel(job_id="spellcheck-quota")  # what cancel_when_stuck does
    assert listed(engine, "spellcheck-quota").state is JobState.CANCELLATION_IN_PROGRESS  # type: ignore[union-attr]


def test_page_size_is_fixed_by_the_page_token(queued_only_service: FakeBatchService) -> None:
    from google.api_core import exceptions as api_exceptions

    engine = engine_on(queued_only_service)
    for index in range(5):
        engine.submit(request=make_request(f"spellcheck-page-{index}"))
    client = queued_only_service.client()
    parent = engine.parent
    first = client.list_jobs(request=batch_v1.ListJobsRequest(parent=parent, page_size=2))
    page = next(iter(first.pages))
    assert len(page.jobs) == 2 and page.next_page_token
    with pytest.raises(api_exceptions.InvalidArgument, match="page size"):
        client.list_jobs(
            request=batch_v1.ListJobsRequest(
                parent=parent, page_size=3, page_token=page.next_page_token
            )
        )
    with pytest.raises(api_exceptions.InvalidArgument, match="filter"):
        client.list_jobs(
            request=batch_v1.ListJobsRequest(
                parent=parent, page_size=2, page_token=page.next_page_token, filter='labels.app="x"'
            )
        )
    # The client's own pager keeps the size: every job, three calls.
    assert len(list(first)) == 5


def _break(request: batch_v1.CreateJobRequest, what: str) -> batch_v1.CreateJobRequest:
    job = request.job
    if what == "reserved-label":
        job.labels["goog-billing"] = "x"
    elif what == "bad-label-key":
        job.labels["Team"] = "x"
    elif what == "bad-label-value":
        job.labels["team"] = "Robotoff Team"
    elif what == "bad-allocation-label":
        job.allocation_policy.labels["goog-x"] = "y"
    elif what == "missing-image":
        job.task_groups[0].task_spec.runnables[0].container.image_uri = ""
    elif what == "parallelism-above-tasks":
        job.task_groups[0].parallelism = 5
    return request


@pytest.mark.parametrize(
    "what",
    [
        "reserved-label",
        "bad-label-key",
        "bad-label-value",
        "bad-allocation-label",
        "missing-image",
        "parallelism-above-tasks",
    ],
)
def test_create_job_refuses_what_the_api_refuses(
    queued_only_service: FakeBatchService, what: str
) -> None:
    engine = engine_on(queued_only_service)
    with pytest.raises(BatchEngineError, match="refused.*INVALID_ARGUMENT|refused"):
        engine.submit(request=_break(make_request(f"spellcheck-{what}"), what))
    assert queued_only_service.job_names() == []
    assert queued_only_service.calls["CreateJob"] == 1  # not retried


def test_create_job_refuses_a_bad_job_id_through_the_client(
    queued_only_service: FakeBatchService,
) -> None:
    engine = engine_on(queued_only_service)
    with pytest.raises(BatchEngineError, match="bad job id"):
        engine.submit(request=make_request("Bad_Id"))


# -- time budget ----------------------------------------------------------------------------


def test_default_call_budget_fits_in_a_sensor_evaluation(
    queued_only_service: FakeBatchService,
) -> None:
    from dagster._grpc.utils import default_sensor_grpc_timeout

    from robotoff_batch.batch.cloud_batch import SENSOR_EVALUATION_TIMEOUT_S

    engine = CloudBatchEngine(
        project=TEST_PROJECT, location=TEST_LOCATION, client=queued_only_service.client()
    )
    assert default_sensor_grpc_timeout() == SENSOR_EVALUATION_TIMEOUT_S
    # leave room for the tick's own work (a list call, then a GetJob for a failed job)
    assert engine.call_budget_s <= SENSOR_EVALUATION_TIMEOUT_S * 2 / 3


def test_a_slow_api_fails_the_call_cleanly_within_its_budget(
    queued_only_service: FakeBatchService,
) -> None:
    engine = CloudBatchEngine(
        project=TEST_PROJECT,
        location=TEST_LOCATION,
        client=queued_only_service.client(),
        retry=fast_batch_retry().with_timeout(0.6),
        timeout=0.2,
    )
    queued_only_service.delay_next("ListJobs", 0.5, times=50)
    started = time.monotonic()
    with pytest.raises(BatchEngineError, match="unreachable|DEADLINE"):
        engine.list_jobs(labels=LABELS)
    elapsed = time.monotonic() - started
    assert elapsed < engine.call_budget_s + 0.5, elapsed
    assert queued_only_service.calls["ListJobs"] >= 2  # the deadline was retried
    queued_only_service._faults["ListJobs"].clear()
