"""A fake Cloud Batch ``BatchService``: a real gRPC server the real ``BatchServiceClient`` talks to.

It is registered with ``grpc.method_handlers_generic_handler`` under the service's real name,
``google.cloud.batch.v1.BatchService``, and (de)serialises with ``google-cloud-batch``'s own
proto-plus message classes, so the client under test sends and receives exactly the bytes it
would with Google.

Jobs really run: each created job is handed to a backend engine (the project's
``LocalBatchEngine``, which runs the container's command as local processes), and every
``GetJob``/``ListJobs``/``ListTasks`` maps the backend's ``JobStatus`` back to ``batch_v1``
messages (state, status events, task groups, per-task exit codes).

Where it matters it behaves like the real service (the ``google-cloud-batch`` protos and
Google's documentation):

- ``CancelJob`` cancels the job on the backend: it stays listed and reports
  CANCELLATION_IN_PROGRESS then CANCELLED as the backend does (a job with no backend reports
  CANCELLATION_IN_PROGRESS for ``stopping_observations`` observations, then CANCELLED).
  Cancelling a job that is already stopping or finished is FAILED_PRECONDITION.
- ``DeleteJob`` stops it on the backend; the job reports DELETION_IN_PROGRESS for
  ``stopping_observations`` observations, then is gone (NOT_FOUND).
- Job-level status events never carry ``task_execution`` (only task events do): exit codes
  are only in ``ListTasks``.
- :meth:`FakeBatchService.hold_in_queue` keeps the next job QUEUED for ever with a quota event,
  as a real job waiting on GPU quota does; :meth:`FakeBatchService.age_job` moves a job's
  creation time back.
- ``ListJobs`` page tokens carry the page size and the filter: a next page asked with another
  page size or filter is INVALID_ARGUMENT, as on Batch.
- ``CreateJob`` refuses what the API documents as invalid: the job id, label keys and values
  (job and allocation policy), Google's reserved ``goog`` label keys, a runnable without an
  image or script, a task count below 1, parallelism above the task count. (Unlike Batch, a
  job with no task group at all is accepted: scripted tests create bare jobs.)

For tests it counts calls per method (:attr:`FakeBatchService.calls`) and injects faults:
``fail_next`` (N times a status code before handling), ``lose_next_response`` (the call is
handled, then the client gets ``DEADLINE_EXCEEDED``), ``delay_next`` (the call answers only
after a delay: a slow API), ``fail_next_job_allocation`` (the next job goes QUEUED -> FAILED
with no task and a status event saying why), and ``delete_behind_back``.
"""

from __future__ import annotations

import base64
import dataclasses
import hashlib
import json
import re
import threading
import time
import uuid
from collections import Counter, defaultdict, deque
from collections.abc import Callable, Iterator
from concurrent import futures
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

import grpc
from google.cloud import batch_v1
from google.cloud.batch_v1.services.batch_service.transports import BatchServiceGrpcTransport
from google.cloud.logging_v2.services.logging_service_v2 import LoggingServiceV2Client
from google.cloud.logging_v2.services.logging_service_v2.transports import (
    LoggingServiceV2GrpcTransport,
)
from google.longrunning import operations_pb2
from google.protobuf import any_pb2, empty_pb2
from pydantic import Field

from robotoff_batch.batch.cloud_batch import CloudBatchEngine
from robotoff_batch.batch.cloud_logging import TaskLogReader
from robotoff_batch.batch.engine import BatchEngine, JobNotFoundError, JobStatus
from robotoff_batch.resources import CloudBatchEngineResource
from tests.fakes.fake_logging_service import FakeLoggingService

