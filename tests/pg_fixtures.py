"""Pytest fixtures for a real (embedded) PostgreSQL.

Registered through ``pytest_plugins`` in ``tests/conftest.py``. ``pg_conninfo`` starts one
embedded server per test session in a temporary data directory (stopped at the end);
``pg_db`` gives each test a fresh, empty database on it.
"""

from __future__ import annotations

import shutil
import tempfile
import uuid
from collections.abc import Iterator
from pathlib import Path

import psycopg
import pytest
from psycopg import sql

from robotoff_batch.predictions.embedded import (
    ensure_embedded_postgres,
    stop_embedded_postgres,
    with_database,
)


def private_tmp_dir(prefix: str) -> Path:
    """A temporary directory outside pytest's basetemp.

    Not under ``tmp_path``: a concurrent pytest session prunes old ``pytest-N`` directories
    and resets ``/tmp/pytest-of-<user>`` to mode 0700, which (as root, where the server runs
    as another user) would pull the data directory from under a running server.
    """
    return Path(tempfile.mkdtemp(prefix=prefix))


@pytest.fixture(scope="session")
def pg_data_dir() -> Iterator[Path]:
    """The session server's data directory (removed at the end of the session)."""
    base = private_tmp_dir("robotoff-batch-test-pg-")
    try:
        yield base / "data"
    finally:
        shutil.rmtree(base, ignore_errors=True)


@pytest.fixture(scope="session")
def pg_conninfo(pg_data_dir: Path) -> Iterator[str]:
    """URL of the session's embedded PostgreSQL (database ``robotoff``, superuser, trust)."""
    url = ensure_embedded_postgres(pg_data_dir)
    try:
        yield url
    finally:
        stop_embedded_postgres(pg_data_dir)


@pytest.fixture
def pg_db(pg_conninfo: str) -> Iterator[str]:
    """URL of a fresh database created for this test (dropped afterwards)."""
    name = f"test_{uuid.uuid4().hex[:12]}"
    admin = with_database(pg_conninfo, "postgres")
    with psycopg.connect(admin, autocommit=True) as conn:
        conn.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(name)))
    try:
        yield with_database(pg_conninfo, name)
    finally:
        with psycopg.connect(admin, autocommit=True) as conn:
            conn.execute(
                sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(sql.Identifier(name))
            )
