"""What the CLI does, through the same Dagster instance the UI and the daemon use.

A launch from here is a run of the job type's launch job in the Dagster instance (so it shows
in the UI). Following a job to its outcome uses the sensor's own function,
:func:`robotoff_batch.follow.follow`: when a Dagster daemon runs the sensor, the CLI only
watches; when none does, the CLI applies the follower's plan itself (partitions, state
observations, the finish run in-process), so the UI shows the same history either way and a
job is never followed or imported twice.
"""

from __future__ import annotations

import logging
import os
import time
from collections.abc import Callable
from dataclasses import dataclass
from functools import cache
from pathlib import Path
from typing import Any

import dagster as dg

from robotoff_batch.batch.engine import JobNotFoundError, JobState, JobStatus
from robotoff_batch.follow import (
    DagsterFollowStorage,
    FinishRequest,
    FollowCache,
    FollowStorage,
    follow,
)
from robotoff_batch.names import (
    ATTEMPT_TAG,
    BATCH_JOB_ID_TAG,
    BATCH_JOB_SUBMISSION,
    FINISH_KIND,
    JOB_TYPE_LABEL,
    PRODUCTS,
    RETRY_QUARANTINED_TAG,
    RUN_KIND_TAG,
    finish_job_name,
    launch_job_name,
    partitions_def_name,
    predictions_asset_key,
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
_OLD_DEFAULT_YAML = "telemetry:\n  enabled: false\n"
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
    if not config.exists() or config.read_text() == _OLD_DEFAULT_YAML:
        config.write_text(DEFAULT_DAGSTER_YAML)
    return path


def instance() -> dg.DagsterInstance:
    dagster_home()
    return dg.DagsterInstance.get()


@cache
def _definitions() -> dg.Definitions:
    from robotoff_batch.definitions import build_definitions

    return build_definitions()


@cache
def _resource(key: str) -> Any:
    """An initialised resource of the code location (environment variables resolved)."""
    from robotoff_batch.resources import initialized

    resources = _definitions().resources or {}
    return initialized(resources[key])


def reload() -> None:
    """Forget the code location and resources read so far: the next operation reads them
    again from the environment (a long-lived caller whose environment changed; tests)."""
    _definitions.cache_clear()
    _resource.cache_clear()


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


def launch(*, job_type: str, params: dict[str, Any], debug: bool = False) -> LaunchOutcome:
    """Extract, stage and submit one batch job (a run of ``launch_<job type>``)."""
    from robotoff_batch.assets.launch import launch_op_name
    from robotoff_batch.job_types import load_registry

    registry = load_registry()
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
    job = _definitions().resolve_job_def(launch_job_name(job_type))
    result = job.execute_in_process(
        run_config=dg.RunConfig(
            ops={launch_op_name(jt.key_prefix): launch_config}, loggers=console_loggers(debug)
        ),
        instance=instance(),
        raise_on_error=False,
    )
    if not result.success:
        raise OperationError(run_failure_message(instance(), result.run_id))
    job_id, rows = "", 0
    for event in result.get_asset_materialization_events():
        mat = event.materialization
        meta = mat.metadata
        if mat.asset_key.path[-1] == PRODUCTS:
            rows = int(meta["rows"].value)  # type: ignore[arg-type]
        if mat.asset_key.path[-1] == BATCH_JOB_SUBMISSION:
            job_id = str(meta["batch_job_id"].value)
    return LaunchOutcome(job_id=job_id, rows=rows, run_id=result.run_id)


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


def _job_types() -> dict[str, bool]:
    from robotoff_batch.job_types import load_registry

    # the finish run imports (or hands over to Robotoff) for the job types that import
    return {name: r.job_type.imports for name, r in load_registry().items()}


def _storage(inst: dg.DagsterInstance) -> FollowStorage:
    return DagsterFollowStorage(inst, _resource("prediction_store"))


def execute_finish(
    inst: dg.DagsterInstance,
    request: FinishRequest,
    *,
    debug: bool = False,
    tags: dict[str, str] | None = None,
) -> dg.ExecuteInProcessResult:
    """Run a finish run in this process (the sensor's run, when no daemon runs)."""
    from robotoff_batch.names import batch_job_asset_key

    name = partitions_def_name(request.job_type)
    if not inst.has_dynamic_partition(name, request.job_id):
        inst.add_dynamic_partitions(name, [request.job_id])
    selection = [batch_job_asset_key(request.job_type)]
    if request.with_import:
        selection.append(predictions_asset_key(request.job_type))
    job = _definitions().resolve_job_def(finish_job_name(request.job_type))
    return job.execute_in_process(
        instance=inst,
        partition_key=request.job_id,
        asset_selection=selection,
        raise_on_error=False,
        tags={
            BATCH_JOB_ID_TAG: request.job_id,
            RUN_KIND_TAG: FINISH_KIND,
            "dagster/run_key": request.run_key,
            ATTEMPT_TAG: str(request.attempt + 1),
            **(tags or {}),
        },
        run_config=dg.RunConfig(loggers=console_loggers(debug)),
    )


def follow_job(
    *,
    job_id: str,
    timeout_s: float,
    poll_s: float = 1.0,
    on_change: Callable[[str, str], None] | None = None,
    on_message: Callable[[int, str], None] | None = None,
    debug: bool = False,
) -> Outcome:
    """Follow one job to its settled outcome with the sensor's function (see the module doc)."""
    inst = instance()
    _definitions()  # fail early on an invalid job config
    engine = _resource("batch_engine").get_engine()
    storage = _storage(inst)
    job_types = _job_types()
    cache = FollowCache()
    last_state: str | None = None
    deadline = time.monotonic() + timeout_s
    by_daemon = False
    while True:
        by_daemon = daemon_follows(inst)
        plan = follow(
            engine=engine, cache=cache, storage=storage, job_types=job_types, only={job_id}
        )
        status = plan.statuses.get(job_id)
        if status is None and not plan.errors:
            raise OperationError(f"no batch job {job_id!r} in the {engine.name} engine")
        if status is not None and status.state.value != last_state:
            if on_change:
                on_change(last_state or "(new)", status.state.value)
            last_state = status.state.value
        if not by_daemon:  # apply the plan, as the daemon would
            for jt, ids in plan.new_partitions.items():
                inst.add_dynamic_partitions(partitions_def_name(jt), ids)
            for observation in plan.observations:
                inst.report_runless_asset_event(observation)
            for level, message in plan.messages:
                if level >= logging.WARNING and on_message:
                    on_message(level, message)
            for request in plan.finish_requests:
                execute_finish(inst, request, debug=debug)
        cache = plan.cache
        if plan.finish_requests and not by_daemon:
            continue  # the next call settles what the finish run just recorded
        if job_id in cache.settled and status is not None:
            return _outcome(inst, status, by_daemon)
        if time.monotonic() > deadline:
            state = status.state.value if status else "unknown"
            raise OperationError(
                f"batch job {job_id} still {state} after {timeout_s:.0f} s; it goes on and "
                "nothing is lost: the sensor of `make ui` / the Dagster daemon follows and "
                f"imports it, or run `robotoff-batch import {job_id}` once it ended"
            )
        time.sleep(poll_s)


def _outcome(inst: dg.DagsterInstance, status: JobStatus, by_daemon: bool) -> Outcome:
    runs = _storage(inst).finish_runs([status.job_id]).get(status.job_id, [])
    last = runs[0] if runs else None
    message = ""
    if last is not None and not last.succeeded:
        message = run_failure_message(inst, last.run_id)
    imports = _job_types().get(status.labels.get(JOB_TYPE_LABEL, ""), True)
    imported = None
    if imports and status.state == JobState.SUCCEEDED and last is not None and last.succeeded:
        imported = count(job_id=status.job_id)
    return Outcome(
        status=status, imported=imported, message=message, by_daemon=by_daemon, imports=imports
    )


def run_import(
    *, job_id: str, debug: bool = False, retry_quarantined: bool = False
) -> tuple[bool, int, str]:
    """Record a job's outcome and import its output (again: a no-op when imported, unless
    ``retry_quarantined``: its held-back rows are then read and checked again).

    Returns (already imported before, predictions in the database, run id).
    """

    engine = _resource("batch_engine").get_engine()
    try:
        status = engine.get_job(job_id=job_id)
    except JobNotFoundError:
        raise OperationError(f"no batch job {job_id!r}") from None
    job_type = status.labels.get(JOB_TYPE_LABEL, "")
    if not _job_types().get(job_type, True):
        raise OperationError(f"{job_id} is a {job_type} job: that job type imports nothing")
    inst = instance()
    store = _resource("prediction_store").get_store()
    already = job_id in store.imported_jobs([job_id])
    runs = _storage(inst).finish_runs([job_id]).get(job_id, [])
    request = FinishRequest(job_id, job_type, attempt=len(runs), with_import=True)
    tags = {RETRY_QUARANTINED_TAG: "true"} if retry_quarantined else None
    result = execute_finish(inst, request, debug=debug, tags=tags)
    if not result.success:
        raise OperationError(run_failure_message(inst, result.run_id))
    return already, count(job_id=job_id), result.run_id


def job_type_imports(job_type: str) -> bool:
    """Whether a job type's finish run imports (or hands over) its output."""
    return _job_types().get(job_type, True)


def quarantined(*, job_id: str, limit: int = 1000) -> list[dict[str, Any]]:
    """The output rows a job's import held back (file, row, code, reason)."""
    return list(_store().quarantined_rows(job_id, limit))


def _store() -> Any:
    return _resource("prediction_store").get_store()


def examples(*, job_id: str, limit: int = 5) -> list[dict[str, Any]]:
    """A few imported predictions of a job, flattened for display."""
    rows = _store().fetch_examples(batch_job_id=job_id, limit=limit)
    flat = []
    for row in rows:
        data = row.get("data") or {}
        flat.append({"barcode": row.get("barcode"), **data})
    return flat


def import_record(*, job_id: str) -> Any:
    """The ledger's record of a job's import (counts: from the output, inserted, kept,
    replaced, insights), or None when it is not imported."""
    return _store().imported_job(job_id)


def count(*, job_id: str) -> int:
    return int(_store().count_predictions(batch_job_id=job_id))