SERVICE_NAME = "google.cloud.batch.v1.BatchService"
JOB_ID_PATTERN = re.compile(r"^[a-z]([a-z0-9-]{0,61}[a-z0-9])?$")
PARENT_PATTERN = re.compile(r"^projects/[^/]+/locations/[^/]+$")
LABEL_KEY_PATTERN = re.compile(r"^[a-z][a-z0-9_-]{0,62}$")
LABEL_VALUE_PATTERN = re.compile(r"^[a-z0-9_-]{0,63}$")
MAX_LABELS = 64
QUOTA_EVENT_TYPE = "QUOTA_CHECKING"
_CLAUSE = re.compile(
    r'^\s*labels\.(?:"(?P<qkey>(?:[^"\\]|\\.)*)"|(?P<key>[A-Za-z_][A-Za-z0-9_]*))'
    r'\s*=\s*(?:"(?P<qvalue>(?:[^"\\]|\\.)*)"|(?P<value>[A-Za-z0-9_-]+))\s*$'
)
_TASK_STATES = set(batch_v1.TaskStatus.State.__members__)
_STOPPING_OR_DONE = {
    "CANCELLATION_IN_PROGRESS",
    "DELETION_IN_PROGRESS",
    "CANCELLED",
    "SUCCEEDED",
    "FAILED",
}


def validate_job(job: batch_v1.Job) -> str | None:
    """What CreateJob refuses in a job (INVALID_ARGUMENT), or None."""
    for where, labels in (("job", job.labels), ("allocation policy", job.allocation_policy.labels)):
        if len(labels) > MAX_LABELS:
            return f"{where} has {len(labels)} labels, at most {MAX_LABELS}"
        for key, value in labels.items():
            if key.startswith("goog"):
                return f"{where} label key {key!r}: the 'goog' prefix is reserved"
            if not LABEL_KEY_PATTERN.match(key):
                return f"{where} label key {key!r} is invalid"
            if not LABEL_VALUE_PATTERN.match(value):
                return f"{where} label value {value!r} of {key!r} is invalid"
    # A job without a task group is accepted here (the real API refuses it): the follower's
    # scripted tests create bare jobs whose states a scripted backend plays.
    for group in job.task_groups:
        if group.task_count < 1 if "task_count" in group else False:
            return f"task_count {group.task_count} is below 1"
        if group.parallelism and group.parallelism > max(group.task_count, 1):
            return f"parallelism {group.parallelism} is above task_count {group.task_count}"
        if not group.task_spec.runnables:
            return "a task spec needs at least one runnable"
        for runnable in group.task_spec.runnables:
            if "container" in runnable and not runnable.container.image_uri:
                return "a container runnable needs an image_uri"
            if not any(kind in runnable for kind in ("container", "script", "barrier")):
                return "a runnable needs a container, a script or a barrier"
    return None


def _unescape(text: str) -> str:
    return re.sub(r"\\(.)", r"\1", text)


def parse_label_filter(text: str) -> dict[str, str]:
    """``labels.a="x" AND labels."b-c"="y"`` -> ``{"a": "x", "b-c": "y"}``; else ValueError."""
    if not text.strip():
        return {}
    wanted: dict[str, str] = {}
    for clause in re.split(r"\s+AND\s+", text.strip()):
        match = _CLAUSE.match(clause)
        if not match:
            raise ValueError(f"unsupported filter clause {clause!r}")
        key = _unescape(match["qkey"]) if match["qkey"] is not None else match["key"]
        value = _unescape(match["qvalue"]) if match["qvalue"] is not None else match["value"]
        wanted[key] = value
    return wanted


@dataclass
class Fault:
    code: grpc.StatusCode | None
    after: bool = False  # True: handle the call, then fail (a lost response)
    details: str = "injected fault"
    delay_s: float = 0.0  # sleep before answering (a slow API); code None: then answer


class _Abort(Exception):
    def __init__(self, code: grpc.StatusCode, details: str) -> None:
        super().__init__(details)
        self.code = code
        self.details = details


@dataclass
class _Record:
    job: batch_v1.Job
    request: batch_v1.CreateJobRequest
    on_backend: bool = True
    allocation_failure: str | None = None
    observations: int = 0
    # Jobs without a backend: the observation count when CancelJob was received.
    cancelled_at: int | None = None
    # The observation count when DeleteJob was received (it disappears a few later).
    deleted_at: int | None = None
    # Set by hold_in_queue: the job stays QUEUED with this quota event.
    held_by_quota: str | None = None
    events: list[batch_v1.StatusEvent] = field(default_factory=list)
    # The status events of the last observation before a deletion started.
    last_events: list[batch_v1.StatusEvent] = field(default_factory=list)


def _now() -> datetime:
    return datetime.now(UTC)


