"""The ``robotoff_api`` target against a local server that reproduces Robotoff's endpoint.

The server follows robotoff/app/api.py:1762-1785 and 336-359 (shared/reference/
robotoff_import.md §1.1): form or query fields ``job_type`` (looked up by ``BatchJobType``
member *name*) and ``batch_dir``, both required (400); an ``Authorization`` header is required
(400), its scheme must be ``bearer`` and its token ``BATCH_JOB_KEY`` (401); then 200
"Request successful. Importing processed data." whatever happens next. The bucket is a file://
directory standing for ``gs://robotoff-batch``; the rest is the real pipeline, staging,
Parquet and embedded PostgreSQL ledger.
"""

from __future__ import annotations

import hashlib
import socket
import urllib.parse
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import psycopg
import pyarrow.parquet as pq
import pytest

from robotoff_batch.job_types.ingredients_spellcheck import JOB_TYPE
from robotoff_batch.predictions import output
from robotoff_batch.predictions.robotoff_api import (
    RobotoffApi,
    RobotoffApiAuthError,
    RobotoffApiStore,
    RobotoffApiUnavailable,
)
from robotoff_batch.predictions.store import PredictionStore
from robotoff_batch.staging import Staging, staging_from_uri
from tests.fakes.http_server import JsonHandler, serving
from tests.test_spellcheck_import import JOB_A, OUTPUT, SucceededEngine, write_job

KEY = "k3y-for-batch-jobs"
# robotoff/types.py:372-376: BatchJobType.ingredients_spellcheck = "ingredients-spellcheck"
BATCH_JOB_TYPES = {"ingredients_spellcheck": "ingredients-spellcheck"}


class RobotoffEndpoint(JsonHandler):
    """``POST /api/v1/batch/import`` as Robotoff answers it."""

    received: list[dict[str, str]]

    def do_POST(self) -> None:  # noqa: N802 - http.server's name
        url = urllib.parse.urlsplit(self.path)
        if url.path != "/api/v1/batch/import":
            return self._answer(404, {"title": "404 Not Found"})
        length = int(self.headers.get("Content-Length") or 0)
        params = dict(urllib.parse.parse_qsl(url.query))
        if self.headers.get("Content-Type", "").startswith("application/x-www-form-urlencoded"):
            params.update(urllib.parse.parse_qsl(self.rfile.read(length).decode()))
        for name in ("job_type", "batch_dir"):
            if not params.get(name):
                return self._answer(400, {"title": "Missing parameter", "description": name})
        if params["job_type"] not in BATCH_JOB_TYPES:
            return self._answer(
                400, {"title": "400 Bad Request", "description": list(BATCH_JOB_TYPES.values())}
            )
        auth = self.headers.get("Authorization")
        if auth is None:
            return self._answer(400, {"title": "Missing header value"})
        scheme, _, token = auth.partition(" ")
        if scheme.lower() != "bearer":
            return self._answer(401, {"title": "Invalid authentication scheme."})
        if token != KEY:
            return self._answer(401, {"title": "Invalid token."})
        self.received.append(params)
        return self._answer(200, {"status": "Request successful. Importing processed data."})


@pytest.fixture
def robotoff() -> Iterator[tuple[str, list[dict[str, str]]]]:
    received: list[dict[str, str]] = []
    with serving(type("Handler", (RobotoffEndpoint,), {"received": received})) as server:
        yield f"http://127.0.0.1:{server.server_port}", received


@pytest.fixture
def staging(tmp_path: Path) -> Staging:
    root = tmp_path / "staging"
    root.mkdir()
    return staging_from_uri(root.as_uri())


@pytest.fixture
def bucket(tmp_path: Path) -> Path:
    path = tmp_path / "robotoff-batch"
    path.mkdir()
    return path


def api_store(pg_db: str, url: str, bucket: Path, key: str = KEY) -> RobotoffApiStore:
    ledger = PredictionStore(conninfo=pg_db)
    ledger.ensure_schema()
    api = RobotoffApi(base_url=url, key=key, bucket_staging=staging_from_uri(bucket.as_uri()))
    return RobotoffApiStore(ledger=ledger, api=api)


def run(staging: Staging, store: RobotoffApiStore, engine: SucceededEngine | None = None) -> Any:
    return output.import_job_output(
        engine=engine or SucceededEngine(),  # type: ignore[arg-type]
        staging=staging,
        store=store,
        job_type=JOB_TYPE,
        job_id=JOB_A,
    )


