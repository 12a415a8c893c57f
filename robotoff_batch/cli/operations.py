"""What the CLI does, through the same Dagster instance the UI and the daemon use.

A launch from here is a run of the job type's launch job in the Dagster instance (so it shows
in the UI). Following a job to its outcome uses the sensor's own function and settings
(:func:`robotoff_batch.follow.follow`, :class:`~robotoff_batch.follow.FollowSettings`): when a
Dagster daemon runs the sensor, the CLI only watches; when none does, the CLI applies the very
result the sensor would return (new partitions, observations, finish and fallback runs, in this
process), so the UI shows the same history either way, a stuck job is reported, a job waiting
on capacity falls back, and a job is never followed or imported twice.
"""

from __future__ import annotations

import difflib
import fcntl
import logging
import os
import re
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import dagster as dg

from robotoff_batch.batch.engine import BatchEngine, JobNotFoundError, JobState, JobStatus
from robotoff_batch.follow import (
    DagsterFollowStorage,
    FinishRequest,
    FollowCache,
    FollowSettings,
    FollowStorage,
    follow,
)
from robotoff_batch.follow.apply import apply_in_process
from robotoff_batch.follow.fallback import fallback_job_id, supersessions
from robotoff_batch.job_types import RegisteredJobType
from robotoff_batch.names import (
    BATCH_JOB_SUBMISSION,
    JOB_TYPE_LABEL,
    PRODUCTS,
    launch_job_name,
    partitions_def_name,
)
from robotoff_batch.paths import home_dir

logger = logging.getLogger(__name__)

#: dagster.yaml of the embedded default instance (SQLite under DAGSTER_HOME). Runs are launched
#: at once (DefaultRunCoordinator: a click in the UI, or the sensor's finish request, starts its
#: run without waiting for the daemon's run queue), and a run stuck starting is failed (the
#: follower then retries it). Nothing here relies on a run queue: a finish run is requested
#: once per job and attempt (its sensor run key), and two imports of one job are serialised by
#: the import ledger's row lock. Production's instance (docs/production.md) keeps its queue.
#: The sensor ticks every 5 s on the local runner: its skipped ticks (nothing requested) are
#: purged after a day, not Dagster's 7 (17,000 tick rows, not 120,000).
DEFAULT_DAGSTER_YAML = """\
# Written by robotoff-batch for the embedded default instance (SQLite under DAGSTER_HOME).
# Rewritten when robotoff-batch's default changes, as long as this first line is kept:
# delete it to keep your own edits.
telemetry:
  enabled: false
run_coordinator:
  module: dagster._core.run_coordinator
  class: DefaultRunCoordinator
run_monitoring:
  enabled: true
  start_timeout_seconds: 180
  poll_interval_seconds: 30
retention:
  sensor:
    purge_after_days:
      skipped: 1
"""
#: The first line of every dagster.yaml robotoff-batch wrote (and may rewrite).
WRITTEN_BY = DEFAULT_DAGSTER_YAML.splitlines()[0]
SENSOR_NAME = "batch_job_sensor"


def console_loggers(debug: bool) -> dict[str, Any]:
    """Dagster's console logger in CLI runs: silent (the CLI prints its own lines), or every
    event with ``--debug``."""
    return {"console": {"config": {"log_level": "DEBUG" if debug else "CRITICAL"}}}


class OperationError(RuntimeError):
    """A CLI operation failed; the message is for the user."""


@dataclass(frozen=True)
class LaunchOutcome:
    job_id: str
    rows: int
    run_id: str
    skipped_unchanged: int | None = None  # skip_unchanged: products left out (issue 22)
    nothing_left: str = ""  # every product unchanged: no job submitted, and why
    expected_cost_usd: float | None = None
    cost_ceiling_usd: float | None = None


@dataclass(frozen=True)
class Outcome:
    """How a followed job ended: its final status, and what its finish run did."""

    status: JobStatus
    imported: int | None  # predictions in the database, None when nothing was imported
    message: str  # the finish run's failure message, or ""
    by_daemon: bool
    imports: bool = True  # whether the job's type imports its output at all


