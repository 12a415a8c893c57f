"""The CLI without traps (issue 20): fast help, exits, hints, a re-import from the ledger, the
import's state in ``status JOB``, ``--wait`` ending on refused credentials, a lost connection
retried, three first commands at once on a fresh home. Embedded defaults: the local runner,
a real PostgreSQL, a Dagster instance under a temporary DAGSTER_HOME."""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import psycopg
import pytest
from psycopg.conninfo import conninfo_to_dict, make_conninfo
from typer.testing import CliRunner

runner = CliRunner()
JOB_TYPE = "ingredients-spellcheck"
COMMAND = Path(sys.executable).parent / "robotoff-batch"


@pytest.fixture
def cli_env(tmp_path: Path, pg_db: str, monkeypatch: pytest.MonkeyPatch) -> Iterator[Path]:
    monkeypatch.setenv("ROBOTOFF_BATCH_HOME", str(tmp_path / "home"))
    monkeypatch.setenv("DAGSTER_HOME", str(tmp_path / "dagster_home"))
    monkeypatch.setenv("ROBOTOFF_DATABASE_URL", pg_db)
    monkeypatch.delenv("ROBOTOFF_BATCH_ENV", raising=False)
    yield tmp_path


def _app():  # type: ignore[no-untyped-def]
    from robotoff_batch.cli import app

    return app


def _cli(*args: str, env: dict[str, str] | None = None, timeout: float = 180) -> Any:
    return subprocess.run(
        [str(COMMAND), *args],
        env=env or dict(os.environ),
        capture_output=True,
        text=True,
        timeout=timeout,
    )


def _wrong_role(url: str) -> str:
    params = conninfo_to_dict(url)
    params.update(user="no_such_role", password="s3cret-pw")
    return make_conninfo(**params)


# -- fast commands ---------------------------------------------------------------------------

HEAVY = ("dagster", "google.cloud.batch_v1", "pyarrow", "psycopg", "duckdb")
PROBE = """
import json, sys, time
started = time.perf_counter()
sys.argv = ["robotoff-batch", *json.loads(sys.argv[1])]
from robotoff_batch.cli import main
try:
    main()
except SystemExit as exc:
    code = exc.code
else:
    code = 0
heavy = sorted(m for m in sys.modules if m.split(".")[0] in ("dagster", "pyarrow", "psycopg",
    "duckdb") or m.startswith("google.cloud.batch_v1"))
print(json.dumps({"code": code, "heavy": heavy, "s": time.perf_counter() - started}),
      file=sys.stderr)
"""


@pytest.mark.parametrize(
    "args", [["--help"], ["config", "validate"], ["config", "--help"], ["status", "--help"]]
)
def test_help_and_config_validate_import_neither_dagster_nor_the_clients(
    args: list[str], tmp_path: Path
) -> None:
    """What loads the CLI never imports Dagster, the Batch client, Arrow, psycopg, DuckDB."""
    env = {**os.environ, "ROBOTOFF_BATCH_HOME": str(tmp_path), "DAGSTER_HOME": str(tmp_path)}
    done = subprocess.run(
        [sys.executable, "-c", PROBE, json.dumps(args)],
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )
    report = json.loads(done.stderr.strip().splitlines()[-1])
    assert report["code"] in (0, None), done.stdout + done.stderr
    assert report["heavy"] == [], report["heavy"][:10]
    print(f"\n{' '.join(args)}: {report['s']:.2f} s in-process, load {os.getloadavg()[0]:.1f}")


