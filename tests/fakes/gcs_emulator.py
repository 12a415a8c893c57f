"""gcp-storage-emulator, started in-process on a free port, made stricter for our tests.

The emulator is third-party; two of its behaviours are patched here (never our code):

- it ignores ``ifGenerationMatch``: an upload (media, multipart, or a resumable upload's
  initiation and finalisation) whose ``ifGenerationMatch`` does not hold now gets ``412
  Precondition Failed``, as GCS answers: ``0`` over an existing object (create-only), ``N``
  when the object's live generation is not N (compare-and-swap). The emulator's server is a
  plain ``HTTPServer`` (one request at a time), so the check and the write are one step, as
  on GCS;
- faults: :meth:`EmulatorFaults.fail_next` makes the next N requests (optionally only those
  whose method/path match) answer ``503`` (or any status) before reaching the emulator;
  :meth:`EmulatorFaults.corrupt_next_uploads` flips a byte of the next N resumable uploads as
  they are stored (bytes damaged in transit: the stored CRC32C is not the client's, and the
  client raises ``DataCorruption``).

Counters of the requests served are kept per ``METHOD path`` for assertions.
"""

from __future__ import annotations

import json
import socket
import threading
from collections import Counter
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from http import HTTPStatus
from typing import Any
from urllib.parse import parse_qs, urlsplit

from gcp_storage_emulator import server as emulator_server
from gcp_storage_emulator.exceptions import NotFound
from gcp_storage_emulator.handlers import objects as emulator_objects

# Faults of the emulators running in this process, by port.
_FAULTS: dict[int, EmulatorFaults] = {}
_PATCH_LOCK = threading.Lock()
_patched = False
_current = threading.local()  # the emulator port of the request this thread serves


@dataclass
class EmulatorFaults:
    """Faults to inject and requests seen, for one emulator."""

    remaining: list[tuple[str, str, int]] = field(default_factory=list)
    served: Counter[str] = field(default_factory=Counter)
    injected: Counter[str] = field(default_factory=Counter)
    lock: threading.Lock = field(default_factory=threading.Lock)
    corrupt_uploads: int = 0

    def corrupt_next_uploads(self, times: int = 1) -> None:
        """The next ``times`` resumable uploads are stored with one byte flipped."""
        with self.lock:
            self.corrupt_uploads += times

    def take_corruption(self) -> bool:
        with self.lock:
            if self.corrupt_uploads > 0:
                self.corrupt_uploads -= 1
                self.injected["corrupt"] += 1
                return True
        return False

    def fail_next(
        self, times: int, *, status: int = 503, method: str = "", path_contains: str = ""
    ) -> None:
        """The next ``times`` matching requests answer ``status`` without being handled."""
        with self.lock:
            self.remaining.extend([(method, path_contains, status)] * times)

    def take(self, method: str, path: str) -> int | None:
        with self.lock:
            self.served[f"{method} {path.split('?')[0]}"] += 1
            for i, (want_method, want_path, status) in enumerate(self.remaining):
                if (not want_method or want_method == method) and want_path in path:
                    del self.remaining[i]
                    self.injected[method] += 1
                    return status
        return None


def _send_error(request_handler: Any, status: int) -> None:
    emulator_server._read_raw_data(request_handler)  # drain the body, keep the stream sane
    phrase = HTTPStatus(status).phrase
    body = json.dumps({"error": {"code": status, "message": f"injected {phrase}"}}).encode()
    request_handler.send_response(status, phrase)
    request_handler.send_header("Content-Type", "application/json")
    request_handler.send_header("Content-Length", str(len(body)))
    request_handler.end_headers()
    request_handler.wfile.write(body)


def _object_name(request: Any) -> str | None:
    if "name" in request.query:
        return str(request.query["name"][0])
    data = request.data
    if isinstance(data, dict):
        meta = data.get("meta", data)
        if isinstance(meta, dict) and meta.get("name"):
            return str(meta["name"])
    return None


def _precondition_failed(storage: Any, bucket: str, name: str | None, want: str) -> bool:
    """Whether ``ifGenerationMatch=want`` does not hold for ``bucket/name`` right now."""
    try:
        current = storage.get_file_obj(bucket, name)
    except NotFound:
        current = None
    if want == "0":
        return current is not None
    return current is None or str(current.get("generation")) != want


