"""A failed task's log from Cloud Logging: the real ``LoggingServiceV2Client`` of
``google-cloud-logging`` over gRPC against the fake Logging service, which serves the lines the
fake Batch service's tasks printed (the local runner runs them)."""

from __future__ import annotations

import logging

import grpc
import pytest

from robotoff_batch.batch.cloud_batch import CloudBatchEngine
from robotoff_batch.batch.cloud_logging import is_task, task_log_filter
from robotoff_batch.batch.engine import JobState
from tests.fakes.fake_batch_service import FakeBatchService
from tests.fakes.fake_logging_service import parse_filter
from tests.fakes.settings import FAKE_IMAGE_FAIL, FAKE_IMAGE_OK, TEST_PROJECT
from tests.test_cloud_batch import make_request, wait_for

pytest_plugins = ["tests.gcp_fixtures"]


def ended(engine: CloudBatchEngine, job_id: str) -> bool:
    return engine.get_job(job_id=job_id).state.is_terminal


def test_the_failed_tasks_last_lines_come_from_cloud_logging(
    cloud_batch_engine: CloudBatchEngine, fake_batch_service: FakeBatchService
) -> None:
    """Three tasks, task 1 fails: its own last lines, oldest first, not the others' lines."""
    request = make_request("spell-logs", image=FAKE_IMAGE_OK, task_count=3)
    request.job.task_groups[0].task_spec.environment.variables["FAKE_FAIL_TASK"] = "1"
    cloud_batch_engine.submit(request=request)
    wait_for(lambda: ended(cloud_batch_engine, "spell-logs"))
    status = cloud_batch_engine.get_job(job_id="spell-logs")
    assert status.state is JobState.FAILED
    tail = cloud_batch_engine.log_tail(job_id="spell-logs", lines=3)
    assert tail == "task 1: working 38\ntask 1: working 39\ntask 1: fatal: no GPU found"
    full = cloud_batch_engine.log_tail(job_id="spell-logs", lines=100)
    assert full is not None and full.splitlines()[0] == "task 1: ok starting"
    assert len(full.splitlines()) == 42 and "task 0" not in full and "task 2" not in full
    # one ListLogEntries call each, filtered server-side by log, uid and task, newest first
    sent = fake_batch_service.logging.requests[-1]
    assert list(sent.resource_names) == [f"projects/{TEST_PROJECT}"]
    assert sent.order_by == "timestamp desc"
    assert sent.filter == task_log_filter(TEST_PROJECT, status.uid or "", 1)
    assert f'labels.job_uid="{status.uid}"' in sent.filter
    assert f'logName="projects/{TEST_PROJECT}/logs/batch_task_logs"' in sent.filter
    assert fake_batch_service.logging.calls["ListLogEntries"] == 2


def test_task_1_is_not_task_12_and_other_logs_are_not_read(
    cloud_batch_engine: CloudBatchEngine, fake_batch_service: FakeBatchService
) -> None:
    """``group0-1`` is a substring of ``group0-12``: the server's filter lets task 12's lines
    through, the exact check drops them; the agent's log of the same job is not read."""
    request = make_request("spell-twelve", image=FAKE_IMAGE_OK, task_count=2)
    request.job.task_groups[0].task_spec.environment.variables["FAKE_FAIL_TASK"] = "1"
    cloud_batch_engine.submit(request=request)
    wait_for(lambda: ended(cloud_batch_engine, "spell-twelve"))
    uid = cloud_batch_engine.get_job(job_id="spell-twelve").uid or ""
    # newer lines: task 12 of the same job, and Batch's agent log naming task 1
    fake_batch_service.logging.add(
        TEST_PROJECT,
        "task 12 line",
        labels={"job_uid": uid, "task_id": f"task/{uid}-group0-12/0/0"},
    )
    fake_batch_service.logging.add(
        TEST_PROJECT,
        "agent line",
        log="batch_agent_logs",
        labels={"job_uid": uid, "task_id": f"task/{uid}-group0-1/0/0"},
    )
    tail = cloud_batch_engine.log_tail(job_id="spell-twelve", lines=2)
    assert tail == "task 1: working 39\ntask 1: fatal: no GPU found"
    assert is_task(f"task/{uid}-group0-1/0/0", 1) and not is_task(f"task/{uid}-group0-12/0/0", 1)


def test_an_unreadable_cloud_logging_is_no_tail_and_a_warning(
    cloud_batch_engine: CloudBatchEngine,
    fake_batch_service: FakeBatchService,
    caplog: pytest.LogCaptureFixture,
) -> None:
    """The caller lacks roles/logging.viewer: no tail (the logs link stays), no exception."""
    cloud_batch_engine.submit(request=make_request("spell-denied", image=FAKE_IMAGE_FAIL))
    wait_for(lambda: ended(cloud_batch_engine, "spell-denied"))
    fake_batch_service.logging.fail_next(grpc.StatusCode.PERMISSION_DENIED, "logging.viewer")
    with caplog.at_level(logging.WARNING):
        assert cloud_batch_engine.log_tail(job_id="spell-denied") is None
    assert "Cloud Logging unreadable for job spell-denied" in caplog.text
    assert cloud_batch_engine.log_tail(job_id="spell-denied", lines=1) == (
        "task 0: fatal: no GPU found"
    )
    assert cloud_batch_engine.log_tail(job_id="no-such-job") is None


def test_a_job_without_any_log_line_has_no_tail(
    cloud_batch_engine: CloudBatchEngine, fake_batch_service: FakeBatchService
) -> None:
    cloud_batch_engine.submit(request=make_request("spell-quiet", image=FAKE_IMAGE_OK))
    wait_for(lambda: ended(cloud_batch_engine, "spell-quiet"))
    # the job's only task printed one line; a job of no line at all is None
    assert cloud_batch_engine.log_tail(job_id="spell-quiet") == "task 0: ok starting"
    uid = cloud_batch_engine.get_job(job_id="spell-quiet").uid or ""
    for line in ("a", "b"):
        fake_batch_service.logging.add(TEST_PROJECT, line, labels={"job_uid": uid + "x"})
    assert fake_batch_service.logging.calls["ListLogEntries"] == 1


def test_the_fake_refuses_a_query_it_does_not_understand() -> None:
    """Not matching everything on a filter it cannot read: the client's query is checked."""
    assert [c.field for c in parse_filter(task_log_filter("p", "u", 3))] == [
        "logName",
        "labels.job_uid",
        "labels.task_id",
    ]
    for bad in ('labels.job_uid="u" OR labels.x="y"', "severity>=ERROR", 'jsonPayload.x="1"'):
        with pytest.raises(ValueError):
            parse_filter(bad)
