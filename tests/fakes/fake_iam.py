"""A fake IAM ``projects.serviceAccounts.testIamPermissions`` endpoint (REST, as Google's), and
Resource Manager's ``projects.getIamPolicy`` (``POST /v1/projects/<p>:getIamPolicy``, answering
``{"version": 3, "bindings": [{"role": ..., "members": [...]}], "etag": ...}``; 403 when
``policy_denied``, as for a caller without ``resourcemanager.projects.getIamPolicy``).

``accounts`` maps a service account email to the permissions the caller holds on it; an
account not listed answers 404 NOT_FOUND, ``deny_all`` answers 403 to every call.
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterator
from contextlib import contextmanager
from http.server import ThreadingHTTPServer
from urllib.parse import unquote

from tests.fakes.http_server import JsonHandler, start_serving, stop_serving

_POLICY_ROUTE = re.compile(r"^/v1/projects/(?P<project>[^/:]+):getIamPolicy$")
_ROUTE = re.compile(r"^/v1/projects/-/serviceAccounts/(?P<email>[^/:]+):testIamPermissions$")


class FakeIam:
    def __init__(self) -> None:
        self.accounts: dict[str, set[str]] = {}
        self.deny_all = False
        self.calls: list[tuple[str, list[str]]] = []
        # project -> role -> members (``serviceAccount:<email>``)
        self.policies: dict[str, dict[str, set[str]]] = {}
        self.policy_denied = False
        self.policy_calls: list[tuple[str, dict]] = []  # type: ignore[type-arg]
        self._server: ThreadingHTTPServer | None = None

    @property
    def url(self) -> str:
        assert self._server is not None
        host, port = self._server.server_address[:2]
        return f"http://{host!s}:{port}"

    def start(self) -> None:
        fake = self

        class Handler(JsonHandler):
            def do_POST(self) -> None:  # noqa: N802 (http.server's name)
                length = int(self.headers.get("Content-Length") or 0)
                payload = json.loads(self.rfile.read(length) or b"{}")
                policy = _POLICY_ROUTE.match(self.path)
                if policy is not None:
                    project = unquote(policy["project"])
                    fake.policy_calls.append((project, payload))
                    if fake.policy_denied:
                        self._answer(
                            403,
                            {
                                "error": {
                                    "code": 403,
                                    "message": "The caller does not have permission",
                                }
                            },
                        )
                        return
                    roles = fake.policies.get(project, {})
                    bindings = [
                        {"role": role, "members": sorted(members)}
                        for role, members in sorted(roles.items())
                    ]
                    self._answer(200, {"version": 3, "etag": "BwX=", "bindings": bindings})
                    return
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

        self._server = start_serving(Handler)

    def stop(self) -> None:
        stop_serving(self._server)


@contextmanager
def running_fake_iam() -> Iterator[FakeIam]:
    fake = FakeIam()
    fake.start()
    try:
        yield fake
    finally:
        fake.stop()