def test_every_help_text_is_plain() -> None:
    """No reST backticks in any --help, nor in the Launchpad's descriptions of the resources'
    fields and the launch parameters."""
    import inspect

    from robotoff_batch.definitions import build_definitions
    from robotoff_batch.job_types import load_registry

    app = _app()
    import typer.main

    root = typer.main.get_command(app)
    paths: list[list[str]] = [[]]
    for name, command in root.commands.items():  # type: ignore[attr-defined]
        paths.append([name])
        paths += [[name, sub] for sub in getattr(command, "commands", {})]
    for path in paths:
        helped = runner.invoke(app, [*path, "--help"])
        assert helped.exit_code == 0, (path, helped.output)
        assert "`" not in helped.output, (path, helped.output)
    registry = load_registry()
    defs = build_definitions(registry=list(registry.values()))
    from robotoff_batch.resources import resources as every

    classes = {type(r) for r in (defs.resources or {}).values()}  # the local ones, and
    classes |= {
        c for c in vars(every).values() if inspect.isclass(c) and c.__module__ == every.__name__
    }
    for cls in classes:  # every environment's (production: GCS, Cloud Batch, Robotoff's API)
        for field, info in getattr(cls, "model_fields", {}).items():
            assert "`" not in (info.description or ""), (cls, field, info.description)
        assert "`" not in (inspect.getdoc(cls) or ""), cls
    for name, registered in registry.items():
        for field, info in registered.job_type.launch_config.model_fields.items():
            assert "`" not in (info.description or ""), (name, field, info.description)


def test_unknown_config_field_says_did_you_mean(tmp_path: Path) -> None:
    from robotoff_batch.paths import JOB_CONFIGS_DIR

    text = (JOB_CONFIGS_DIR / f"{JOB_TYPE}.yaml").read_text()
    bad = tmp_path / f"{JOB_TYPE}.yaml"
    bad.write_text(
        text.replace("accelerators_count: 1", "accelerator_count: 1").replace(
            "fallback_after:", "fallback_aftr:"
        )
        + "fallbacks:\n  - locaton: europe-west1\n"
    )
    done = runner.invoke(_app(), ["config", "validate", str(bad)])
    assert done.exit_code == 1
    assert "resources.accelerator_count: unknown field" in done.output
    assert "did you mean accelerators_count?" in done.output, done.output
    assert "fallbacks[0].locaton: unknown field" in done.output
    assert "did you mean location?" in done.output, done.output


# -- exits and hints ---------------------------------------------------------------------------


def test_unknown_job_ids_exit_non_zero(cli_env: Path) -> None:
    for command in ("cancel", "status", "import"):
        done = runner.invoke(_app(), [command, "does-not-exist"])
        assert done.exit_code == 1, (command, done.output)
        assert "no batch job 'does-not-exist'" in done.output, (command, done.output)


def test_launch_parameters_say_did_you_mean_and_show_the_list_form(cli_env: Path) -> None:
    app = _app()
    typo = runner.invoke(app, ["launch", JOB_TYPE, "limt=5", "langages=[fr]"])
    assert typo.exit_code == 1
    assert "'limt' (did you mean limit?)" in typo.output, typo.output
    assert "'langages' (did you mean languages?)" in typo.output, typo.output
    scalar = runner.invoke(app, ["launch", JOB_TYPE, "languages=fr", "limit=2"])
    assert scalar.exit_code == 1
    assert "'languages=[fr]'" in scalar.output, scalar.output
    assert not list((cli_env / "home" / "local-batch").glob("ingredients-*"))


# -- a job launched once for the import cases ---------------------------------------------


def _launched(limit: int = 20) -> str:
    launched = runner.invoke(_app(), ["launch", JOB_TYPE, f"limit={limit}"])
    assert launched.exit_code == 0, launched.output
    return re.search(r"launched batch job (\S+)", launched.output).group(1)  # type: ignore[union-attr]


def _wait_succeeded(job_id: str, timeout_s: float = 120) -> None:
    from robotoff_batch.cli.common import batch_engine

    engine = batch_engine()
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        state = engine.get_job(job_id=job_id).state.value
        if state == "SUCCEEDED":
            return
        assert state not in ("FAILED", "CANCELLED"), state
        time.sleep(0.5)
    raise AssertionError(f"{job_id} did not succeed in {timeout_s} s")