def dagster_home() -> Path:
    """``DAGSTER_HOME``, defaulting to <ROBOTOFF_BATCH_HOME>/dagster_home (SQLite storage)."""
    path = Path(os.environ.setdefault("DAGSTER_HOME", str(home_dir() / "dagster_home")))
    path.mkdir(parents=True, exist_ok=True)
    config = path / "dagster.yaml"
    if _outdated(config):  # written whole (renamed into place): never read half-written
        partial = path / f".dagster.yaml.{os.getpid()}"
        partial.write_text(DEFAULT_DAGSTER_YAML)
        partial.replace(config)
    return path


def _outdated(config: Path) -> bool:
    """Whether ``config`` is missing, or an older default of ours (its first line kept)."""
    try:
        text = config.read_text()
    except FileNotFoundError:
        return True
    return text != DEFAULT_DAGSTER_YAML and text.splitlines()[:1] == [WRITTEN_BY]


def instance() -> dg.DagsterInstance:
    """The Dagster instance of ``DAGSTER_HOME``; its storage created or migrated under a file
    lock, so that commands started together on a fresh home never race on creating it
    (SQLite's ``alembic_version``: "table already exists", "expected to match one row")."""
    home = dagster_home()
    with _locked(home / ".robotoff-batch-instance.lock"):
        return dg.DagsterInstance.get()  # its SQLite storages are created (migrated) here


