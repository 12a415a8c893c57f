"""A REST front on :class:`~tests.fakes.fake_batch_service.FakeBatchService`.

The real ``BatchServiceClient(transport="rest")`` speaks HTTP/JSON to Google
(``batch.googleapis.com``, the v1 HTTP rules of the protos); this front maps those routes onto
the same fake, so both transports run against one behaviour and the REST error mapping is
proven too: a gRPC status becomes the HTTP status Google answers (ALREADY_EXISTS 409,
NOT_FOUND 404, INVALID_ARGUMENT 400, PERMISSION_DENIED 403, ...), with Google's JSON error
body, which the client turns into ``Conflict``, ``NotFound``...

Routes: ``POST /v1/{parent}/jobs?jobId=`` (CreateJob), ``GET /v1/{name}`` (GetJob),
``GET /v1/{parent}/jobs`` (ListJobs), ``POST /v1/{name}:cancel`` (CancelJob),
``DELETE /v1/{name}`` (DeleteJob), ``GET /v1/{parent}/tasks`` (ListTasks).
"""

from __future__ import annotations

import json
import re
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from http.server import ThreadingHTTPServer
from typing import Any
from urllib.parse import parse_qs, urlparse

import grpc
from google.cloud import batch_v1
from google.longrunning import operations_pb2
from google.protobuf import json_format

from tests.fakes.fake_batch_service import FakeBatchService, _Abort
from tests.fakes.http_server import JsonHandler, start_serving, stop_serving

HTTP_STATUS = {
    grpc.StatusCode.INVALID_ARGUMENT: 400,
    grpc.StatusCode.FAILED_PRECONDITION: 400,
    grpc.StatusCode.OUT_OF_RANGE: 400,
    grpc.StatusCode.UNAUTHENTICATED: 401,
    grpc.StatusCode.PERMISSION_DENIED: 403,
    grpc.StatusCode.NOT_FOUND: 404,
    grpc.StatusCode.ALREADY_EXISTS: 409,
    grpc.StatusCode.ABORTED: 409,
    grpc.StatusCode.RESOURCE_EXHAUSTED: 429,
    grpc.StatusCode.CANCELLED: 499,
    grpc.StatusCode.INTERNAL: 500,
    grpc.StatusCode.UNKNOWN: 500,
    grpc.StatusCode.UNIMPLEMENTED: 501,
    grpc.StatusCode.UNAVAILABLE: 503,
    grpc.StatusCode.DEADLINE_EXCEEDED: 504,
}

_JOB = r"projects/[^/]+/locations/[^/]+/jobs/[^/:]+"
_PARENT = r"projects/[^/]+/locations/[^/]+"
_GROUP = _JOB + r"/taskGroups/[^/]+"