def ledger(url: str) -> list[tuple[Any, ...]]:
    with psycopg.connect(url) as conn:
        return conn.execute(
            "SELECT batch_job_id, target, predictions FROM batch_job_import"
        ).fetchall()


def test_output_is_handed_to_robotoffs_importer_once(
    staging: Staging, bucket: Path, pg_db: str, robotoff: tuple[str, list[dict[str, str]]]
) -> None:
    url, received = robotoff
    write_job(staging, JOB_A)
    store = api_store(pg_db, url, bucket)
    outcome = run(staging, store)

    # every row, unchanged ones included, as Robotoff's own container writes them
    assert received == [
        {"job_type": "ingredients_spellcheck", "batch_dir": f"ingredients-spellcheck/{JOB_A}"}
    ]
    handed = pq.read_table(bucket / received[0]["batch_dir"] / "postprocessed_data.parquet")
    assert handed.column_names == ["code", "text", "lang", "correction"]
    assert [tuple(r.values()) for r in handed.to_pylist()] == [
        (code, text, lang, correction) for code, lang, text, correction in OUTPUT
    ]
    assert any(text == correction for _, _, text, correction in OUTPUT)
    assert outcome.predictions == len(OUTPUT) and not outcome.already_imported
    assert ledger(pg_db) == [(JOB_A, "robotoff_api", len(OUTPUT))]
    with psycopg.connect(pg_db) as conn:  # nothing written to Robotoff's tables by us
        assert conn.execute("SELECT count(*) FROM prediction").fetchone() == (0,)
    # ... but every verdict is in our own records (issue 22): hashes, read back by a launch
    from robotoff_batch.predictions.known import ModelIdentity

    known = store.known_texts(job_type=JOB_TYPE.name, identity=ModelIdentity("lexicon-cpu", "1"))
    assert sorted(known.to_pylist(), key=lambda r: r["code"]) == sorted(
        (
            {"code": c, "lang": lang, "text_hash": hashlib.md5(t.encode()).hexdigest()}
            for c, lang, t, _ in OUTPUT
        ),
        key=lambda r: r["code"],
    )

    engine = SucceededEngine()
    again = run(staging, store, engine)
    assert again.already_imported and len(received) == 1 and engine.calls == 0


def test_wrong_key_is_refused_not_retried_and_nothing_recorded(
    staging: Staging, bucket: Path, pg_db: str, robotoff: tuple[str, list[dict[str, str]]]
) -> None:
    url, received = robotoff
    write_job(staging, JOB_A)
    with pytest.raises(RobotoffApiAuthError, match=r"answered 401: .*Invalid token") as info:
        run(staging, api_store(pg_db, url, bucket, key="wrong-key"))
    assert "wrong-key" not in str(info.value)
    assert received == [] and ledger(pg_db) == []


def _closed_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def test_endpoint_down_is_retryable_then_succeeds(
    staging: Staging, bucket: Path, pg_db: str, robotoff: tuple[str, list[dict[str, str]]]
) -> None:
    url, received = robotoff
    write_job(staging, JOB_A)
    down = f"http://127.0.0.1:{_closed_port()}"
    with pytest.raises(RobotoffApiUnavailable, match="Robotoff unreachable"):
        run(staging, api_store(pg_db, down, bucket))
    assert ledger(pg_db) == []
    # the retry (same job) uploads the same file again (identical: kept) and is accepted
    assert run(staging, api_store(pg_db, url, bucket)).predictions == len(OUTPUT)
    assert len(received) == 1 and len(ledger(pg_db)) == 1


def test_unknown_job_type_name_is_a_400(
    bucket: Path, robotoff: tuple[str, list[dict[str, str]]]
) -> None:
    """Robotoff looks the job type up by member name: the hyphenated value is refused."""
    from robotoff_batch.predictions.robotoff_api import RobotoffApiError

    url, _ = robotoff
    api = RobotoffApi(base_url=url, key=KEY, bucket_staging=staging_from_uri(bucket.as_uri()))
    with pytest.raises(RobotoffApiError, match="answered 400"):
        api.post(job_type="ingredients-spellcheck", batch_dir="x")
    assert api.post(job_type="ingredients_spellcheck", batch_dir="x")["status"].startswith(
        "Request successful"
    )