def _answer_412(response: Any) -> None:
    response.status = HTTPStatus.PRECONDITION_FAILED
    response.json(
        {
            "error": {
                "code": 412,
                "message": "At least one of the pre-conditions you specified did not hold.",
                "errors": [{"reason": "conditionNotMet"}],
            }
        }
    )


def _wrap_insert(original: Callable[..., Any]) -> Callable[..., Any]:
    def insert(request: Any, response: Any, storage: Any, *args: Any, **kwargs: Any) -> Any:
        match = request.query.get("ifGenerationMatch")
        if match and "upload_id" not in request.query:
            name = _object_name(request)
            if _precondition_failed(storage, request.params["bucket_name"], name, match[0]):
                _answer_412(response)
                return None
        return original(request, response, storage, *args, **kwargs)

    return insert


def _if_generation_match(path: str) -> str | None:
    values = parse_qs(urlsplit(path).query).get("ifGenerationMatch")
    return values[0] if values else None


def _install_patches() -> None:
    """Patch the emulator once per process (idempotent): faults + ifGenerationMatch."""
    global _patched
    with _PATCH_LOCK:
        if _patched:
            return
        original_handle = emulator_server.Router.handle

        def handle(self: Any, method: str) -> None:
            request_handler = self._request_handler
            faults = _FAULTS.get(request_handler.server.server_address[1])
            _current.faults = faults
            _current.if_generation_match = _if_generation_match(request_handler.path)
            if faults is not None:
                status = faults.take(method, request_handler.path)
                if status is not None:
                    _send_error(request_handler, status)
                    return
            original_handle(self, method)

        emulator_server.Router.handle = handle  # type: ignore[method-assign]
        original_insert = emulator_objects.insert
        strict_insert = _wrap_insert(original_insert)
        for _regex, handlers in emulator_server.HANDLERS:
            for method, fn in list(handlers.items()):
                if fn is original_insert:
                    handlers[method] = strict_insert
        emulator_objects.insert = strict_insert
        original_finalize = emulator_objects._finalize_resumable_object

        def finalize(response: Any, storage: Any, obj: Any, data: bytes, upload_id: Any) -> Any:
            want = getattr(_current, "if_generation_match", None)
            if want is not None and _precondition_failed(storage, obj["bucket"], obj["name"], want):
                _answer_412(response)  # the session's precondition, checked as it completes
                return None
            faults = getattr(_current, "faults", None)
            if faults is not None and data and faults.take_corruption():
                data = bytes([data[0] ^ 0xFF]) + data[1:]
            return original_finalize(response, storage, obj, data, upload_id)

        emulator_objects._finalize_resumable_object = finalize
        _patched = True


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@dataclass
class RunningEmulator:
    host: str
    port: int
    faults: EmulatorFaults
    server: Any

    @property
    def url(self) -> str:
        """The value for ``STORAGE_EMULATOR_HOST`` (scheme included)."""
        return f"http://{self.host}:{self.port}"

    def create_bucket(self, name: str, location: str = "EU") -> None:
        """A bucket in ``location`` (the emulator itself puts every bucket in US)."""
        emulator_server.buckets.create_bucket(name, self.server._storage)
        resource = self.server._storage.buckets[name]
        resource["location"] = location.upper()
        resource["locationType"] = "multi-region" if location.upper() in ("EU", "US") else "region"


@contextmanager
def running_gcs_emulator(*, buckets: tuple[str, ...] = ()) -> Iterator[RunningEmulator]:
    """An in-memory emulator on a free port, with the patches above, stopped on exit."""
    _install_patches()
    port = free_port()
    server = emulator_server.create_server("127.0.0.1", port, in_memory=True)
    faults = EmulatorFaults()
    _FAULTS[port] = faults
    server.start()
    emulator = RunningEmulator(host="127.0.0.1", port=port, faults=faults, server=server)
    for bucket in buckets:
        emulator.create_bucket(bucket)
    try:
        yield emulator
    finally:
        server.stop()
        _FAULTS.pop(port, None)