def test_reimport_answers_from_the_ledger_and_status_says_imported(cli_env: Path) -> None:
    import dagster as dg

    app = _app()
    job_id = _launched()
    _wait_succeeded(job_id)
    not_yet = runner.invoke(app, ["status", job_id])
    assert "import: not yet: no import tried yet" in not_yet.output, not_yet.output
    assert f"robotoff-batch import {job_id}" in not_yet.output
    first = runner.invoke(app, ["import", job_id])
    assert first.exit_code == 0, first.output
    n = int(re.search(r"imported (\d+) predictions", first.output).group(1))  # type: ignore[union-attr]
    instance = dg.DagsterInstance.get()
    runs = len(instance.get_runs())
    started = time.perf_counter()
    again = runner.invoke(app, ["import", job_id])
    took = time.perf_counter() - started
    assert again.exit_code == 0, again.output
    assert f"imported {n} predictions from {job_id} (already imported: nothing changed)" in (
        again.output
    )
    assert len(instance.get_runs()) == runs  # no new run, so no new materialization
    print(f"\nre-import answered from the ledger in {took:.2f} s, load {os.getloadavg()[0]:.1f}")
    shown = runner.invoke(app, ["status", job_id])
    assert f"import: imported, {n} predictions" in shown.output, shown.output


