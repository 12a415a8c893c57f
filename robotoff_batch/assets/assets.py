"""Assets of a job type, generated from the registry (a new job type reuses all of this).

    <type>/products ─> <type>/staged_input ─> <type>/batch_job_submission      (one launch run)
        ─> <type>/batch_job [partition = batch job id; reported by the sensor]
        ─> <type>/predictions [partition = batch job id; requested by the sensor]

A launch is one run of the first three assets (from the UI, a schedule or the CLI). The job it
submits becomes a dynamic partition that the sensor registers; the batch job's state history
and its import live on that partition.
"""

# No `from __future__ import annotations`: Dagster reads the config class from the annotation
# of functions built inside the factory.

import json
import logging
import os
import shutil
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import dagster as dg
import pyarrow.parquet as pq

from robotoff_batch import pipeline
from robotoff_batch.batch.request import make_job_id, request_to_json
from robotoff_batch.config.loader import load_job_config
from robotoff_batch.extraction import ExtractionError, check_dump
from robotoff_batch.job_types import RegisteredJobType
from robotoff_batch.job_types.base import OutputError
from robotoff_batch.paths import home_dir
from robotoff_batch.predictions.store import PredictionImportError
from robotoff_batch.resources import (
    BatchEngineResource,
    LaunchSettingsResource,
    PredictionStoreResource,
    ProductDumpResource,
    StagingResource,
)
from robotoff_batch.tracking import (
    OWNER_LABEL,
    batch_job_asset_key,
    import_job_name,
    partitions_def_name,
    predictions_asset_key,
)

logger = logging.getLogger(__name__)


def import_retry_policy() -> dg.RetryPolicy:
    """Retries of an import whose database is unreachable (refused output is never retried)."""
    delay = float(os.environ.get("ROBOTOFF_BATCH_IMPORT_RETRY_DELAY_S", "30"))
    return dg.RetryPolicy(max_retries=3, delay=delay, backoff=dg.Backoff.EXPONENTIAL)


def launch_job_name(job_type: str) -> str:
    return f"launch_{job_type.replace('-', '_')}"


def run_job_id(context: dg.AssetExecutionContext, job_type: str) -> str:
    """The batch job id of this launch run: same run (and step retries) -> same id."""
    record = context.instance.get_run_record_by_id(context.run_id)
    launched_at = record.create_timestamp if record else datetime.now(UTC)
    return make_job_id(job_type, launched_at=launched_at, nonce=context.run_id)


def work_dir(job_id: str) -> Path:
    return home_dir() / "work" / job_id


def _preview(path: Path, rows: int = 5) -> str:
    table = pq.ParquetFile(path).read_row_group(0).slice(0, rows).to_pylist()
    if not table:
        return "(empty)"
    cols = list(table[0])
    lines = ["| " + " | ".join(cols) + " |", "|" + "---|" * len(cols)]
    for row in table:
        cells = [str(row[c]).replace("|", "\\|").replace("\n", " ")[:80] for c in cols]
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


