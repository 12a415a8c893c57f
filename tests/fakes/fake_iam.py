"""A fake IAM ``projects.serviceAccounts.testIamPermissions`` endpoint (REST, as Google's).

``accounts`` maps a service account email to the permissions the caller holds on it; an
account not listed answers 404 NOT_FOUND, ``deny_all`` answers 403 to every call.
"""

from __future__ import annotations

import json
import re
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import unquote

_ROUTE = re.compile(r"^/v1/projects/-/serviceAccounts/(?P<email>[^/:]+):testIamPermissions$")


class FakeIam:
    def __init__(self) -> None:
        self.accounts: dict[str, set[str]] = {}
        self.deny_all = False
        self.calls: list[tuple[str, list[str]]] = []
        self._server: ThreadingHTTPServer | None = None

    @property
    def url(self) -> str:
        assert self._server is not None
        host, port = self._server.server_address[:2]
        return f"http://{host!s}:{port}"

    def start(self) -> None:
        fake = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args: Any) -> None:
                pass

            def _answer(self, status: int, body: dict[str, Any]) -> None:
                data = json.dumps(body).encode()
                self.send_response(status)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

            def do_POST(self) -> None:  # noqa: N802 (http.server's name)
                length = int(self.headers.get("Content-Length") or 0)
                payload = json.loads(self.rfile.read(length) or b"{}")
                match = _ROUTE.match(self.path)
                if match is None:
                    self._answer(404, {"error": {"code": 404, "message": "no such route"}})
                    return
                email = unquote(match["email"])
                wanted = list(payload.get("permissions", []))
                fake.calls.append((email, wanted))
                if fake.deny_all:
                    self._answer(
                        403,
                        {"error": {"code": 403, "message": "The caller does not have permission"}},
                    )
                    return
                if email not in fake.accounts:
                    self._answer(
                        404,
                        {"error": {"code": 404, "message": f"Unknown service account {email}"}},
                    )
                    return
                held = [p for p in wanted if p in fake.accounts[email]]
                self._answer(200, {"permissions": held} if held else {})

        self._server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        threading.Thread(target=self._server.serve_forever, daemon=True).start()

    def stop(self) -> None:
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()


@contextmanager
def running_fake_iam() -> Iterator[FakeIam]:
    fake = FakeIam()
    fake.start()
    try:
        yield fake
    finally:
        fake.stop()
