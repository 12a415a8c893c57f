"""The launch step of a job type: extract -> stage -> submit, one step that cannot be split.

    <type>/products ─> <type>/staged_input ─> <type>/batch_job_submission

The three assets are one ``multi_asset`` that cannot be subset: a launch is one run of one
step, the files go from extraction to staging inside that step (a temporary directory, never a
shared one), and materializing one of the three alone is refused by Dagster. The run is tagged
with the batch job id it submits, and the job is labelled with the run id, so each links to the
other. The sensor registers the job's partition on its next tick.
"""

# No `from __future__ import annotations`: Dagster reads the config class from the annotation
# of the function built inside the factory.

import json
import tempfile
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import dagster as dg
import pyarrow.parquet as pq

from robotoff_batch.batch import submit
from robotoff_batch.batch.request import make_job_id, request_to_json
from robotoff_batch.config.loader import load_job_config
from robotoff_batch.extraction import ExtractionError, check_dump
from robotoff_batch.job_types import RegisteredJobType
from robotoff_batch.job_types.base import StagedFilesError
from robotoff_batch.names import (
    BATCH_JOB_ID_TAG,
    BATCH_JOB_SUBMISSION,
    LAUNCH_KIND,
    OWNER_LABEL,
    PRODUCTS,
    RUN_KIND_TAG,
    STAGED_INPUT,
    launch_job_name,
)
from robotoff_batch.resources import (
    BatchEngineResource,
    ProductDumpResource,
    StagingResource,
)


def launch_op_name(job_type_prefix: str) -> str:
    """Name of the launch step (the key of its config in run config)."""
    return f"{job_type_prefix}__launch"


def run_job_id(context: dg.AssetExecutionContext, job_type: str) -> str:
    """The batch job id of this launch run: same run (and step retries) -> same id."""
    record = context.instance.get_run_record_by_id(context.run_id)
    launched_at = record.create_timestamp if record else datetime.now(UTC)
    return make_job_id(job_type, launched_at=launched_at, nonce=context.run_id)


def submit_or_fail(**kwargs: Any) -> tuple[Any, Any]:
    """:func:`submit.submit_job`, its refusal a non-retried Dagster failure."""
    try:
        return submit.submit_job(**kwargs)
    except submit.PipelineError as exc:
        raise dg.Failure(description=str(exc), allow_retries=False) from None


def preview_table(path: Path, rows: int = 5) -> dg.MetadataValue:
    """The first rows of a Parquet file, as a table (long texts cut)."""
    table = pq.ParquetFile(path).read_row_group(0).slice(0, rows)
    columns = [dg.TableColumn(name, "string") for name in table.column_names]
    records = [
        dg.TableRecord({k: ("" if v is None else str(v))[:120] for k, v in row.items()})
        for row in table.to_pylist()
    ]
    return dg.MetadataValue.table(records=records, schema=dg.TableSchema(columns=columns))


