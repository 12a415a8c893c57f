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
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import dagster as dg
import pyarrow.parquet as pq

from robotoff_batch.batch import submit
from robotoff_batch.batch.request import make_job_id, request_to_json
from robotoff_batch.config.loader import load_job_config
from robotoff_batch.config.models import JobConfig
from robotoff_batch.extraction import ExtractionError, check_dump
from robotoff_batch.job_types import RegisteredJobType
from robotoff_batch.job_types.base import ExtractedInput, JobType, StagedFilesError
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
from robotoff_batch.predictions.model import PredictionStoreError
from robotoff_batch.resources import (
    BatchEngineResource,
    PredictionStoreResource,
    ProductDumpResource,
    StagingResource,
)
from robotoff_batch.staging import Staging


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


@dataclass(frozen=True)
class LaunchKeys:
    """The three asset keys of a job type's launch."""

    products: dg.AssetKey
    staged: dg.AssetKey
    submission: dg.AssetKey

    @classmethod
    def of(cls, prefix: str) -> "LaunchKeys":
        return cls(
            products=dg.AssetKey([prefix, PRODUCTS]),
            staged=dg.AssetKey([prefix, STAGED_INPUT]),
            submission=dg.AssetKey([prefix, BATCH_JOB_SUBMISSION]),
        )


def launch_specs(jt: JobType[Any], keys: LaunchKeys) -> list[dg.AssetSpec]:
    """The specs of the launch's three assets."""
    prefix = jt.key_prefix
    return [
        dg.AssetSpec(
            keys.products,
            description=f"Products selected for a {jt.name} batch job, extracted with DuckDB "
            "from the OFF Parquet dump (with what the engine that runs needs, nothing more).",
            kinds={"duckdb", "parquet"},
            group_name=prefix,
        ),
        dg.AssetSpec(
            keys.staged,
            deps=[keys.products],
            description="The batch job's input files on the staging area (create-only).",
            kinds={"gcs"},
            skippable=True,  # a launch with nothing left to do (skip_unchanged) stages nothing
            group_name=prefix,
        ),
        dg.AssetSpec(
            keys.submission,
            deps=[keys.staged],
            description=f"The {jt.name} batch job submitted from job_configs/{jt.name}.yaml "
            "(validated again at launch); its partition is registered by the sensor.",
            kinds={"googlecloud"},
            skippable=True,  # nothing left to do: no job
            group_name=prefix,
        ),
    ]


def launch_job_config(
    registered: RegisteredJobType, batch_engine: BatchEngineResource
) -> JobConfig:
    """The job type's YAML file as it is now, as the engine that runs the job sees it (the
    local runner's: the job type's ``local_environment`` over the file's): what chooses the
    engine the extraction writes for."""
    job_config = load_job_config(registered.config_path).config
    if batch_engine.kind == "local":
        return registered.job_type.config_for_local_runner(job_config)
    return job_config


def task_environment_or_fail(
    jt: JobType[Any], job_config: JobConfig, area: Staging
) -> dict[str, str]:
    """What the tasks read besides the job's own files (a GPU job's staged weights): checked
    before anything is extracted or staged."""
    try:
        return jt.task_environment(
            job_config, staging_root_uri=area.root_uri, exists=lambda uri: area.exists(uri=uri)
        )
    except StagedFilesError as exc:
        raise dg.Failure(description=str(exc), allow_retries=False) from None


def extract_or_fail(
    context: dg.AssetExecutionContext,
    jt: JobType[Any],
    *,
    dump_path: str,
    params: dg.Config,
    job_config: JobConfig,
    out: Path,
    known: Any = None,
) -> ExtractedInput:
    """The job type's extraction (the dump's footer read once, here), a refused dump or an
    empty selection a non-retried failure: no batch job is launched. ``known`` (skip_unchanged:
    the texts the job's model already saw) is left out; a selection that only those emptied is
    no failure (the caller says so and submits nothing)."""
    try:
        schema = check_dump(dump_path=dump_path, required_columns=jt.required_columns)
        extra = {} if known is None else {"known": known}
        extracted = jt.extract(
            dump_path,
            params,
            job_config,
            out,
            dump_schema=schema,
            progress=context.log.info,
            **extra,
        )
        jt.check_extracted(extracted)
    except (ExtractionError, StagedFilesError) as exc:
        raise dg.Failure(description=str(exc), allow_retries=False) from None
    if extracted.rows == 0 and not extracted.metadata.get("skipped_unchanged"):
        raise dg.Failure(
            description=f"the selection matched no product in {dump_path} "
            f"({params.model_dump()}): no batch job is launched.",
            allow_retries=False,
        )
    return extracted