def test_refused_credentials_end_wait_with_the_cause_and_status_says_refused(
    cli_env: Path, pg_db: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A wrong role: --wait names the cause at once, ends soon after the job SUCCEEDED (not
    after 24 h), the password never shown; the next import fixes it."""
    app = _app()
    monkeypatch.setenv("ROBOTOFF_DATABASE_URL", _wrong_role(pg_db))
    started = time.monotonic()
    waited = runner.invoke(app, ["launch", JOB_TYPE, "limit=10", "--wait", "--timeout-s", "90"])
    took = time.monotonic() - started
    assert waited.exit_code == 1, waited.output
    job_id = re.search(r"launched batch job (\S+)", waited.output).group(1)  # type: ignore[union-attr]
    assert "the import will fail: predictions database refused the credentials" in waited.output
    last = waited.output.strip().splitlines()[-1]
    assert f"{job_id} SUCCEEDED but its import cannot run" in last, waited.output
    assert 'role "no_such_role" does not exist' in last
    assert f"robotoff-batch import {job_id}" in last
    assert "s3cret-pw" not in waited.output
    assert took < 60, took
    # import alone fails at once, as clearly; with the credentials fixed it imports
    refused = runner.invoke(app, ["import", job_id])
    assert refused.exit_code == 1 and "refused the credentials" in refused.output, refused.output
    monkeypatch.setenv("ROBOTOFF_DATABASE_URL", pg_db)
    fixed = runner.invoke(app, ["import", job_id])
    assert fixed.exit_code == 0, fixed.output


def test_status_says_refused_and_why(cli_env: Path) -> None:
    """An output the import refuses (here: a chunk that is not Parquet): not retried, and
    status JOB says refused, with the reason and what to do."""
    app = _app()
    job_id = _launched()
    _wait_succeeded(job_id)
    (chunk,) = (cli_env / "home" / "staging").glob(f"*/{job_id}/output/task-*/chunk-*.parquet")
    chunk.write_bytes(b"not parquet")
    refused = runner.invoke(app, ["import", job_id])
    assert refused.exit_code == 1 and "refused" in refused.output, refused.output
    shown = runner.invoke(app, ["status", job_id])
    line = next(x for x in shown.output.splitlines() if x.startswith("import:"))
    assert line.startswith(f"import: refused: import of {job_id} refused: "), line
    assert "not retried" in line and f"robotoff-batch import {job_id}" in line, line


def test_malformed_database_url_ends_wait_with_the_cause(
    cli_env: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("ROBOTOFF_DATABASE_URL", "postgresql://u:pw@localhost:notaport/db")
    started = time.monotonic()
    waited = runner.invoke(_app(), ["launch", JOB_TYPE, "limit=5", "--wait", "--timeout-s", "90"])
    assert waited.exit_code == 1, waited.output
    last = waited.output.strip().splitlines()[-1]
    assert "ROBOTOFF_DATABASE_URL: its port 'notaport' is not a number" in last, waited.output
    assert time.monotonic() - started < 60


# -- a lost connection -------------------------------------------------------------------------


def _kill_when_blocked(url: str, kills: int, stop: threading.Event, killed: list[int]) -> None:
    """Hold a lock on ``prediction``; terminate the backend that waits on it (the import, in
    its transaction), ``kills`` times; then let go."""
    with psycopg.connect(url, autocommit=True) as admin:
        while len(killed) < kills and not stop.is_set():
            with admin.transaction():
                admin.execute("LOCK TABLE prediction IN ACCESS EXCLUSIVE MODE")
                deadline = time.monotonic() + 30
                while time.monotonic() < deadline and not stop.is_set():
                    admin.execute("SELECT pg_stat_clear_snapshot()")  # else one per transaction
                    row = admin.execute(
                        "SELECT pid FROM pg_stat_activity WHERE wait_event_type = 'Lock' "
                        "AND datname = current_database() AND pid <> pg_backend_pid()"
                    ).fetchone()
                    if row:
                        admin.execute("SELECT pg_terminate_backend(%s)", (row[0],))
                        killed.append(int(row[0]))
                        break
                    time.sleep(0.05)


def _import_blocked(pg_db: str, kills: int, fn):  # type: ignore[no-untyped-def]
    stop = threading.Event()
    killed: list[int] = []
    killer = threading.Thread(target=_kill_when_blocked, args=(pg_db, kills, stop, killed))
    killer.start()
    try:
        return fn(), killed
    finally:
        stop.set()
        killer.join(timeout=30)


def test_a_connection_lost_mid_import_is_retried_and_imported(cli_env: Path, pg_db: str) -> None:
    app = _app()
    job_id = _launched()
    _wait_succeeded(job_id)
    from robotoff_batch.cli import operations

    operations.Workspace.from_env().store  # noqa: B018 (the schema exists: the lock needs it)
    done, killed = _import_blocked(pg_db, 1, lambda: runner.invoke(app, ["import", job_id]))
    assert len(killed) == 1
    assert done.exit_code == 0, done.output
    assert "database outage:" in done.output and "attempt 2 of 3" in done.output, done.output
    assert "terminating connection" in done.output
    assert re.search(rf"imported \d+ predictions from {job_id}\n", done.output), done.output


def test_a_lost_connection_names_its_cause_never_a_dagster_wrapper(
    cli_env: Path, pg_db: str
) -> None:
    from robotoff_batch.cli import operations

    job_id = _launched()
    _wait_succeeded(job_id)
    ws = operations.Workspace.from_env()
    ws.store  # noqa: B018 (the ledger's schema exists: the lock needs the table)
    retried: list[str] = []

    def attempt() -> str:
        with pytest.raises(operations.OperationError) as info:
            operations.run_import(
                ws, job_id=job_id, attempts=2, retry_delay_s=0.1, on_retry=retried.append
            )
        return str(info.value)

    message, killed = _import_blocked(pg_db, 2, attempt)
    assert len(killed) == 2 and len(retried) == 1, (killed, retried)
    assert "terminating connection due to administrator command" in message, message
    assert message.endswith("(after 2 attempts)"), message
    assert "Dagster" not in message and "Error occurred while executing" not in message


def test_a_connection_killed_mid_copy_is_an_outage_not_a_bad_row(pg_db: str) -> None:
    """Terminated while COPY streams the output: PostgreSQL names the COPY line it stopped
    at, which must not read as that row refused (an outage is retried; a refusal is not)."""
    import pyarrow as pa

    from robotoff_batch.predictions.arrow_copy import copy_output
    from robotoff_batch.predictions.model import ImportSpec, OutputChunk, PredictionImportError
    from robotoff_batch.predictions.store import PredictionStore, PredictionStoreUnavailable

    schema = pa.schema([pa.field("code", pa.string()), pa.field("text", pa.string())])
    batch = pa.record_batch(
        [pa.array([f"{i:013d}" for i in range(5000)]), pa.array(["x" * 50] * 5000)],
        schema=schema,
    )
    spec = ImportSpec(output_schema=schema, predictions_sql="SELECT 1")
    store = PredictionStore(conninfo=pg_db)
    with pytest.raises(PredictionStoreUnavailable) as info:  # noqa: PT012
        with store._connection("import") as conn:
            pid = conn.execute("SELECT pg_backend_pid()").fetchone()[0]  # type: ignore[index]

            def chunks() -> Iterator[OutputChunk]:
                yield OutputChunk(file_index=0, offset=0, batch=batch)
                with psycopg.connect(pg_db, autocommit=True) as admin:
                    admin.execute("SELECT pg_terminate_backend(%s)", (pid,))
                time.sleep(0.5)  # the server said why, in the COPY's context; COPY ends here

            copy_output(
                conn.cursor(), spec=spec, outputs=chunks(), where=lambda f, r: f"file {f} row {r}"
            )
    assert not isinstance(info.value, PredictionImportError)
    assert "terminating connection due to administrator command" in str(info.value)


# -- Ctrl-C and concurrent first commands -------------------------------------------------------


# A command started in the background of a non-interactive shell (CI's, `cmd &`) inherits
# SIGINT ignored, and an ignored signal stays ignored across exec: the command is started
# through an exec that first gives SIGINT back its default, as a terminal's Ctrl-C finds it.
_WITH_SIGINT = (
    "import os, signal, sys; signal.signal(signal.SIGINT, signal.SIG_DFL); "
    "os.execv(sys.argv[1], sys.argv[1:])"
)


def test_ctrl_c_on_wait_says_who_imports_the_job(cli_env: Path) -> None:
    proc = subprocess.Popen(
        [
            sys.executable,
            "-c",
            _WITH_SIGINT,
            str(COMMAND),
            "launch",
            JOB_TYPE,
            "limit=20",
            "--wait",
        ],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env=dict(os.environ),
    )
    assert proc.stdout is not None
    for line in proc.stdout:
        if line.startswith("launched batch job"):
            job_id = line.split()[3]
            break
    else:
        raise AssertionError(proc.communicate())
    proc.send_signal(signal.SIGINT)
    out, err = proc.communicate(timeout=60)
    assert proc.returncode == 130, (out, err)
    assert f"stopped waiting (Ctrl-C); {job_id} goes on: no Dagster daemon follows it" in err
    assert f"run `robotoff-batch import {job_id}` once it ended" in err, err


def test_three_first_commands_at_once_on_a_fresh_home(cli_env: Path) -> None:
    """Three launches started together on a fresh home: none races on creating Dagster's
    SQLite storage (alembic_version: "already exists", "expected to match one row")."""
    env = dict(os.environ)
    assert not (cli_env / "dagster_home").exists()
    procs = [
        subprocess.Popen(
            [str(COMMAND), "launch", JOB_TYPE, "limit=3"],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
            env=env,
        )
        for _ in range(3)
    ]
    results = [p.communicate(timeout=300) for p in procs]
    for p, (out, err) in zip(procs, results, strict=True):
        assert p.returncode == 0, (out, err)
        assert "launched batch job" in out, (out, err)
    ids = {re.search(r"launched batch job (\S+)", out).group(1) for out, _ in results}  # type: ignore[union-attr]
    assert len(ids) == 3