def build_launch(registered: RegisteredJobType) -> dict[str, Any]:
    """The launch multi_asset, its job and its schedule."""
    jt = registered.job_type
    prefix = jt.key_prefix
    products_key = dg.AssetKey([prefix, PRODUCTS])
    staged_key = dg.AssetKey([prefix, STAGED_INPUT])
    submission_key = dg.AssetKey([prefix, BATCH_JOB_SUBMISSION])
    specs = [
        dg.AssetSpec(
            products_key,
            description=f"Products selected for a {jt.name} batch job, extracted with DuckDB "
            "from the OFF Parquet dump (with what the engine that runs needs, nothing more).",
            kinds={"duckdb", "parquet"},
            group_name=prefix,
        ),
        dg.AssetSpec(
            staged_key,
            deps=[products_key],
            description="The batch job's input files on the staging area (create-only).",
            kinds={"gcs"},
            group_name=prefix,
        ),
        dg.AssetSpec(
            submission_key,
            deps=[staged_key],
            description=f"The {jt.name} batch job submitted from job_configs/{jt.name}.yaml "
            "(validated again at launch); its partition is registered by the sensor.",
            kinds={"googlecloud"},
            group_name=prefix,
        ),
    ]

    def launch(
        context: dg.AssetExecutionContext,
        config: dg.Config,  # the job type's launch_config: set on __annotations__ below
        product_dump: ProductDumpResource,
        staging: StagingResource,
        batch_engine: BatchEngineResource,
    ) -> Any:
        job_id = run_job_id(context, jt.name)
        context.instance.add_run_tags(context.run_id, {BATCH_JOB_ID_TAG: job_id})
        job_config = load_job_config(registered.config_path).config  # the file as it is now
        image = job_config.resources.container_image_uri
        local_argv = batch_engine.local_argv(image)
        selection = config.model_dump()
        # What the tasks read besides the job's own files (a GPU job's staged weights):
        # checked before anything is extracted or staged.
        area = staging.get_staging()
        try:
            task_env = jt.task_environment(
                job_config,
                staging_root_uri=area.root_uri,
                exists=lambda uri: area.exists(uri=uri),
                local_argv=local_argv,
            )
        except StagedFilesError as exc:
            raise dg.Failure(description=str(exc), allow_retries=False) from None
        with tempfile.TemporaryDirectory(prefix=f"{job_id}-") as tmp:
            try:
                check_dump(dump_path=product_dump.path, required_columns=jt.required_columns)
                extracted = jt.extract(
                    product_dump.path,
                    config,
                    job_config,
                    Path(tmp),
                    local_argv=local_argv,
                    progress=context.log.info,
                )
                jt.check_extracted(extracted)
            except (ExtractionError, StagedFilesError) as exc:
                raise dg.Failure(description=str(exc), allow_retries=False) from None
            if extracted.rows == 0:
                raise dg.Failure(
                    description=f"the selection matched no product in {product_dump.path} "
                    f"({selection}): no batch job is launched.",
                    allow_retries=False,
                )
            context.log.info(f"extracted {extracted.rows} products for batch job {job_id}")
            yield dg.MaterializeResult(
                asset_key=products_key,
                metadata={
                    "batch_job_id": job_id,
                    "rows": dg.MetadataValue.int(extracted.rows),
                    "dump_path": dg.MetadataValue.path(product_dump.path),
                    "selection": dg.MetadataValue.json(selection),
                    "preview": preview_table(extracted.files[jt.input_file]),
                    "files": dg.MetadataValue.json(sorted(extracted.files)),
                    **dict(extracted.metadata),
                },
            )
            try:
                uris = submit.stage_files(
                    staging=area, job_type=jt.name, job_id=job_id, files=extracted.files
                )
            except submit.PipelineError as exc:
                raise dg.Failure(description=str(exc)) from None
            job_uri = area.job_uri(job_type=jt.name, job_id=job_id)
            yield dg.MaterializeResult(
                asset_key=staged_key,
                metadata={
                    "batch_job_id": job_id,
                    "job_uri": job_uri,
                    "files": dg.MetadataValue.json(uris),
                    "bytes": dg.MetadataValue.int(
                        sum(p.stat().st_size for p in extracted.files.values())
                    ),
                },
            )

        env = submit.container_environment(job_uri=job_uri, staged=uris, input_file=jt.input_file)
        env.update(task_env)
        engine = batch_engine.get_engine()
        try:
            status, request = submit_or_fail(
                engine=engine,
                config=job_config,
                job_type=jt.name,
                job_id=job_id,
                project=batch_engine.project,
                environment=env,
                labels={OWNER_LABEL: context.run_id},
            )
        except dg.DagsterExecutionInterruptedError:
            # The run was cancelled while submitting: leave no orphan job behind.
            context.log.warning(f"run cancelled during submission; cancelling {job_id}")
            engine.cancel(job_id=job_id)
            raise
        cost = job_config.cost
        context.log.info(f"submitted {job_id} ({status.state.value}) to the {engine.name} engine")
        metadata: dict[str, Any] = {
            "batch_job_id": job_id,
            "engine": engine.name,
            "state_at_submission": status.state.value,
            "production_cost_ceiling_usd": dg.MetadataValue.float(job_config.max_cost_usd),
            "production_worst_case_usd": dg.MetadataValue.float(round(cost.total_usd, 2)),
            "production_worst_case": cost.explain(),
            "job_config": dg.MetadataValue.json(job_config.model_dump(mode="json")),
            "request": dg.MetadataValue.json(json.loads(request_to_json(request))),
            "logs": dg.MetadataValue.url(engine.logs_uri(job_id=job_id)),
        }
        if local_argv is not None:
            argv = [*local_argv, *job_config.resources.commands]
            metadata["local_command"] = dg.MetadataValue.text(" ".join(argv))
        yield dg.MaterializeResult(asset_key=submission_key, metadata=metadata)

    # Dagster reads the run config's schema from the annotation of ``config``.
    launch.__annotations__["config"] = jt.launch_config
    launch_asset = dg.multi_asset(
        name=launch_op_name(prefix),
        specs=specs,
        can_subset=False,
        description=f"Launch one {jt.name} batch job: extract, stage, submit (one step).",
    )(launch)

    launch_job = dg.define_asset_job(
        name=launch_job_name(jt.name),
        selection=dg.AssetSelection.assets(launch_asset),
        # one step: run in the run's own process (a step process to start and import the code
        # location cost 3-6 s of click -> imported: benchmarks/click_to_imported.py)
        executor_def=dg.in_process_executor,
        description=f"Launch one {jt.name} batch job: extract, stage, submit.",
        tags={"job_type": jt.name, RUN_KIND_TAG: LAUNCH_KIND},
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
    return {"assets": [launch_asset], "jobs": [launch_job], "schedules": schedules}