def build_job_type_definitions(registered: RegisteredJobType) -> dict[str, Any]:
    """Assets, checks, jobs and schedule of one job type."""
    jt = registered.job_type
    prefix = jt.key_prefix
    launch_cls = jt.launch_config
    partitions = dg.DynamicPartitionsDefinition(name=partitions_def_name(jt.name))
    products_key = dg.AssetKey([prefix, "products"])
    staged_key = dg.AssetKey([prefix, "staged_input"])
    submission_key = dg.AssetKey([prefix, "batch_job_submission"])
    batch_job_key = batch_job_asset_key(jt.name)
    predictions_key = predictions_asset_key(jt.name)

    @dg.asset(
        key=products_key,
        group_name=prefix,
        description=f"Products selected for a {jt.name} batch job, extracted with DuckDB from "
        "the OFF Parquet dump.",
        kinds={"duckdb", "parquet"},
    )
    def products(
        context: dg.AssetExecutionContext,
        config: launch_cls,  # type: ignore[valid-type]  # the job type's dg.Config class
        product_dump: ProductDumpResource,
    ) -> dg.MaterializeResult:
        job_id = run_job_id(context, jt.name)
        try:
            check_dump(dump_path=product_dump.path, required_columns=jt.required_columns)
            out = work_dir(job_id)
            extracted = jt.extract(
                dump_path=product_dump.path, params=config, work_dir=out, progress=context.log.info
            )
        except ExtractionError as exc:
            raise dg.Failure(description=str(exc)) from None
        if extracted.rows == 0:
            shutil.rmtree(work_dir(job_id), ignore_errors=True)
            raise dg.Failure(
                description=f"the selection matched no product in {product_dump.path} "
                f"({config.model_dump()}): no batch job is launched."  # type: ignore[attr-defined]
            )
        context.log.info("extracted %s products for batch job %s", extracted.rows, job_id)
        return dg.MaterializeResult(
            metadata={
                "batch_job_id": job_id,
                "rows": dg.MetadataValue.int(extracted.rows),
                "dump_path": dg.MetadataValue.path(product_dump.path),
                "selection": dg.MetadataValue.json(config.model_dump()),  # type: ignore[attr-defined]
                "preview": dg.MetadataValue.md(_preview(extracted.files["input.parquet"])),
                **{k: v for k, v in extracted.metadata.items()},
            }
        )

    @dg.asset(
        key=staged_key,
        deps=[products_key],
        group_name=prefix,
        description="The batch job's input files on the staging area (create-only uploads).",
        kinds={"gcs"},
    )
    def staged_input(
        context: dg.AssetExecutionContext, staging: StagingResource
    ) -> dg.MaterializeResult:
        job_id = run_job_id(context, jt.name)
        out = work_dir(job_id)
        files = {p.name: p for p in sorted(out.glob("*.parquet"))}
        if "input.parquet" not in files:
            raise dg.Failure(f"no extracted input in {out}: materialize {products_key} first")
        area = staging.get_staging()
        try:
            uris = pipeline.stage_files(staging=area, job_type=jt.name, job_id=job_id, files=files)
        except pipeline.PipelineError as exc:
            raise dg.Failure(description=str(exc)) from None
        return dg.MaterializeResult(
            metadata={
                "batch_job_id": job_id,
                "job_uri": area.job_uri(job_type=jt.name, job_id=job_id),
                "files": dg.MetadataValue.json(uris),
                "bytes": dg.MetadataValue.int(sum(p.stat().st_size for p in files.values())),
            }
        )

    @dg.asset(
        key=submission_key,
        deps=[staged_key],
        group_name=prefix,
        description=f"Submits the {jt.name} Cloud Batch job built from job_configs/"
        f"{jt.name}.yaml (validated again at launch).",
        kinds={"googlecloud"},
    )
    def batch_job_submission(
        context: dg.AssetExecutionContext,
        staging: StagingResource,
        batch_engine: BatchEngineResource,
        launch_settings: LaunchSettingsResource,
    ) -> dg.MaterializeResult:
        job_id = run_job_id(context, jt.name)
        config = load_job_config(registered.config_path).config  # the file as it is now
        area = staging.get_staging()
        job_uri = area.job_uri(job_type=jt.name, job_id=job_id)
        staged = {p.name: f"{job_uri}/{p.name}" for p in sorted(work_dir(job_id).glob("*.parquet"))}
        env = pipeline.container_environment(
            job_uri=job_uri, staged=staged, webhook_url=launch_settings.webhook_url
        )
        engine = batch_engine.get_engine()
        labels = {OWNER_LABEL: context.run_id}
        try:
            status, request = pipeline.submit_job(
                engine=engine,
                config=config,
                job_type=jt.name,
                job_id=job_id,
                project=batch_engine.project,
                environment=env,
                labels=labels,
            )
        except pipeline.PipelineError as exc:
            raise dg.Failure(description=str(exc)) from None
        except dg.DagsterExecutionInterruptedError:
            # The run was cancelled while submitting: leave no orphan job behind.
            context.log.warning("run cancelled during submission; cancelling %s", job_id)
            engine.cancel(job_id=job_id)
            raise
        shutil.rmtree(work_dir(job_id), ignore_errors=True)
        cost = config.cost
        context.log.info("submitted %s (%s): %s", job_id, status.state.value, cost.explain())
        return dg.MaterializeResult(
            metadata={
                "batch_job_id": job_id,
                "engine": engine.name,
                "state_at_submission": status.state.value,
                "cost_ceiling_usd": dg.MetadataValue.float(config.max_cost_usd),
                "worst_case_cost_usd": dg.MetadataValue.float(round(cost.total_usd, 2)),
                "worst_case_arithmetic": cost.explain(),
                "launch_config": dg.MetadataValue.json(config.model_dump(mode="json")),
                "request": dg.MetadataValue.json(json.loads(request_to_json(request))),
                "logs": dg.MetadataValue.url(engine.logs_uri(job_id=job_id)),
            }
        )

    batch_job = dg.AssetSpec(
        key=batch_job_key,
        deps=[submission_key],
        group_name=prefix,
        partitions_def=partitions,
        description="One launched batch job per partition; the sensor records its states "
        "(QUEUED -> SCHEDULED -> RUNNING -> SUCCEEDED/FAILED) and materializes it on success.",
        kinds={"googlecloud"},
    )

    check_count = dg.AssetCheckSpec(
        name="rows_imported_match_output",
        asset=predictions_key,
        description="Predictions in the database = output rows that carry a change.",
    )
    check_dupes = dg.AssetCheckSpec(
        name="no_duplicate_predictions",
        asset=predictions_key,
        description="At most one prediction per product, type and batch job.",
    )

    @dg.asset(
        key=predictions_key,
        deps=[batch_job_key],
        group_name=prefix,
        partitions_def=partitions,
        retry_policy=import_retry_policy(),
        check_specs=[check_count, check_dupes],
        description=f"The batch job's output imported into Robotoff's `prediction` table as "
        f"`{jt.prediction_type}` predictions (one transaction per job, at most once).",
        kinds={"postgres"},
    )
    def predictions(
        context: dg.AssetExecutionContext,
        staging: StagingResource,
        batch_engine: BatchEngineResource,
        prediction_store: PredictionStoreResource,
    ) -> dg.MaterializeResult:
        job_id = context.partition_key
        area = staging.get_staging()
        engine = batch_engine.get_engine()
        store = prediction_store.get_store()
        try:
            outcome = pipeline.import_job_output(
                engine=engine, staging=area, store=store, job_type=jt, job_id=job_id
            )
        except (pipeline.PipelineError, OutputError, PredictionImportError) as exc:
            # Bad output is not transient: no retry (an unreachable database is retried).
            raise dg.Failure(
                description=f"import of {job_id} refused: {exc}", allow_retries=False
            ) from None
        expected = pipeline.expected_predictions(staging=area, job_type=jt, job_id=job_id)
        in_db = store.count_predictions(batch_job_id=job_id)
        duplicates = store.duplicate_predictions(batch_job_id=job_id)
        examples = store.fetch_examples(batch_job_id=job_id, limit=5)
        return dg.MaterializeResult(
            metadata={
                "batch_job_id": job_id,
                "predictions_imported": dg.MetadataValue.int(outcome.predictions),
                "already_imported": outcome.already_imported,
                "output_files": outcome.output_files,
                "output_rows": outcome.source_rows,
                "unchanged_rows_skipped": outcome.skipped_rows,
                "examples": dg.MetadataValue.json(examples),
            },
            check_results=[
                dg.AssetCheckResult(
                    check_name=check_count.name,
                    passed=in_db == expected,
                    metadata={"in_database": in_db, "expected_from_output": expected},
                ),
                dg.AssetCheckResult(
                    check_name=check_dupes.name,
                    passed=duplicates == 0,
                    metadata={"duplicate_groups": duplicates},
                ),
            ],
        )

    launch_job = dg.define_asset_job(
        name=launch_job_name(jt.name),
        selection=dg.AssetSelection.assets(products_key, staged_key, submission_key),
        description=f"Launch one {jt.name} batch job: extract, stage, submit.",
        # The steps hand files over through the local work directory.
        executor_def=dg.in_process_executor,
        tags={"job_type": jt.name},
    )
    import_job = dg.define_asset_job(
        name=import_job_name(jt.name),
        selection=dg.AssetSelection.assets(predictions_key),
        partitions_def=partitions,
        description=f"Import one {jt.name} batch job's output (the sensor requests it).",
        tags={"job_type": jt.name},
    )
    schedules = []
    if registered.config.schedule:
        schedules.append(
            dg.ScheduleDefinition(
                name=f"{prefix}_schedule",
                cron_schedule=registered.config.schedule,
                job=launch_job,
                default_status=dg.DefaultScheduleStatus.STOPPED,
                execution_timezone="UTC",
                description=f"Launches {jt.name} on job_configs/{jt.name}.yaml's schedule.",
            )
        )
    return {
        "assets": [products, staged_input, batch_job_submission, batch_job, predictions],
        "jobs": [launch_job, import_job],
        "schedules": schedules,
        "partitions": partitions,
    }


class CancelConfig(dg.Config):
    batch_job_id: str


@dg.op(description="Cancel (delete) a batch job; a job already gone is not an error.")
def cancel_batch_job_op(
    context: dg.OpExecutionContext, config: CancelConfig, batch_engine: BatchEngineResource
) -> None:
    batch_engine.get_engine().cancel(job_id=config.batch_job_id)
    context.log.info("cancelled %s", config.batch_job_id)


@dg.job(description="Cancel a running batch job (Cloud Batch: delete it).")
def cancel_batch_job() -> None:
    cancel_batch_job_op()