def _event(
    description: str, *, when: datetime | None = None, **kwargs: Any
) -> batch_v1.StatusEvent:
    return batch_v1.StatusEvent(
        type_="STATUS_CHANGED", description=description, event_time=when or _now(), **kwargs
    )


class FakeBatchService:
    """In-process BatchService over gRPC, running the jobs through a backend engine."""

    def __init__(
        self,
        *,
        backend: BatchEngine | None = None,
        max_page_size: int = 1000,
        default_page_size: int = 100,
        stopping_observations: int = 2,
    ) -> None:
        self.backend = backend
        self.max_page_size = max_page_size
        self.default_page_size = default_page_size
        self.stopping_observations = stopping_observations
        self.calls: Counter[str] = Counter()
        self.requests: defaultdict[str, list[Any]] = defaultdict(list)
        self._faults: defaultdict[str, deque[Fault]] = defaultdict(deque)
        # (method, job id) -> status code: every such call fails (a job whose calls break).
        self._job_faults: dict[tuple[str, str], grpc.StatusCode] = {}
        self._next_allocation_failure: deque[str] = deque()
        self._next_quota_hold: deque[str] = deque()
        self._held_locations: dict[str, str] = {}  # location -> quota event of its jobs
        self._capacity_on_cancel: set[str] = set()
        self._records: dict[str, _Record] = {}
        self._lock = threading.RLock()
        self._server: grpc.Server | None = None
        self.address: str | None = None
        # Cloud Logging on the same server: the task log lines of this service's jobs.
        self.logging = FakeLoggingService(batch=self)

    # -- lifecycle --------------------------------------------------------------------------

    def start(self) -> str:
        server = grpc.server(futures.ThreadPoolExecutor(max_workers=8))
        server.add_generic_rpc_handlers((self._handler(), self.logging.handler()))
        port = server.add_insecure_port("127.0.0.1:0")
        server.start()
        self._server = server
        self.address = f"127.0.0.1:{port}"
        return self.address

    def stop(self) -> None:
        if self._server is not None:
            self._server.stop(grace=None)
            self._server = None

    def logging_client(self) -> Any:
        """A real ``LoggingServiceV2Client`` on this server (the hosted Logging fake)."""
        return self.logging.client(self.address)

    def client(self) -> batch_v1.BatchServiceClient:
        """A real ``BatchServiceClient`` on an insecure channel to this server."""
        assert self.address, "start() the service first"
        channel = grpc.insecure_channel(self.address)
        return batch_v1.BatchServiceClient(transport=BatchServiceGrpcTransport(channel=channel))

    # -- test controls ----------------------------------------------------------------------

    def fail_next(
        self, method: str, code: grpc.StatusCode, *, times: int = 1, details: str = ""
    ) -> None:
        """The next ``times`` calls of ``method`` fail with ``code`` before being handled."""
        for _ in range(times):
            self._faults[method].append(Fault(code, details=details or f"injected {code.name}"))

    def fail_calls_for_job(self, method: str, job_id: str, code: grpc.StatusCode) -> None:
        """Every call of ``method`` about this job fails with ``code`` (until the fake stops)."""
        self._job_faults[(method, job_id)] = code

    def clear_job_faults(self) -> None:
        """Calls about every job are answered again."""
        self._job_faults.clear()

    def lose_next_response(
        self, method: str = "CreateJob", code: grpc.StatusCode = grpc.StatusCode.DEADLINE_EXCEEDED
    ) -> None:
        """The next call of ``method`` is handled, then the client sees ``code``."""
        self._faults[method].append(Fault(code, after=True, details="response lost"))

    def delay_next(self, method: str, seconds: float, *, times: int = 1) -> None:
        """The next ``times`` calls of ``method`` answer only after ``seconds`` (slow API)."""
        for _ in range(times):
            self._faults[method].append(Fault(None, delay_s=seconds, details="slow"))

    def hold_in_queue(self, description: str) -> None:
        """The next created job stays QUEUED, never scheduled, with a quota event saying why
        (as a job waiting for GPU quota does on Batch, for hours)."""
        self._next_quota_hold.append(description)

    def hold_location(self, location: str, description: str) -> None:
        """Every job created in ``location`` stays QUEUED with this quota event (a region that
        never allocates)."""
        self._held_locations[location] = description

    def release_hold(self, job_id: str) -> None:
        """The held job gets capacity now: its tasks go to the backend and run."""
        with self._lock:
            record = self._records[self._find(job_id)]
            record.held_by_quota = None
            record.on_backend = self.backend is not None
        if record.on_backend and self.backend is not None:
            self.backend.submit(request=record.request)

    def capacity_on_cancel(self, job_id: str) -> None:
        """The held job gets capacity just as its CancelJob arrives: it is released and has
        started (RUNNING on the backend) when the cancel is handled."""
        self._capacity_on_cancel.add(job_id)

    def age_job(self, job_id: str, seconds: float) -> None:
        """Move a job's creation time ``seconds`` back (it has waited that much longer)."""
        with self._lock:
            record = self._records[self._find(job_id)]
            record.job.create_time = record.job.create_time - timedelta(seconds=seconds)
            for event in record.events:
                event.event_time = event.event_time - timedelta(seconds=seconds)

    def fail_next_job_allocation(self, description: str) -> None:
        """The next created job never gets a task: QUEUED, then FAILED with ``description``."""
        self._next_allocation_failure.append(description)

    def delete_behind_back(self, job_id: str) -> None:
        """Delete a job without any client call (someone used the console)."""
        with self._lock:
            name = self._find(job_id)
            record = self._records.pop(name)
        if record.on_backend and self.backend is not None:
            self.backend.cancel(job_id=job_id)

    def job_names(self) -> list[str]:
        with self._lock:
            return list(self._records)

    def records(self) -> list[_Record]:
        """The jobs created, as the hosted Logging fake reads them."""
        with self._lock:
            return list(self._records.values())

    def backend_status(self, record: _Record) -> JobStatus | None:
        return self._backend_status(record)

    # -- gRPC plumbing ----------------------------------------------------------------------

    def _handler(self) -> grpc.GenericRpcHandler:
        def unary(
            method: str,
            fn: Callable[[Any], Any],
            request_type: Any,
            serializer: Callable[[Any], bytes],
        ) -> grpc.RpcMethodHandler:
            def behaviour(request: Any, context: grpc.ServicerContext) -> Any:
                return self._dispatch(method, fn, request, context)

            return grpc.unary_unary_rpc_method_handler(
                behaviour,
                request_deserializer=request_type.deserialize,
                response_serializer=serializer,
            )

        return grpc.method_handlers_generic_handler(
            SERVICE_NAME,
            {
                "CreateJob": unary(
                    "CreateJob", self._create_job, batch_v1.CreateJobRequest, batch_v1.Job.serialize
                ),
                "GetJob": unary(
                    "GetJob", self._get_job, batch_v1.GetJobRequest, batch_v1.Job.serialize
                ),
                "ListJobs": unary(
                    "ListJobs",
                    self._list_jobs,
                    batch_v1.ListJobsRequest,
                    batch_v1.ListJobsResponse.serialize,
                ),
                "CancelJob": unary(
                    "CancelJob",
                    self._cancel_job,
                    batch_v1.CancelJobRequest,
                    operations_pb2.Operation.SerializeToString,
                ),
                "DeleteJob": unary(
                    "DeleteJob",
                    self._delete_job,
                    batch_v1.DeleteJobRequest,
                    operations_pb2.Operation.SerializeToString,
                ),
                "ListTasks": unary(
                    "ListTasks",
                    self._list_tasks,
                    batch_v1.ListTasksRequest,
                    batch_v1.ListTasksResponse.serialize,
                ),
            },
        )

    def _dispatch(
        self, method: str, fn: Callable[[Any], Any], request: Any, context: grpc.ServicerContext
    ) -> Any:
        with self._lock:
            self.calls[method] += 1
            self.requests[method].append(request)
            fault = self._faults[method].popleft() if self._faults[method] else None
            name = str(getattr(request, "name", ""))
            job_code = self._job_faults.get((method, name.rsplit("/", 1)[-1]))
        if job_code is not None:
            context.abort(job_code, f"injected {job_code.name} for this job")
        if fault is not None and fault.delay_s:
            time.sleep(fault.delay_s)
        if fault is not None and fault.code is not None and not fault.after:
            context.abort(fault.code, fault.details)
        try:
            response = fn(request)
        except _Abort as abort:
            context.abort(abort.code, abort.details)
        if fault is not None and fault.code is not None:
            context.abort(fault.code, fault.details)
        return response

    # -- methods ----------------------------------------------------------------------------

    def _find(self, job_id_or_name: str) -> str:
        if job_id_or_name in self._records:
            return job_id_or_name
        for name in self._records:
            if name.rsplit("/", 1)[-1] == job_id_or_name:
                return name
        raise _Abort(grpc.StatusCode.NOT_FOUND, f"Job {job_id_or_name} not found")

    def _create_job(self, request: batch_v1.CreateJobRequest) -> batch_v1.Job:
        if not PARENT_PATTERN.match(request.parent):
            raise _Abort(grpc.StatusCode.INVALID_ARGUMENT, f"bad parent {request.parent!r}")
        if not JOB_ID_PATTERN.match(request.job_id):
            raise _Abort(grpc.StatusCode.INVALID_ARGUMENT, f"bad job id {request.job_id!r}")
        problem = validate_job(request.job)
        if problem:
            raise _Abort(grpc.StatusCode.INVALID_ARGUMENT, problem)
        name = f"{request.parent}/jobs/{request.job_id}"
        with self._lock:
            if name in self._records:
                raise _Abort(grpc.StatusCode.ALREADY_EXISTS, f"Job {name} already exists")
            job = batch_v1.Job(request.job)
            job.name = name
            job.uid = f"{request.job_id[:40]}-{uuid.uuid4().hex[:12]}"
            job.create_time = job.update_time = _now()
            for index, group in enumerate(job.task_groups):
                group.name = f"{name}/taskGroups/group{index}"
            job.status = batch_v1.JobStatus(state=batch_v1.JobStatus.State.QUEUED)
            failure = (
                self._next_allocation_failure.popleft() if self._next_allocation_failure else None
            )
            held = self._next_quota_hold.popleft() if self._next_quota_hold else None
            held = held or self._held_locations.get(request.parent.split("/")[3])
            record = _Record(
                job=job,
                request=request,
                on_backend=failure is None and held is None and self.backend is not None,
                allocation_failure=failure,
                held_by_quota=held,
            )
            if held is not None:
                record.events.append(
                    batch_v1.StatusEvent(
                        type_=QUOTA_EVENT_TYPE, description=held, event_time=_now()
                    )
                )
            self._records[name] = record
        if record.on_backend:
            assert self.backend is not None
            self.backend.submit(request=request)
        return batch_v1.Job(job)

    def _get_job(self, request: batch_v1.GetJobRequest) -> batch_v1.Job:
        with self._lock:
            record = self._records[self._find(request.name)]
        return self._observe(record)

    def _list_jobs(self, request: batch_v1.ListJobsRequest) -> batch_v1.ListJobsResponse:
        try:
            wanted = parse_label_filter(request.filter)
        except ValueError as exc:
            raise _Abort(grpc.StatusCode.INVALID_ARGUMENT, str(exc)) from None
        with self._lock:
            records = [
                r
                for name, r in self._records.items()
                if name.startswith(request.parent + "/jobs/")
                and all(r.job.labels.get(k) == v for k, v in wanted.items())
            ]
        size = min(request.page_size or self.default_page_size, self.max_page_size)
        offset = 0
        if request.page_token:
            offset = self._read_page_token(request, size)
        page = records[offset : offset + size]
        next_token = (
            self._page_token(offset + size, size, request.filter)
            if offset + size < len(records)
            else ""
        )
        jobs = []
        for record in page:
            try:
                jobs.append(self._observe(record))
            except _Abort:  # its deletion just ended
                continue
        return batch_v1.ListJobsResponse(jobs=jobs, next_page_token=next_token)

    @staticmethod
    def _page_token(offset: int, size: int, text: str) -> str:
        digest = hashlib.sha256(text.encode()).hexdigest()[:16]
        raw = json.dumps({"offset": offset, "size": size, "filter": digest})
        return base64.urlsafe_b64encode(raw.encode()).decode()

    def _read_page_token(self, request: batch_v1.ListJobsRequest, size: int) -> int:
        try:
            token = json.loads(base64.urlsafe_b64decode(request.page_token.encode()))
            offset, token_size, digest = token["offset"], token["size"], token["filter"]
        except (ValueError, KeyError, TypeError):
            raise _Abort(grpc.StatusCode.INVALID_ARGUMENT, "invalid page token") from None
        if token_size != size:
            raise _Abort(
                grpc.StatusCode.INVALID_ARGUMENT,
                f"page size {size} does not match the page token's ({token_size})",
            )
        if digest != hashlib.sha256(request.filter.encode()).hexdigest()[:16]:
            raise _Abort(grpc.StatusCode.INVALID_ARGUMENT, "filter changed between pages")
        return int(offset)

    def _delete_job(self, request: batch_v1.DeleteJobRequest) -> operations_pb2.Operation:
        with self._lock:
            name = self._find(request.name)
            record = self._records[name]
            first = record.deleted_at is None
            if first:
                record.last_events = list(self._observe(record).status.status_events)
                record.deleted_at = record.observations
        if first and record.on_backend and self.backend is not None:
            self.backend.cancel(job_id=request.name.rsplit("/", 1)[-1])
        response = any_pb2.Any()
        response.Pack(empty_pb2.Empty())
        parent = name.split("/jobs/")[0]
        return operations_pb2.Operation(
            name=f"{parent}/operations/{uuid.uuid4().hex}", done=True, response=response
        )

    def _cancel_job(self, request: batch_v1.CancelJobRequest) -> operations_pb2.Operation:
        job_id = request.name.rsplit("/", 1)[-1]
        if job_id in self._capacity_on_cancel and self.backend is not None:
            self._capacity_on_cancel.discard(job_id)
            self.release_hold(job_id)
            deadline = time.monotonic() + 30
            while self.backend.get_job(job_id=job_id).state.value != "RUNNING":
                assert time.monotonic() < deadline, f"{job_id} did not start"
                time.sleep(0.05)
        with self._lock:
            name = self._find(request.name)
            record = self._records[name]
            state = self._state_now(record)
            if state in _STOPPING_OR_DONE:
                raise _Abort(
                    grpc.StatusCode.FAILED_PRECONDITION,
                    f"Job {name} is {state}: it cannot be cancelled",
                )
            if not record.on_backend and record.cancelled_at is None:
                record.allocation_failure = None
                record.held_by_quota = None
                record.cancelled_at = record.observations
        if record.on_backend and self.backend is not None:
            self.backend.cancel(job_id=record.request.job_id)
        response = any_pb2.Any()
        response.Pack(batch_v1.CancelJobResponse.pb(batch_v1.CancelJobResponse()))
        parent = name.split("/jobs/")[0]
        return operations_pb2.Operation(
            name=f"{parent}/operations/{uuid.uuid4().hex}", done=True, response=response
        )

    def _list_tasks(self, request: batch_v1.ListTasksRequest) -> batch_v1.ListTasksResponse:
        job_name = request.parent.split("/taskGroups/")[0]
        with self._lock:
            record = self._records[self._find(job_name)]
        status = self._backend_status(record)
        tasks = []
        spot = _is_spot(record.job)
        for task in status.tasks if status else ():
            state = task.state if task.state in _TASK_STATES else "STATE_UNSPECIFIED"
            events = self._task_events(task, spot=spot) if task.runs else []
            if not task.runs and task.exit_code is not None:
                events.append(
                    _event(
                        f"Task state is updated from RUNNING to {state} with exit code "
                        f"{task.exit_code}.",
                        task_execution=batch_v1.TaskExecution(exit_code=task.exit_code),
                        task_state=batch_v1.TaskStatus.State.__members__[state],
                    )
                )
            tasks.append(
                batch_v1.Task(
                    name=f"{request.parent}/tasks/{task.index}",
                    status=batch_v1.TaskStatus(
                        state=batch_v1.TaskStatus.State.__members__[state], status_events=events
                    ),
                )
            )
        return batch_v1.ListTasksResponse(tasks=tasks)

    @staticmethod
    def _task_events(task: Any, *, spot: bool = False) -> list[batch_v1.StatusEvent]:
        """A task's events as Batch reports them: per attempt, ASSIGNED -> RUNNING at its
        start, then RUNNING -> SUCCEEDED/FAILED with its exit code at its end. On a Spot job,
        an attempt whose container was killed from outside (a signal: the local runner's VM
        lost) is reported as Batch reports a reclaimed Spot VM: exit code 50001."""
        states = batch_v1.TaskStatus.State
        events = []
        vm = "zones/europe-west4-a/instances/fake-vm"
        for run in task.runs:
            if run.start is not None:
                events.append(
                    _event(
                        f"Task state is updated from ASSIGNED to RUNNING on {vm}.",
                        when=run.start,
                        task_state=states.RUNNING,
                    )
                )
            if run.end is not None:
                code = run.exit_code
                if spot and code is not None and (code < 0 or code == 128 + 9):
                    code = PREEMPTED_EXIT_CODE
                run = dataclasses.replace(run, exit_code=code)
                end = "SUCCEEDED" if run.exit_code == 0 else "FAILED"
                events.append(
                    _event(
                        f"Task state is updated from RUNNING to {end} on {vm} with exit code "
                        f"{run.exit_code}.",
                        when=run.end,
                        task_execution=batch_v1.TaskExecution(exit_code=run.exit_code or 0),
                        task_state=states.__members__[end],
                    )
                )
        return events

    # -- state ------------------------------------------------------------------------------

    def _backend_status(self, record: _Record) -> JobStatus | None:
        if not record.on_backend or self.backend is None:
            return None
        try:
            return self.backend.get_job(job_id=record.request.job_id)
        except JobNotFoundError:
            return None

    def _state_now(self, record: _Record) -> str:
        """The job's state as the last observation saw it (without observing it again)."""
        if record.deleted_at is not None:
            return "DELETION_IN_PROGRESS"
        if record.cancelled_at is not None:
            done = record.observations - record.cancelled_at > self.stopping_observations
            return "CANCELLED" if done else "CANCELLATION_IN_PROGRESS"
        if record.allocation_failure is not None:
            return "FAILED" if record.observations > 1 else "QUEUED"
        status = self._backend_status(record)
        return status.state.value if status is not None else "QUEUED"

    def _observe(self, record: _Record) -> batch_v1.Job:
        """The job as Batch would report it now (NOT_FOUND once a deletion is over)."""
        job = batch_v1.Job(record.job)
        with self._lock:
            record.observations += 1
            observations = record.observations
            if (
                record.deleted_at is not None
                and observations - record.deleted_at > self.stopping_observations
            ):
                self._records.pop(job.name, None)
                raise _Abort(grpc.StatusCode.NOT_FOUND, f"Job {job.name} not found")
        if record.deleted_at is not None:
            job.status = batch_v1.JobStatus(
                state=batch_v1.JobStatus.State.DELETION_IN_PROGRESS,
                status_events=[
                    *record.last_events,
                    _event(f"Job state is set to DELETION_IN_PROGRESS for job {job.name}."),
                ],
            )
            return job
        if record.held_by_quota is not None:
            job.status = batch_v1.JobStatus(
                state=batch_v1.JobStatus.State.QUEUED, status_events=list(record.events)
            )
            return job
        if record.cancelled_at is not None:
            cancelling = observations - record.cancelled_at <= self.stopping_observations
            events = [
                *record.events,  # Batch keeps the history (a held job's quota event)
                _event(
                    f"Job state is set from QUEUED to CANCELLATION_IN_PROGRESS for job {job.name}."
                ),
            ]
            if not cancelling:
                events.append(
                    _event(
                        f"Job state is set from CANCELLATION_IN_PROGRESS to CANCELLED for job "
                        f"{job.name}."
                    )
                )
            state = "CANCELLATION_IN_PROGRESS" if cancelling else "CANCELLED"
            job.status = batch_v1.JobStatus(
                state=batch_v1.JobStatus.State.__members__[state], status_events=events
            )
            return job
        if record.allocation_failure is not None:
            if observations > 1:
                job.status = batch_v1.JobStatus(
                    state=batch_v1.JobStatus.State.FAILED,
                    status_events=[
                        _event(
                            f"Job state is set from QUEUED to FAILED for job {job.name}. "
                            f"{record.allocation_failure}"
                        )
                    ],
                )
            return job
        status = self._backend_status(record)
        if status is not None:
            job.status = self._to_batch_status(job.name, status, len(status.tasks))
            job.update_time = status.update_time or _now()
        return job

    @staticmethod
    def _to_batch_status(name: str, status: JobStatus, task_count: int) -> batch_v1.JobStatus:
        # The backend's states are Cloud Batch's (CANCELLATION_IN_PROGRESS, CANCELLED, ...).
        state = batch_v1.JobStatus.State.__members__.get(
            status.state.value, batch_v1.JobStatus.State.STATE_UNSPECIFIED
        )
        events = []
        previous = "QUEUED"
        for event in status.status_events:
            description = event.description
            if event.new_state is not None:
                new = event.new_state.value
                prefix = f"Job state is set from {previous} to {new} for job {name}."
                description = f"{prefix} {description}".strip() if description else prefix
                previous = new
            # Job-level events never carry task_execution on Batch (only task events do).
            events.append(
                batch_v1.StatusEvent(
                    type_="STATUS_CHANGED" if event.new_state is not None else event.type,
                    description=description,
                    event_time=event.time,
                )
            )
        counts: Counter[str] = Counter(
            t.state if t.state in _TASK_STATES else "STATE_UNSPECIFIED" for t in status.tasks
        )
        return batch_v1.JobStatus(
            state=state,
            status_events=events,
            task_groups={"group0": batch_v1.JobStatus.TaskGroupStatus(counts=dict(counts))}
            if task_count
            else {},
        )