@contextmanager
def _locked(path: Path) -> Iterator[None]:
    """An exclusive ``fcntl`` lock on ``path`` for the ``with`` block (other processes wait)."""
    with open(path, "a+") as handle:
        fcntl.flock(handle, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


class Workspace:
    """The code location, its job types and the Dagster instance a command works with: from
    the environment for the CLI (:meth:`from_env`), the UI's and the daemon's.

    The definitions and the instance are built when first used: a command answered from the
    import ledger (a re-import) or the engine alone needs neither."""

    def __init__(
        self,
        definitions: dg.Definitions | None = None,
        instance: dg.DagsterInstance | None = None,
        registry: list[RegisteredJobType] | None = None,
    ) -> None:
        self._definitions = definitions
        self._instance = instance
        self._registry = registry
        self._resources: dict[str, Any] = {}

    @classmethod
    def from_env(cls) -> Workspace:
        """The code location of this environment (job_configs/, ``ROBOTOFF_BATCH_*``): an
        invalid job config fails here, before anything is launched."""
        ws = cls()
        ws.registry  # noqa: B018 (validates the job configs now)
        return ws

    @property
    def registry(self) -> list[RegisteredJobType]:
        if self._registry is None:
            from robotoff_batch.job_types import load_registry

            self._registry = list(load_registry().values())
        return self._registry

    @property
    def definitions(self) -> dg.Definitions:
        if self._definitions is None:
            from robotoff_batch.definitions import build_definitions

            self._definitions = build_definitions(registry=self.registry)
        return self._definitions

    @property
    def instance(self) -> dg.DagsterInstance:
        if self._instance is None:
            self._instance = instance()
        return self._instance

    def resource(self, key: str) -> Any:
        """An initialised resource of the code location (environment variables resolved)."""
        from robotoff_batch.resources import build_resources, initialized

        if key not in self._resources:
            if self._definitions is not None:
                resources = self._definitions.resources or {}
            else:  # the environment's, as build_definitions would take them
                resources = build_resources()
            self._resources[key] = initialized(resources[key])
        return self._resources[key]

    @property
    def engine(self) -> BatchEngine:
        return self.resource("batch_engine").get_engine()  # type: ignore[no-any-return]

    @property
    def store(self) -> Any:
        return self.resource("prediction_store").get_store()

    @property
    def settings(self) -> FollowSettings:
        return FollowSettings.from_registry(self.registry)

    def storage(self) -> FollowStorage:
        return DagsterFollowStorage(self.instance, self.resource("prediction_store"))

    def imports(self, job_type: str) -> bool:
        """Whether the finish run of ``job_type`` imports (or hands over to Robotoff)."""
        return self.settings.imports.get(job_type, True)


#: The causes of a failed finish run that are an outage: retried (``import`` and the follower).
OUTAGE_ERRORS = frozenset({"PredictionStoreUnavailable", "RobotoffApiUnavailable"})


@dataclass(frozen=True)
class RunFailure:
    """Why a run failed: the innermost error under Dagster's wrappers (``cls`` empty for a
    ``dg.Failure``'s own description), as one paragraph without a stack trace."""

    cls: str
    message: str

    @property
    def outage(self) -> bool:
        return self.cls in OUTAGE_ERRORS

    def __str__(self) -> str:
        return f"{self.cls}: {self.message}" if self.cls else self.message


def run_failure(inst: dg.DagsterInstance, run_id: str) -> RunFailure:
    """The reason a run failed, as its failed step said it; never Dagster's wrapper
    (``DagsterExecutionStepExecutionError: Error occurred while executing op ...``)."""
    for record in inst.get_records_for_run(
        run_id, of_type={dg.DagsterEventType.STEP_FAILURE, dg.DagsterEventType.RUN_FAILURE}
    ).records:
        event = record.event_log_entry.dagster_event
        if event is None:
            continue
        if event.is_step_failure and event.step_failure_data:
            data = event.step_failure_data
            if data.user_failure_data and data.user_failure_data.description:
                return RunFailure("", data.user_failure_data.description)
            if data.error:
                error = data.error
                while error.cause is not None and (error.cls_name or "").startswith("Dagster"):
                    error = error.cause
                cls = error.cls_name or ""
                # its message starts with the qualified class name: said once, unqualified
                message = re.sub(rf"^[\w.]*\b{re.escape(cls)}: ", "", error.message)
                return RunFailure(cls, message.strip())
        if event.message:
            return RunFailure("", event.message)
    return RunFailure("", f"run {run_id} failed")


def run_failure_message(inst: dg.DagsterInstance, run_id: str) -> str:
    """:func:`run_failure` as a line of text."""
    return str(run_failure(inst, run_id))


def launch(
    ws: Workspace, *, job_type: str, params: dict[str, Any], debug: bool = False
) -> LaunchOutcome:
    """Extract, stage and submit one batch job (a run of ``launch_<job type>``)."""
    from robotoff_batch.assets.launch import launch_op_name

    registry = {r.name: r for r in ws.registry}
    if job_type not in registry:
        raise OperationError(f"unknown job type {job_type!r} (known: {', '.join(registry)})")
    jt = registry[job_type].job_type
    launch_cls = jt.launch_config
    # dg.Config accepts unknown keyword arguments; a typo must not launch the default selection
    known = list(launch_cls.model_fields)
    unknown = sorted(set(params) - set(known))
    if unknown:
        hints = []
        for name in unknown:
            close = difflib.get_close_matches(name, known, n=1)
            hints.append(f"{name!r}" + (f" (did you mean {close[0]}?)" if close else ""))
        raise OperationError(
            f"unknown launch parameter(s) {', '.join(hints)} for {job_type}; "
            f"known: {', '.join(known)}"
        )
    try:
        launch_config = launch_cls(**params)
    except Exception as exc:  # pydantic's ValidationError, with the field names
        raise OperationError(f"invalid launch parameters: {_one_line_validation(exc)}") from None
    job = ws.definitions.resolve_job_def(launch_job_name(job_type))
    result = job.execute_in_process(
        run_config=dg.RunConfig(
            ops={launch_op_name(jt.key_prefix): launch_config}, loggers=console_loggers(debug)
        ),
        instance=ws.instance,
        raise_on_error=False,
    )
    if not result.success:
        raise OperationError(run_failure_message(ws.instance, result.run_id))
    job_id, rows, facts = "", 0, {}
    for event in result.get_asset_materialization_events():
        mat = event.materialization
        meta = mat.metadata
        if mat.asset_key.path[-1] == PRODUCTS:
            rows = int(meta["rows"].value)  # type: ignore[arg-type]
            facts = {k: meta[k].value for k in LAUNCH_FACTS if k in meta}
        if mat.asset_key.path[-1] == BATCH_JOB_SUBMISSION:
            job_id = str(meta["batch_job_id"].value)
    return LaunchOutcome(job_id=job_id, rows=rows, run_id=result.run_id, **facts)  # type: ignore[arg-type]


#: The products materialization's facts a launch reports (skip_unchanged, cost).
LAUNCH_FACTS = ("skipped_unchanged", "nothing_left", "expected_cost_usd", "cost_ceiling_usd")


def _one_line_validation(exc: Exception) -> str:
    """Pydantic's errors on one line, each with the value given; a list given one value
    shows the list form to type (``'languages=[fr]'``)."""
    errors = getattr(exc, "errors", None)
    if callable(errors):
        parts = []
        for error in errors():
            loc = error.get("loc", ())
            where = ".".join(str(x) for x in loc) or "value"
            given = error.get("input")
            part = f"{where}: {error.get('msg')} (got {given!r})"
            if error.get("type") == "list_type" and len(loc) == 1 and not isinstance(given, dict):
                part += f"; a list is written in brackets: '{where}=[{given}]'"
            parts.append(part)
        return "; ".join(parts)
    return str(exc).splitlines()[0]


def daemon_follows(inst: dg.DagsterInstance) -> bool:
    """True when a Dagster daemon with a fresh heartbeat runs, and our sensor is not stopped."""
    try:
        from dagster._core.scheduler.instigation import InstigatorStatus, InstigatorType
        from dagster._daemon.controller import get_daemon_statuses

        statuses = get_daemon_statuses(
            inst, ["SENSOR"], ignore_errors=True, heartbeat_tolerance_seconds=30
        )
        if not statuses["SENSOR"].healthy:
            return False
        for state in inst.all_instigator_state(instigator_type=InstigatorType.SENSOR):
            if state.name == SENSOR_NAME and state.status == InstigatorStatus.STOPPED:
                return False
        return True
    except Exception:  # no heartbeat storage, no daemon
        return False


def chain_ids(ws: Workspace, job_id: str) -> set[str]:
    """``job_id`` and the ids its capacity fallbacks would get (``<id>-f<n>``): what a command
    following ``job_id`` follows."""
    most = max((len(r.config.fallbacks) for r in ws.registry), default=0)
    return {job_id} | {fallback_job_id(job_id, i) for i in range(1, most + 1)}


def last_of_chain(statuses: dict[str, JobStatus], job_id: str) -> str:
    """The job that replaced ``job_id`` (and so on): the one whose outcome counts."""
    replaced = supersessions(statuses)
    seen = {job_id}
    while job_id in replaced and replaced[job_id] not in seen:
        job_id = replaced[job_id]
        seen.add(job_id)
    return job_id


def follow_job(
    ws: Workspace,
    *,
    job_id: str,
    timeout_s: float,
    poll_s: float = 1.0,
    on_change: Callable[[str, str, str], None] | None = None,
    on_message: Callable[[int, str], None] | None = None,
    debug: bool = False,
) -> Outcome:
    """Follow one job (and the fallback jobs that replace it) to its settled outcome with the
    sensor's function and settings; without a daemon, apply the sensor's result here.

    ``on_change(job id, old state, new state)`` is called once per state seen, ``on_message``
    with each warning of the follower (a stuck job, a fallback, a retried import)."""
    engine = ws.engine
    storage = ws.storage()
    settings = ws.settings
    only = chain_ids(ws, job_id)
    run_config = dg.RunConfig(loggers=console_loggers(debug))
    cache = FollowCache()
    seen: dict[str, str] = {}
    said: set[str] = set()
    deadline = time.monotonic() + timeout_s
    refused = ledger_refused(ws)
    if refused and on_message:  # said now, not after a 10-hour job
        on_message(logging.ERROR, f"the import will fail: {refused}")
    while True:
        by_daemon = daemon_follows(ws.instance)
        plan = follow(engine=engine, cache=cache, storage=storage, settings=settings, only=only)
        if job_id not in plan.statuses and not plan.errors:
            raise OperationError(f"no batch job {job_id!r} in the {engine.name} engine")
        for jid, listed in sorted(plan.statuses.items()):
            if listed.state.value != seen.get(jid) and on_change:
                on_change(jid, seen.get(jid, "(new)"), listed.state.value)
            seen[jid] = listed.state.value
        current = last_of_chain(plan.statuses, job_id)
        status = plan.statuses.get(current)
        ran = []
        for level, message in plan.messages:
            # each warning once: a source down for an hour is not 3,600 lines
            if not by_daemon and level >= logging.WARNING and on_message and message not in said:
                said.add(message)
                on_message(level, message)
        if not by_daemon:  # apply the plan, as the daemon would
            result = plan.sensor_result()
            ran = apply_in_process(
                result, definitions=ws.definitions, instance=ws.instance, run_config=run_config
            )
        cache = plan.cache
        if ran:
            continue  # the next call settles what the runs just recorded
        if current in cache.settled and status is not None:
            return _outcome(ws, status, by_daemon)
        if status is not None and status.state == JobState.SUCCEEDED:
            refused = ledger_refused(ws)
            if refused:  # retrying cannot help: end now, with the cause
                raise OperationError(
                    f"{current} SUCCEEDED but its import cannot run: {refused}; fix it, then "
                    f"`robotoff-batch import {current}` (its output waits in staging)"
                )
        if time.monotonic() > deadline:
            state = status.state.value if status else "unknown"
            raise OperationError(
                f"batch job {current} still {state} after {timeout_s:.0f} s; it goes on and "
                f"nothing is lost: {who_imports(ws, current)}"
            )
        time.sleep(poll_s)


def ledger_refused(ws: Workspace) -> str | None:
    """Why the import ledger can never be read with this configuration (a malformed
    ``ROBOTOFF_DATABASE_URL``, refused credentials), or None: it is readable, or merely
    unavailable (an outage, retried)."""
    from robotoff_batch.predictions.conninfo import conninfo_problem
    from robotoff_batch.predictions.model import PredictionStoreAuthError

    url = getattr(ws.resource("prediction_store"), "database_url", None)
    problem = conninfo_problem(url) if url else None
    if problem:
        return f"ROBOTOFF_DATABASE_URL: {problem}"
    try:
        ws.store.imported_jobs(["-"])
    except PredictionStoreAuthError as exc:
        return str(exc)
    except Exception:  # an outage: the follower retries it
        return None
    return None


def _outcome(ws: Workspace, status: JobStatus, by_daemon: bool) -> Outcome:
    runs = ws.storage().finish_runs([status.job_id]).get(status.job_id, [])
    last = runs[0] if runs else None
    message = ""
    if last is not None and not last.succeeded:
        message = run_failure_message(ws.instance, last.run_id)
    imports = ws.imports(status.labels.get(JOB_TYPE_LABEL, ""))
    imported = None
    if imports and status.state == JobState.SUCCEEDED and last is not None and last.succeeded:
        imported = count(ws, job_id=status.job_id)
    return Outcome(
        status=status, imported=imported, message=message, by_daemon=by_daemon, imports=imports
    )


def run_import(
    ws: Workspace,
    *,
    job_id: str,
    debug: bool = False,
    retry_quarantined: bool = False,
    partial: bool = False,
    attempts: int = 3,
    retry_delay_s: float = 5.0,
    on_retry: Callable[[str], None] | None = None,
) -> tuple[bool, int, str]:
    """Record a job's outcome and import its output; with ``partial``, import a FAILED job's
    complete chunks (the predictions asset alone, tagged so that the ledger and the partition
    say partial); with ``retry_quarantined``, read the held-back rows of an imported job
    again.

    A job the ledger already holds (whole) is answered from the ledger: no run, no new
    materialization, nothing changed. An import that fails on a database outage (a refused
    connection, one lost mid-COPY) is tried again, ``attempts`` in all, ``retry_delay_s``
    doubling, ``on_retry(why)`` told each time; the error raised names the cause.

    Returns (already imported before, predictions in the database, run id or "").
    """
    store_error = _store_errors()
    if not (retry_quarantined or partial):
        try:
            record = ws.store.imported_job(job_id)
        except store_error as exc:
            raise OperationError(str(exc)) from None
        if record is not None and not record.partial:
            return True, count(ws, job_id=job_id), ""
    try:
        status = ws.engine.get_job(job_id=job_id)
    except JobNotFoundError:
        raise OperationError(f"no batch job {job_id!r} in the {ws.engine.name} engine") from None
    job_type = status.labels.get(JOB_TYPE_LABEL, "")
    if not ws.imports(job_type):
        raise OperationError(f"{job_id} is a {job_type} job: that job type imports nothing")
    try:
        already = job_id in ws.store.imported_jobs([job_id])
    except store_error as exc:
        raise OperationError(str(exc)) from None
    delay = retry_delay_s
    for attempt in range(1, attempts + 1):
        runs = ws.storage().finish_runs([job_id]).get(job_id, [])
        request = FinishRequest(
            job_id,
            job_type,
            attempt=len(runs),
            with_import=True,
            partial=partial,
            retry_quarantined=retry_quarantined,
        )
        result = apply_in_process(
            dg.SensorResult(
                run_requests=[request.run_request()],
                dynamic_partitions_requests=[
                    dg.AddDynamicPartitionsRequest(partitions_def_name(job_type), [job_id])
                ],
            ),
            definitions=ws.definitions,
            instance=ws.instance,
            run_config=dg.RunConfig(loggers=console_loggers(debug)),
        )[0]
        if result.success:
            return already, count(ws, job_id=job_id), result.run_id
        failure = run_failure(ws.instance, result.run_id)
        if not failure.outage or attempt == attempts:
            why = failure.message if failure.outage else str(failure)
            tried = f" (after {attempt} attempts)" if attempt > 1 else ""
            raise OperationError(f"{why}{tried}")
        if on_retry:
            on_retry(f"{failure.message}; attempt {attempt + 1} of {attempts} in {delay:.0f} s")
        time.sleep(delay)
        delay *= 2
    raise AssertionError("unreachable")  # pragma: no cover


def _store_errors() -> type[Exception]:
    from robotoff_batch.predictions.model import PredictionStoreError

    return PredictionStoreError


@dataclass(frozen=True)
class ImportState:
    """Whether a job's output is in the database, for ``status JOB``: ``imported``,
    ``partial``, ``not yet``, ``refused``, ``none`` (nothing to import), with why."""

    state: str
    why: str
    record: Any = None


def import_state(ws: Workspace, status: JobStatus) -> ImportState:
    """What the ledger and the job's finish runs say of its import."""
    job_id = status.job_id
    job_type = status.labels.get(JOB_TYPE_LABEL, "")
    if not ws.imports(job_type):
        return ImportState("none", f"the {job_type} job type imports nothing")
    record = ws.store.imported_job(job_id)
    if record is not None:
        state = "partial" if record.partial else "imported"
        return ImportState(state, "", record)
    runs = ws.storage().finish_runs([job_id]).get(job_id, [])
    last = runs[0] if runs else None
    if status.state != JobState.SUCCEEDED:
        if not status.state.is_terminal:
            return ImportState("not yet", f"the job is {status.state.value}")
        return ImportState(
            "none",
            f"the job ended {status.state.value} (`robotoff-batch import {job_id} --partial` "
            "imports the complete chunks of a FAILED job)",
        )
    if last is None:
        return ImportState("not yet", f"no import tried yet; {who_imports(ws, job_id)}")
    if not last.finished:
        return ImportState("not yet", f"its import is running (run {last.run_id})")
    if last.refused:
        return ImportState(
            "refused",
            f"{run_failure(ws.instance, last.run_id)} (run {last.run_id}); not retried: fix "
            f"it, then `robotoff-batch import {job_id}`",
        )
    if last.succeeded:
        return ImportState(
            "not yet",
            f"run {last.run_id} succeeded but the ledger has no import (database reset?): "
            f"`robotoff-batch import {job_id}` imports it again",
        )
    return ImportState(
        "not yet",
        f"the last attempt failed (run {last.run_id}): {run_failure(ws.instance, last.run_id)}; "
        f"{who_imports(ws, job_id)}",
    )


def who_imports(ws: Workspace, job_id: str) -> str:
    """Who records and imports a job next: the daemon's sensor when it runs, else the user."""
    if daemon_follows(ws.instance):
        return "the Dagster daemon's sensor follows it and imports it"
    return (
        f"no Dagster daemon follows it now: run `robotoff-batch import {job_id}` once it "
        "ended (or start `make ui`, whose sensor imports it)"
    )


def quarantined(ws: Workspace, *, job_id: str, limit: int = 1000) -> list[dict[str, Any]]:
    """The output rows a job's import held back (file, row, code, reason)."""
    return list(ws.store.quarantined_rows(job_id, limit))


def examples(ws: Workspace, *, job_id: str, limit: int = 5) -> list[dict[str, Any]]:
    """A few imported predictions of a job, flattened for display."""
    rows = ws.store.fetch_examples(batch_job_id=job_id, limit=limit)
    flat = []
    for row in rows:
        data = row.get("data") or {}
        flat.append({"barcode": row.get("barcode"), **data})
    return flat


def import_record(ws: Workspace, *, job_id: str) -> Any:
    """The ledger's record of a job's import (counts: from the output, inserted, kept,
    replaced, insights), or None when it is not imported."""
    return ws.store.imported_job(job_id)


def count(ws: Workspace, *, job_id: str) -> int:
    return int(ws.store.count_predictions(batch_job_id=job_id))
