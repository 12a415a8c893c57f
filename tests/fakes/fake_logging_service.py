"""A fake Cloud Logging ``LoggingServiceV2``: ``ListLogEntries`` over real gRPC, for the real
``LoggingServiceV2Client`` of ``google-cloud-logging``.

It is registered under the service's real name, ``google.logging.v2.LoggingServiceV2``, and
(de)serialises with the client library's own proto-plus messages, so the client under test
sends and receives the bytes it would with Google. It can share a gRPC server with the fake
Batch service (:class:`tests.fakes.fake_batch_service.FakeBatchService` hosts one), as both
APIs would be reached through one emulator address.

Where its entries come from, as on Google:

- the jobs of the fake Batch service (``batch``): every line a task attempt printed (the local
  runner's ``logs/task-<i>-attempt-<n>.log``) is an entry of ``projects/<P>/logs/batch_task_logs``
  labelled ``job_uid`` (the Batch job's uid), ``task_id`` (``task/<uid>-group0-<i>/<n-1>/0``),
  ``task_group_name`` and ``hostname``, stamped in the order they were printed;
- :meth:`FakeLoggingService.add`: entries a test writes itself.

What it checks (Google's documented behaviour, ``ListLogEntriesRequest``): ``resource_names``
must be given and be ``projects/<P>``; the filter is the subset of the Logging query language
this project sends (``logName="…"``, ``labels.<key>="…"`` equality, ``labels.<key>:"…"``
substring, joined by ``AND``), anything else is INVALID_ARGUMENT, as an unparsable query is;
``order_by`` is ``timestamp asc`` (default) or ``timestamp desc``; ``page_size`` defaults to
50 and at most 1000; page tokens are opaque offsets bound to the filter.

For tests: :attr:`calls`, :attr:`requests`, and ``fail_next(code)`` (e.g. PERMISSION_DENIED:
the caller lacks ``roles/logging.viewer``).
"""

from __future__ import annotations

import base64
import json
import re
import threading
from collections import Counter, deque
from collections.abc import Callable, Iterator
from concurrent import futures
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import grpc
from google.cloud.logging_v2.services.logging_service_v2 import LoggingServiceV2Client
from google.cloud.logging_v2.services.logging_service_v2.transports import (
    LoggingServiceV2GrpcTransport,
)
from google.cloud.logging_v2.types import ListLogEntriesRequest, ListLogEntriesResponse, LogEntry

SERVICE_NAME = "google.logging.v2.LoggingServiceV2"
DEFAULT_PAGE_SIZE = 50
MAX_PAGE_SIZE = 1000
_CLAUSE = re.compile(
    r"^\s*(?P<field>logName|labels\.[A-Za-z_][A-Za-z0-9_]*)\s*(?P<op>=|:)\s*"
    r'"(?P<value>(?:[^"\\]|\\.)*)"\s*$'
)


def _unescape(text: str) -> str:
    return re.sub(r"\\(.)", r"\1", text)


@dataclass(frozen=True)
class Clause:
    field: str
    op: str
    value: str

    def matches(self, entry: LogEntry) -> bool:
        if self.field == "logName":
            actual: str | None = entry.log_name
        else:
            actual = entry.labels.get(self.field.split(".", 1)[1])
        if actual is None:
            return False
        return actual == self.value if self.op == "=" else self.value in actual


def parse_filter(text: str) -> list[Clause]:
    """The clauses of ``text``; ValueError for anything outside the subset (see module doc)."""
    if not text.strip():
        return []
    clauses = []
    for part in re.split(r"\s+AND\s+", text.strip()):
        match = _CLAUSE.match(part)
        if match is None:
            raise ValueError(f"unsupported filter clause {part!r}")
        clauses.append(Clause(match["field"], match["op"], _unescape(match["value"])))
    return clauses


class _Abort(Exception):
    def __init__(self, code: grpc.StatusCode, details: str) -> None:
        super().__init__(details)
        self.code = code
        self.details = details