def known_or_fail(
    jt: JobType[Any], params: dg.Config, job_config: JobConfig, store: PredictionStoreResource
) -> Any:
    """skip_unchanged (issue 22): (model identity, known texts) read once from the prediction
    target, or None (not asked, or the job type does not skip); an unreachable target fails
    the launch before anything is extracted (retried: nothing was done)."""
    if not getattr(params, "skip_unchanged", False):
        return None
    try:
        return jt.known_set(params, job_config, store.get_store())
    except PredictionStoreError as exc:
        raise dg.Failure(
            description=f"skip_unchanged: could not read the known texts ({exc}); nothing was "
            "extracted or submitted"
        ) from None


def nothing_left_message(extracted: ExtractedInput, known: Any) -> str:
    skipped = extracted.metadata.get("skipped_unchanged", 0)
    identity = known[0] if known else "the model"
    return (
        f"nothing left to do: {skipped} products skipped as unchanged ({identity} already "
        "gave a verdict on their current text); no batch job is submitted"
    )


def products_result(
    keys: LaunchKeys,
    jt: JobType[Any],
    job_id: str,
    dump_path: str,
    params: dg.Config,
    extracted: ExtractedInput,
    known: Any = None,
) -> dg.MaterializeResult:
    """The products asset's materialization: what was selected (and, with skip_unchanged,
    skipped), with a preview; with nothing left, says that no job is submitted."""
    extra: dict[str, Any] = {}
    if known is not None:
        extra["model_identity"] = str(known[0])
    if extracted.rows == 0:
        extra["batch_job_id"] = ""
        extra["nothing_left"] = nothing_left_message(extracted, known)
    return dg.MaterializeResult(
        asset_key=keys.products,
        metadata={
            "batch_job_id": job_id,
            "rows": dg.MetadataValue.int(extracted.rows),
            "dump_path": dg.MetadataValue.path(dump_path),
            "selection": dg.MetadataValue.json(params.model_dump()),
            "preview": (
                preview_table(extracted.files[jt.input_file])
                if extracted.rows
                else dg.MetadataValue.text("(no product left)")
            ),
            "files": dg.MetadataValue.json(sorted(extracted.files)),
            **dict(extracted.metadata),
            **extra,
        },
    )


def stage_or_fail(
    keys: LaunchKeys, area: Staging, jt: JobType[Any], job_id: str, extracted: ExtractedInput
) -> tuple[dict[str, str], str, dg.MaterializeResult]:
    """Stage the extracted files: (their URIs, the job's folder URI, the staged asset's
    materialization)."""
    try:
        uris = submit.stage_files(
            staging=area, job_type=jt.name, job_id=job_id, files=extracted.files
        )
    except submit.PipelineError as exc:
        raise dg.Failure(description=str(exc)) from None
    job_uri = area.job_uri(job_type=jt.name, job_id=job_id)
    result: dg.MaterializeResult = dg.MaterializeResult(
        asset_key=keys.staged,
        metadata={
            "batch_job_id": job_id,
            "job_uri": job_uri,
            "files": dg.MetadataValue.json(uris),
            "bytes": dg.MetadataValue.int(sum(p.stat().st_size for p in extracted.files.values())),
        },
    )
    return uris, job_uri, result


def submit_job(
    context: dg.AssetExecutionContext,
    jt: JobType[Any],
    *,
    job_id: str,
    job_config: JobConfig,
    environment: dict[str, str],
    batch_engine: BatchEngineResource,
) -> dict[str, Any]:
    """Submit the batch job; returns the submission asset's metadata. A run cancelled while
    submitting cancels the job: no orphan is left behind."""
    engine = batch_engine.get_engine()
    try:
        status, request = submit_or_fail(
            engine=engine,
            config=job_config,
            job_type=jt.name,
            job_id=job_id,
            project=batch_engine.project,
            environment=environment,
            labels={OWNER_LABEL: context.run_id},
        )
    except dg.DagsterExecutionInterruptedError:
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
    local_argv = batch_engine.local_argv(job_config.resources.container_image_uri)
    if local_argv is not None:
        argv = [*local_argv, *job_config.resources.commands]
        metadata["local_command"] = dg.MetadataValue.text(" ".join(argv))
    return metadata