#: Batch's exit code of a task whose Spot VM was preempted (reserved exit codes).
PREEMPTED_EXIT_CODE = 50001


def _is_spot(job: batch_v1.Job) -> bool:
    """Whether the job's VMs are Spot VMs (its first instance policy's provisioning model)."""
    instances = job.allocation_policy.instances
    spot = batch_v1.AllocationPolicy.ProvisioningModel.SPOT
    return bool(instances) and instances[0].policy.provisioning_model == spot


@contextmanager
def running_fake_batch_service(
    *, backend: BatchEngine | None = None, **kwargs: Any
) -> Iterator[FakeBatchService]:
    """Start the fake on a free local port; stop it on exit."""
    service = FakeBatchService(backend=backend, **kwargs)
    service.start()
    try:
        yield service
    finally:
        service.stop()


class EmulatedCloudBatchEngineResource(CloudBatchEngineResource):
    """The Cloud Batch resource talking to a Batch API emulator (this fake) over gRPC without
    TLS and without credentials: the test's subclass, so the production class has no hook."""

    emulator_host: str = Field(description="host:port of the emulator.")

    def build_engine(self) -> BatchEngine:
        channel = grpc.insecure_channel(self.emulator_host)
        client = batch_v1.BatchServiceClient(transport=BatchServiceGrpcTransport(channel=channel))
        project = self.gcp_project or "emulator"
        logging_client = LoggingServiceV2Client(
            transport=LoggingServiceV2GrpcTransport(channel=channel)
        )
        return CloudBatchEngine(
            project=project,
            location=self.gcp_location,
            client=client,
            locations=self.followed_locations(),
            logs=TaskLogReader(project=project, client=logging_client),
        )


def emulated_cloud_resources(address: str, database_url: str) -> dict[str, Any]:
    """The code location's resources on the embedded defaults, but with Cloud Batch played by
    the fake at ``address`` (its jobs are followed like real ones)."""
    from robotoff_batch.resources import (
        LocalStagingResource,
        PostgresPredictionStoreResource,
        ProductDumpResource,
    )
    from tests.fakes.settings import TEST_LOCATION, TEST_PROJECT

    return {
        "product_dump": ProductDumpResource(),
        "staging": LocalStagingResource(),
        "batch_engine": EmulatedCloudBatchEngineResource(
            gcp_project=TEST_PROJECT, gcp_location=TEST_LOCATION, emulator_host=address
        ),
        "prediction_store": PostgresPredictionStoreResource(database_url=database_url),
    }