class FakeLoggingService:
    """``ListLogEntries`` over the entries of the fake Batch's jobs and those added."""

    def __init__(self, *, batch: Any = None, project: str | None = None) -> None:
        self.batch = batch  # a FakeBatchService (its records and backend), or None
        self.project = project  # the only project it answers for (None: any)
        # False: the tasks' lines never arrive, as when the jobs' account lacks
        # roles/logging.logWriter (Batch drops them; the job itself runs as usual)
        self.ingest_task_logs = True
        self.calls: Counter[str] = Counter()
        self.requests: list[ListLogEntriesRequest] = []
        self._added: list[LogEntry] = []
        self._faults: deque[tuple[grpc.StatusCode, str]] = deque()
        self._lock = threading.Lock()
        self._server: grpc.Server | None = None
        self.address: str | None = None

    # -- lifecycle (when not hosted by the fake Batch service) -------------------------------

    def start(self) -> str:
        server = grpc.server(futures.ThreadPoolExecutor(max_workers=4))
        server.add_generic_rpc_handlers((self.handler(),))
        port = server.add_insecure_port("127.0.0.1:0")
        server.start()
        self._server = server
        self.address = f"127.0.0.1:{port}"
        return self.address

    def stop(self) -> None:
        if self._server is not None:
            self._server.stop(grace=None)
            self._server = None

    def client(self, address: str | None = None) -> LoggingServiceV2Client:
        """A real ``LoggingServiceV2Client`` on an insecure channel to this server (or to
        ``address``, the server hosting it)."""
        target = address or self.address
        assert target, "start() the service first"
        channel = grpc.insecure_channel(target)
        return LoggingServiceV2Client(transport=LoggingServiceV2GrpcTransport(channel=channel))

    # -- test controls ----------------------------------------------------------------------

    def add(
        self,
        project: str,
        text: str,
        *,
        log: str = "batch_task_logs",
        labels: dict[str, str] | None = None,
        when: datetime | None = None,
    ) -> None:
        """An entry written by something else than a task (a test, a smoke check)."""
        entry = LogEntry(
            log_name=f"projects/{project}/logs/{log}",
            text_payload=text,
            labels=labels or {},
            timestamp=when or datetime.now(UTC),
        )
        with self._lock:
            self._added.append(entry)

    def fail_next(self, code: grpc.StatusCode, details: str = "injected fault", times: int = 1):  # type: ignore[no-untyped-def]
        with self._lock:
            self._faults.extend([(code, details)] * times)

    # -- gRPC -------------------------------------------------------------------------------

    def handler(self) -> grpc.GenericRpcHandler:
        def behaviour(request: ListLogEntriesRequest, context: grpc.ServicerContext) -> Any:
            with self._lock:
                self.calls["ListLogEntries"] += 1
                self.requests.append(request)
                fault = self._faults.popleft() if self._faults else None
            if fault is not None:
                context.abort(*fault)
            try:
                return self._list(request)
            except _Abort as abort:
                context.abort(abort.code, abort.details)

        method: Callable[..., Any] = behaviour
        return grpc.method_handlers_generic_handler(
            SERVICE_NAME,
            {
                "ListLogEntries": grpc.unary_unary_rpc_method_handler(
                    method,
                    request_deserializer=ListLogEntriesRequest.deserialize,
                    response_serializer=ListLogEntriesResponse.serialize,
                )
            },
        )

    def _list(self, request: ListLogEntriesRequest) -> ListLogEntriesResponse:
        names = list(request.resource_names)
        if not names:
            raise _Abort(grpc.StatusCode.INVALID_ARGUMENT, "resource_names is required")
        projects = set()
        for name in names:
            match = re.fullmatch(r"projects/([^/]+)", name)
            if match is None:
                raise _Abort(grpc.StatusCode.INVALID_ARGUMENT, f"bad resource name {name!r}")
            if self.project is not None and match[1] != self.project:
                raise _Abort(grpc.StatusCode.PERMISSION_DENIED, f"no access to {name}")
            projects.add(match[1])
        try:
            clauses = parse_filter(request.filter)
        except ValueError as exc:
            raise _Abort(grpc.StatusCode.INVALID_ARGUMENT, str(exc)) from None
        order = (request.order_by or "timestamp asc").strip()
        if order not in ("timestamp asc", "timestamp desc"):
            raise _Abort(grpc.StatusCode.INVALID_ARGUMENT, f"bad order_by {order!r}")
        size = request.page_size or DEFAULT_PAGE_SIZE
        if size < 0:
            raise _Abort(grpc.StatusCode.INVALID_ARGUMENT, "page_size must be positive")
        size = min(size, MAX_PAGE_SIZE)
        entries = [
            e
            for e in self._entries()
            if e.log_name.split("/")[1] in projects and all(c.matches(e) for c in clauses)
        ]
        entries.sort(key=lambda e: e.timestamp, reverse=order.endswith("desc"))
        offset = self._offset(request.page_token, request.filter, order)
        page = entries[offset : offset + size]
        token = ""
        if offset + size < len(entries):
            token = base64.urlsafe_b64encode(
                json.dumps([offset + size, request.filter, order]).encode()
            ).decode()
        return ListLogEntriesResponse(entries=page, next_page_token=token)

    @staticmethod
    def _offset(token: str, text: str, order: str) -> int:
        if not token:
            return 0
        try:
            offset, was_filter, was_order = json.loads(base64.urlsafe_b64decode(token))
        except ValueError:
            raise _Abort(grpc.StatusCode.INVALID_ARGUMENT, "bad page token") from None
        if (was_filter, was_order) != (text, order):
            raise _Abort(grpc.StatusCode.INVALID_ARGUMENT, "page token of another query")
        return int(offset)

    # -- where the entries come from --------------------------------------------------------

    def _entries(self) -> list[LogEntry]:
        with self._lock:
            entries = list(self._added)
        return entries + list(self._task_entries())

    def _task_entries(self) -> Iterator[LogEntry]:
        """Each line each task attempt of the fake Batch's jobs printed."""
        batch = self.batch
        backend = getattr(batch, "backend", None)
        if not self.ingest_task_logs or batch is None or not hasattr(backend, "job_dir"):
            return
        for record in batch.records():
            job = record.job
            project = job.name.split("/")[1]
            status = batch.backend_status(record)
            if status is None:
                continue
            job_dir = Path(backend.job_dir(record.request.job_id))
            for task in status.tasks:
                for run in task.runs:
                    path = job_dir / "logs" / f"task-{task.index}-attempt-{run.attempt}.log"
                    yield from _file_entries(path, project, job, task.index, run)


def _file_entries(path: Path, project: str, job: Any, index: int, run: Any) -> Iterator[LogEntry]:
    try:
        text = path.read_text(encoding="utf-8", errors="replace")
    except FileNotFoundError:
        return
    start = run.start or datetime.fromtimestamp(path.stat().st_mtime, UTC)
    group = job.task_groups[0].name if job.task_groups else f"{job.name}/taskGroups/group0"
    labels = {
        "job_uid": job.uid,
        "task_id": f"task/{job.uid}-group0-{index}/{run.attempt - 1}/0",
        "task_group_name": group,
        "hostname": f"{job.uid}-group0-{index}-fake",
    }
    for number, line in enumerate(text.splitlines()):
        yield LogEntry(
            log_name=f"projects/{project}/logs/batch_task_logs",
            text_payload=line,
            labels=labels,
            timestamp=start + timedelta(microseconds=number + 1),
        )


@contextmanager
def running_fake_logging_service(**kwargs: Any) -> Iterator[FakeLoggingService]:
    service = FakeLoggingService(**kwargs)
    service.start()
    try:
        yield service
    finally:
        service.stop()