def launch_step(registered: RegisteredJobType, keys: LaunchKeys) -> Any:
    """The body of the launch multi_asset: extract, stage, submit, one materialization each."""
    jt = registered.job_type

    def launch(
        context: dg.AssetExecutionContext,
        config: dg.Config,  # the job type's launch_config: set on __annotations__ below
        product_dump: ProductDumpResource,
        staging: StagingResource,
        batch_engine: BatchEngineResource,
        prediction_store: PredictionStoreResource,
    ) -> Any:
        # ``config`` was validated by Dagster through the launch_config model: the one check.
        job_id = run_job_id(context, jt.name)
        context.instance.add_run_tags(context.run_id, {BATCH_JOB_ID_TAG: job_id})
        job_config = launch_job_config(registered, batch_engine)
        area = staging.get_staging()
        task_env = task_environment_or_fail(jt, job_config, area)
        known = known_or_fail(jt, config, job_config, prediction_store)
        with tempfile.TemporaryDirectory(prefix=f"{job_id}-") as tmp:
            extracted = extract_or_fail(
                context,
                jt,
                dump_path=product_dump.path,
                params=config,
                job_config=job_config,
                out=Path(tmp),
                known=None if known is None else known[1],
            )
            context.log.info(f"extracted {extracted.rows} products for batch job {job_id}")
            yield products_result(keys, jt, job_id, product_dump.path, config, extracted, known)
            if extracted.rows == 0:  # every selected product unchanged: nothing to do
                context.log.info(nothing_left_message(extracted, known))
                return
            uris, job_uri, staged = stage_or_fail(keys, area, jt, job_id, extracted)
            yield staged
        env = submit.container_environment(job_uri=job_uri, staged=uris, input_file=jt.input_file)
        env.update(task_env)
        metadata = submit_job(
            context,
            jt,
            job_id=job_id,
            job_config=job_config,
            environment=env,
            batch_engine=batch_engine,
        )
        yield dg.MaterializeResult(asset_key=keys.submission, metadata=metadata)

    # Dagster reads the run config's schema from the annotation of ``config``.
    launch.__annotations__["config"] = jt.launch_config
    return launch


def schedule_run_config(jt: JobType[Any]) -> dict[str, Any]:
    """A scheduled launch skips what did not change (issue 22): ``skip_unchanged`` true where
    the job type's launch config has it (false, its default, for a launch by hand)."""
    if "skip_unchanged" not in jt.launch_config.model_fields:
        return {}
    return {"ops": {launch_op_name(jt.key_prefix): {"config": {"skip_unchanged": True}}}}


def launch_job_and_schedules(
    registered: RegisteredJobType, launch_asset: dg.AssetsDefinition
) -> tuple[Any, list[dg.ScheduleDefinition]]:
    """The launch's job and, when the YAML sets one, its (stopped) schedule."""
    jt = registered.job_type
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
                name=f"{jt.key_prefix}_schedule",
                cron_schedule=registered.config.schedule,
                job=launch_job,
                default_status=dg.DefaultScheduleStatus.STOPPED,
                execution_timezone="UTC",
                description=f"Launches {jt.name} on job_configs/{jt.name}.yaml's schedule.",
                run_config=schedule_run_config(jt),
            )
        )
    return launch_job, schedules


def build_launch(registered: RegisteredJobType) -> dict[str, Any]:
    """The launch multi_asset, its job and its schedule."""
    jt = registered.job_type
    keys = LaunchKeys.of(jt.key_prefix)
    launch_asset = dg.multi_asset(
        name=launch_op_name(jt.key_prefix),
        specs=launch_specs(jt, keys),
        can_subset=False,
        description=f"Launch one {jt.name} batch job: extract, stage, submit (one step).",
    )(launch_step(registered, keys))
    launch_job, schedules = launch_job_and_schedules(registered, launch_asset)
    return {"assets": [launch_asset], "jobs": [launch_job], "schedules": schedules}
