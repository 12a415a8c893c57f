"""What the CLI does, through the same Dagster instance the UI and the daemon use.

A launch from here is a run of the job type's launch job in the Dagster instance (so it shows
in the UI); following a job reports the same asset events the sensor would.
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

from robotoff_batch.batch.engine import JobNotFoundError, JobStatus
from robotoff_batch.paths import home_dir
from robotoff_batch.tracking import (
    import_job_name,
    partitions_def_name,
    poll_jobs,
    predictions_asset_key,
)

logger = logging.getLogger(__name__)


# The CLI shows Dagster's INFO messages (progress), not its DEBUG event stream.
QUIET_LOGGERS = {"console": {"config": {"log_level": "INFO"}}}


class OperationError(RuntimeError):
    """A CLI operation failed; the message is for the user."""


@dataclass(frozen=True)
class LaunchOutcome:
    job_id: str
    rows: int
    run_id: str


@dataclass(frozen=True)
class FollowResult:
    final: JobStatus
    changes: list[tuple[str, str]]


@dataclass(frozen=True)
class ImportSummary:
    job_id: str
    predictions: int
    already_imported: bool
    run_id: str


def dagster_home() -> Path:
    """``DAGSTER_HOME``, defaulting to <ROBOTOFF_BATCH_HOME>/dagster_home (SQLite storage)."""
    path = Path(os.environ.setdefault("DAGSTER_HOME", str(home_dir() / "dagster_home")))
    path.mkdir(parents=True, exist_ok=True)
    config = path / "dagster.yaml"
    if not config.exists():  # SQLite storage under DAGSTER_HOME, said explicitly
        config.write_text("telemetry:\n  enabled: false\n")
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
    resources = _definitions().resources or {}
    return resources[key].process_config_and_initialize()


def _failure_message(result: dg.ExecuteInProcessResult) -> str:
    for event in result.all_events:
        if event.is_step_failure and event.step_failure_data:
            data = event.step_failure_data
            if data.user_failure_data and data.user_failure_data.description:
                return data.user_failure_data.description
            if data.error:
                return data.error.message.strip()
    return f"run {result.run_id} failed"


def launch(*, job_type: str, params: dict[str, Any]) -> LaunchOutcome:
    """Extract, stage and submit one batch job (a run of ``launch_<job type>``)."""
    from robotoff_batch.assets.assets import launch_job_name
    from robotoff_batch.job_types import load_registry

    registry = load_registry()
    if job_type not in registry:
        raise OperationError(f"unknown job type {job_type!r} (known: {', '.join(registry)})")
    launch_cls = registry[job_type].job_type.launch_config
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
        raise OperationError(f"invalid launch parameters: {exc}") from None
    defs = _definitions()
    job = defs.resolve_job_def(launch_job_name(job_type))
    prefix = job_type.replace("-", "_")
    result = job.execute_in_process(
        run_config=dg.RunConfig(ops={f"{prefix}__products": launch_config}, loggers=QUIET_LOGGERS),
        instance=instance(),
        raise_on_error=False,
    )
    if not result.success:
        raise OperationError(_failure_message(result))
    job_id, rows = "", 0
    for event in result.get_asset_materialization_events():
        mat = event.materialization
        meta = mat.metadata
        if mat.asset_key.path[-1] == "products":
            rows = int(meta["rows"].value)  # type: ignore[arg-type]
        if mat.asset_key.path[-1] == "batch_job_submission":
            job_id = str(meta["batch_job_id"].value)
    return LaunchOutcome(job_id=job_id, rows=rows, run_id=result.run_id)


def follow(
    *,
    job_type: str,
    job_id: str,
    timeout_s: float,
    poll_s: float = 1.0,
    on_change: Callable[[str, str], None] | None = None,
) -> FollowResult:
    """Follow one job to its end, recording its states on its partition like the sensor.

    Registering the partition here makes this process the job's follower: the sensor skips
    jobs whose partition already exists, so the job is followed and imported once.
    """
    inst = instance()
    _definitions()  # fail early on an invalid job config
    engine = _resource("batch_engine").get_engine()
    name = partitions_def_name(job_type)
    if not inst.has_dynamic_partition(name, job_id):
        inst.add_dynamic_partitions(name, [job_id])
    tracked: dict[str, dict[str, str]] = {job_id: {"job_type": job_type, "state": "(new)"}}
    changes: list[tuple[str, str]] = []
    deadline = time.monotonic() + timeout_s
    while True:
        result = poll_jobs(engine=engine, tracked=tracked, known_partitions={})
        for event in result.asset_events:
            inst.report_runless_asset_event(event)
        for _, old, new in result.changes:
            changes.append((old, new))
            if on_change:
                on_change(old, new)
        tracked = result.tracked
        if job_id not in tracked:
            try:
                final = engine.get_job(job_id=job_id)
            except JobNotFoundError as exc:
                raise OperationError(f"batch job {job_id} was deleted") from exc
            return FollowResult(final=final, changes=changes)
        if time.monotonic() > deadline:
            raise OperationError(
                f"batch job {job_id} still {tracked[job_id]['state']} after "
                f"{timeout_s:.0f} s; it goes on: `robotoff-batch status {job_id}`"
            )
        time.sleep(poll_s)


def run_import(*, job_id: str) -> ImportSummary:
    """Import a SUCCEEDED job's output (a run of ``import_<job type>`` for its partition)."""
    defs = _definitions()
    engine = _resource("batch_engine").get_engine()
    try:
        status = engine.get_job(job_id=job_id)
    except JobNotFoundError:
        raise OperationError(f"no batch job {job_id!r}") from None
    job_type = status.labels.get("job-type", "")
    inst = instance()
    name = partitions_def_name(job_type)
    if not inst.has_dynamic_partition(name, job_id):
        inst.add_dynamic_partitions(name, [job_id])
    job = defs.resolve_job_def(import_job_name(job_type))
    result = job.execute_in_process(
        instance=inst,
        partition_key=job_id,
        raise_on_error=False,
        run_config=dg.RunConfig(loggers=QUIET_LOGGERS),
    )
    if not result.success:
        raise OperationError(_failure_message(result))
    mats = [
        e.materialization
        for e in result.get_asset_materialization_events()
        if e.materialization.asset_key == predictions_asset_key(job_type)
    ]
    meta = mats[0].metadata if mats else {}
    return ImportSummary(
        job_id=job_id,
        predictions=int(meta["predictions_imported"].value) if meta else 0,  # type: ignore[arg-type]
        already_imported=bool(meta["already_imported"].value) if meta else False,
        run_id=result.run_id,
    )


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


def count(*, job_id: str) -> int:
    return int(_store().count_predictions(batch_job_id=job_id))
