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

import logging
import os
import time
from collections.abc import Callable
from dataclasses import dataclass, field
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

#: dagster.yaml of the embedded default instance (SQLite under DAGSTER_HOME): runs are
#: dequeued every second, and a run stuck starting is failed (the follower then retries it).
DEFAULT_DAGSTER_YAML = """\
# Written by robotoff-batch for the embedded default instance (SQLite under DAGSTER_HOME).
telemetry:
  enabled: false
run_queue:
  dequeue_interval_seconds: 1
run_monitoring:
  enabled: true
  start_timeout_seconds: 180
  poll_interval_seconds: 30
"""
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
    if not config.exists():
        config.write_text(DEFAULT_DAGSTER_YAML)
    return path


def instance() -> dg.DagsterInstance:
    dagster_home()
    return dg.DagsterInstance.get()


@dataclass
class Workspace:
    """The code location, its job types and the Dagster instance a command works with: from
    the environment for the CLI (:meth:`from_env`), the UI's and the daemon's."""

    definitions: dg.Definitions
    instance: dg.DagsterInstance
    registry: list[RegisteredJobType]
    _resources: dict[str, Any] = field(default_factory=dict, repr=False)

    @classmethod
    def from_env(cls) -> Workspace:
        """The code location of this environment (job_configs/, ``ROBOTOFF_BATCH_*``): an
        invalid job config fails here, before anything is launched."""
        from robotoff_batch.definitions import build_definitions
        from robotoff_batch.job_types import load_registry

        registry = list(load_registry().values())
        return cls(build_definitions(registry=registry), instance(), registry)

    def resource(self, key: str) -> Any:
        """An initialised resource of the code location (environment variables resolved)."""
        from robotoff_batch.resources import initialized

        if key not in self._resources:
            self._resources[key] = initialized((self.definitions.resources or {})[key])
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


def run_failure_message(inst: dg.DagsterInstance, run_id: str) -> str:
    """The reason a run failed, as its failed step said it (one paragraph, no stack trace)."""
    for record in inst.get_records_for_run(
        run_id, of_type={dg.DagsterEventType.STEP_FAILURE, dg.DagsterEventType.RUN_FAILURE}
    ).records:
        event = record.event_log_entry.dagster_event
        if event is None:
            continue
        if event.is_step_failure and event.step_failure_data:
            data = event.step_failure_data
            if data.user_failure_data and data.user_failure_data.description:
                return data.user_failure_data.description
            if data.error:
                return f"{data.error.cls_name}: {data.error.message.strip()}"
        if event.message:
            return event.message
    return f"run {run_id} failed"


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
    unknown = sorted(set(params) - set(launch_cls.model_fields))
    if unknown:
        raise OperationError(
            f"unknown launch parameter(s) {unknown} for {job_type}; "
            f"known: {', '.join(launch_cls.model_fields)}"
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
    errors = getattr(exc, "errors", None)
    if callable(errors):
        parts = []
        for error in errors():
            where = ".".join(str(x) for x in error.get("loc", ())) or "value"
            parts.append(f"{where}: {error.get('msg')} (got {error.get('input')!r})")
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
    deadline = time.monotonic() + timeout_s
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
        if not by_daemon:  # apply the plan, as the daemon would
            for level, message in plan.messages:
                if level >= logging.WARNING and on_message:
                    on_message(level, message)
            result = plan.sensor_result()
            ran = apply_in_process(
                result, definitions=ws.definitions, instance=ws.instance, run_config=run_config
            )
        cache = plan.cache
        if ran:
            continue  # the next call settles what the runs just recorded
        if current in cache.settled and status is not None:
            return _outcome(ws, status, by_daemon)
        if time.monotonic() > deadline:
            state = status.state.value if status else "unknown"
            raise OperationError(
                f"batch job {current} still {state} after {timeout_s:.0f} s; it goes on and "
                "nothing is lost: the sensor of `make ui` / the Dagster daemon follows and "
                f"imports it, or run `robotoff-batch import {current}` once it ended"
            )
        time.sleep(poll_s)


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
) -> tuple[bool, int, str]:
    """Record a job's outcome and import its output (again: a no-op when imported, unless
    ``retry_quarantined``: its held-back rows are then read and checked again); with
    ``partial``, import a FAILED job's complete chunks (the predictions asset alone, tagged
    so that the ledger and the partition say partial).

    Returns (already imported before, predictions in the database, run id).
    """
    try:
        status = ws.engine.get_job(job_id=job_id)
    except JobNotFoundError:
        raise OperationError(f"no batch job {job_id!r}") from None
    job_type = status.labels.get(JOB_TYPE_LABEL, "")
    if not ws.imports(job_type):
        raise OperationError(f"{job_id} is a {job_type} job: that job type imports nothing")
    already = job_id in ws.store.imported_jobs([job_id])
    runs = ws.storage().finish_runs([job_id]).get(job_id, [])
    request = FinishRequest(job_id, job_type, attempt=len(runs), with_import=True)
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
    if not result.success:
        raise OperationError(run_failure_message(ws.instance, result.run_id))
    return already, count(ws, job_id=job_id), result.run_id


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