class FakeBatchRest:
    """An HTTP server translating Batch's REST routes into calls on a FakeBatchService."""

    def __init__(self, service: FakeBatchService) -> None:
        self.service = service
        self._server: ThreadingHTTPServer | None = None

    @property
    def endpoint(self) -> str:
        """The ``api_endpoint`` for the client (scheme included: plain HTTP)."""
        assert self._server is not None
        host, port = self._server.server_address[:2]
        return f"http://{host!s}:{port}"

    def client(self) -> batch_v1.BatchServiceClient:
        """A real REST ``BatchServiceClient`` on this front, without credentials."""
        from google.api_core.client_options import ClientOptions
        from google.auth.credentials import AnonymousCredentials

        return batch_v1.BatchServiceClient(
            transport="rest",
            credentials=AnonymousCredentials(),
            client_options=ClientOptions(api_endpoint=self.endpoint),
        )

    def _route(
        self, method: str, path: str, query: dict[str, list[str]], body: bytes
    ) -> tuple[str, Callable[[Any], Any], Any, Callable[[Any], str]]:
        """(fake method name, handler, request message, response serialiser)."""
        svc = self.service
        one = {k: v[0] for k, v in query.items()}

        def job_json(job: batch_v1.Job) -> str:
            return batch_v1.Job.to_json(job)

        def operation_json(op: operations_pb2.Operation) -> str:
            return json_format.MessageToJson(operations_pb2.Operation(name=op.name, done=op.done))

        if method == "POST" and (m := re.fullmatch(rf"/v1/({_PARENT})/jobs", path)):
            job = batch_v1.Job.from_json(body or b"{}", ignore_unknown_fields=True)
            request = batch_v1.CreateJobRequest(
                parent=m[1],
                job_id=one.get("jobId", ""),
                job=job,
                request_id=one.get("requestId", ""),
            )
            return "CreateJob", svc._create_job, request, job_json
        if method == "GET" and (m := re.fullmatch(rf"/v1/({_PARENT})/jobs", path)):
            request = batch_v1.ListJobsRequest(
                parent=m[1],
                filter=one.get("filter", ""),
                page_size=int(one.get("pageSize", 0)),
                page_token=one.get("pageToken", ""),
            )
            return "ListJobs", svc._list_jobs, request, batch_v1.ListJobsResponse.to_json
        if method == "GET" and (m := re.fullmatch(rf"/v1/({_GROUP})/tasks", path)):
            request = batch_v1.ListTasksRequest(
                parent=m[1],
                page_size=int(one.get("pageSize", 0)),
                page_token=one.get("pageToken", ""),
            )
            return "ListTasks", svc._list_tasks, request, batch_v1.ListTasksResponse.to_json
        if method == "GET" and (m := re.fullmatch(rf"/v1/({_JOB})", path)):
            return "GetJob", svc._get_job, batch_v1.GetJobRequest(name=m[1]), job_json
        if method == "POST" and (m := re.fullmatch(rf"/v1/({_JOB}):cancel", path)):
            payload = json.loads(body or b"{}")
            request = batch_v1.CancelJobRequest(name=m[1], request_id=payload.get("requestId", ""))
            return "CancelJob", svc._cancel_job, request, operation_json
        if method == "DELETE" and (m := re.fullmatch(rf"/v1/({_JOB})", path)):
            request = batch_v1.DeleteJobRequest(
                name=m[1], reason=one.get("reason", ""), request_id=one.get("requestId", "")
            )
            return "DeleteJob", svc._delete_job, request, operation_json
        raise _Abort(grpc.StatusCode.UNIMPLEMENTED, f"no route {method} {path}")

    def handle(self, method: str, raw_path: str, body: bytes) -> tuple[int, str]:
        parsed = urlparse(raw_path)
        try:
            name, fn, request, to_json = self._route(
                method, parsed.path, parse_qs(parsed.query), body
            )
        except _Abort as abort:
            return self._error(abort.code, abort.details)
        svc = self.service
        with svc._lock:
            svc.calls[name] += 1
            svc.requests[name].append(request)
            fault = svc._faults[name].popleft() if svc._faults[name] else None
        if fault is not None and fault.code is not None and not fault.after:
            return self._error(fault.code, fault.details)
        try:
            response = fn(request)
        except _Abort as abort:
            return self._error(abort.code, abort.details)
        if fault is not None and fault.code is not None:
            return self._error(fault.code, fault.details)
        return 200, to_json(response)

    @staticmethod
    def _error(code: grpc.StatusCode, message: str) -> tuple[int, str]:
        status = HTTP_STATUS.get(code, 500)
        body = {"error": {"code": status, "message": message, "status": code.name}}
        return status, json.dumps(body)

    def start(self) -> None:
        front = self

        class Handler(JsonHandler):
            protocol_version = "HTTP/1.1"

            def _serve(self, method: str) -> None:
                length = int(self.headers.get("Content-Length") or 0)
                body = self.rfile.read(length) if length else b""
                self._answer(*front.handle(method, self.path, body))

            def do_GET(self) -> None:  # noqa: N802
                self._serve("GET")

            def do_POST(self) -> None:  # noqa: N802
                self._serve("POST")

            def do_DELETE(self) -> None:  # noqa: N802
                self._serve("DELETE")

        self._server = start_serving(Handler)

    def stop(self) -> None:
        stop_serving(self._server)


@contextmanager
def running_fake_batch_rest(service: FakeBatchService) -> Iterator[FakeBatchRest]:
    front = FakeBatchRest(service)
    front.start()
    try:
        yield front
    finally:
        front.stop()
