"""The engine over the REST transport: the real ``BatchServiceClient(transport="rest")``
against the REST front of the same fake, so both transports' error mapping is proven
(409 -> Conflict, 404 -> NotFound, 503 retried, 403 refused)."""

from __future__ import annotations

from collections.abc import Iterator

import grpc
import pytest
from google.api_core import exceptions as api_exceptions
from google.cloud import batch_v1

from robotoff_batch.batch.cloud_batch import CloudBatchEngine
from robotoff_batch.batch.engine import BatchEngineError, JobNotFoundError, JobState, JobStatus
from tests.fakes.fake_batch_rest import FakeBatchRest, running_fake_batch_rest
from tests.fakes.fake_batch_service import FakeBatchService, running_fake_batch_service
from tests.fakes.settings import FAKE_IMAGE_FAIL, TEST_LOCATION, TEST_PROJECT, fast_batch_retry
from tests.test_cloud_batch import LABELS, make_request, wait_for

pytest_plugins = ["tests.gcp_fixtures"]  # also registered by tests/conftest.py


@pytest.fixture
def rest(fake_batch_service: FakeBatchService) -> Iterator[FakeBatchRest]:
    with running_fake_batch_rest(fake_batch_service) as front:
        yield front


@pytest.fixture
def engine(rest: FakeBatchRest) -> CloudBatchEngine:
    return CloudBatchEngine(
        project=TEST_PROJECT,
        location=TEST_LOCATION,
        client=rest.client(),
        retry=fast_batch_retry(),
        timeout=10.0,
    )


def listed(engine: CloudBatchEngine, job_id: str) -> JobStatus | None:
    return next((s for s in engine.list_jobs(labels=LABELS) if s.job_id == job_id), None)


def test_a_job_runs_and_fails_with_its_exit_code_over_rest(
    engine: CloudBatchEngine, fake_batch_service: FakeBatchService
) -> None:
    assert engine.client.transport.kind == "rest"
    submitted = engine.submit(request=make_request("rest-fails", image=FAKE_IMAGE_FAIL))
    assert submitted.job_id == "rest-fails" and submitted.uid
    done = wait_for(lambda: (s := listed(engine, "rest-fails")) and s.state.is_terminal and s)
    assert isinstance(done, JobStatus) and done.state is JobState.FAILED
    detailed = engine.get_job(job_id="rest-fails")
    assert [t.exit_code for t in detailed.tasks] == [3]
    sent = fake_batch_service.requests["ListJobs"][-1]
    assert 'labels."job-type"="ingredients-spellcheck"' in sent.filter  # the query survived


def test_duplicate_create_is_409_conflict_and_reattaches(
    engine: CloudBatchEngine, rest: FakeBatchRest, fake_batch_service: FakeBatchService
) -> None:
    first = engine.submit(request=make_request("rest-twice"))
    # Over REST a duplicate is Conflict itself, not gRPC's AlreadyExists subclass: the engine
    # must catch Conflict.
    with pytest.raises(api_exceptions.Conflict) as raised:
        rest.client().create_job(request=make_request("rest-twice"))
    assert type(raised.value) is api_exceptions.Conflict
    again = engine.submit(request=make_request("rest-twice"))
    assert again.uid == first.uid
    assert fake_batch_service.calls["CreateJob"] == 3
    assert len(fake_batch_service.job_names()) == 1


def test_grpc_duplicate_is_already_exists_a_conflict(
    fake_batch_service: FakeBatchService,
) -> None:
    client = fake_batch_service.client()
    client.create_job(request=make_request("grpc-twice"))
    with pytest.raises(api_exceptions.AlreadyExists) as raised:
        client.create_job(request=make_request("grpc-twice"))
    assert isinstance(raised.value, api_exceptions.Conflict)


def test_missing_job_is_404_not_found(engine: CloudBatchEngine, rest: FakeBatchRest) -> None:
    with pytest.raises(api_exceptions.NotFound):
        rest.client().get_job(name=engine.job_name("rest-missing"))
    with pytest.raises(JobNotFoundError):
        engine.get_job(job_id="rest-missing")
    engine.cancel(job_id="rest-missing")  # not an error


def test_transient_503_is_retried_and_403_is_refused(
    engine: CloudBatchEngine, fake_batch_service: FakeBatchService
) -> None:
    fake_batch_service.fail_next("CreateJob", grpc.StatusCode.UNAVAILABLE, times=2)
    assert engine.submit(request=make_request("rest-retried")).job_id == "rest-retried"
    assert fake_batch_service.calls["CreateJob"] == 3
    fake_batch_service.fail_next("CreateJob", grpc.StatusCode.PERMISSION_DENIED)
    with pytest.raises(BatchEngineError, match="refused job rest-denied: 403"):
        engine.submit(request=make_request("rest-denied"))


def test_cancel_over_rest_keeps_the_job_and_is_sent_once() -> None:
    with (
        running_fake_batch_service(backend=None) as service,
        running_fake_batch_rest(service) as front,
    ):
        engine = CloudBatchEngine(
            project=TEST_PROJECT,
            location=TEST_LOCATION,
            client=front.client(),
            retry=fast_batch_retry(),
        )
        engine.submit(request=make_request("rest-cancel"))
        engine.cancel(job_id="rest-cancel")
        cancel = service.requests["CancelJob"][0]
        assert cancel.name.endswith("/jobs/rest-cancel") and cancel.request_id
        stopping = listed(engine, "rest-cancel")
        assert stopping is not None and stopping.state is JobState.CANCELLATION_IN_PROGRESS
        engine.cancel(job_id="rest-cancel")
        assert service.calls["CancelJob"] == 1
        cancelled = listed(engine, "rest-cancel")
        assert cancelled is not None and cancelled.state is JobState.CANCELLED


def test_page_tokens_over_rest() -> None:
    with (
        running_fake_batch_service(backend=None, max_page_size=2) as service,
        running_fake_batch_rest(service) as front,
    ):
        engine = CloudBatchEngine(
            project=TEST_PROJECT,
            location=TEST_LOCATION,
            client=front.client(),
            retry=fast_batch_retry(),
        )
        for index in range(5):
            engine.submit(request=make_request(f"rest-page-{index}"))
        service.calls.clear()
        assert len(engine.list_jobs(labels=LABELS)) == 5
        assert service.calls["ListJobs"] == 3
        client = front.client()
        page = next(
            iter(client.list_jobs(request=batch_v1.ListJobsRequest(parent=engine.parent)).pages)
        )
        with pytest.raises(api_exceptions.BadRequest, match="page size"):
            client.list_jobs(
                request=batch_v1.ListJobsRequest(
                    parent=engine.parent, page_size=1, page_token=page.next_page_token
                )
            )
