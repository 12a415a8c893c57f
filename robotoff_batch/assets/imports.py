"""A batch job's output imported into Robotoff's database: ``<type>/predictions`` and its
checks, the second step of the finish job (``finish_<type>``: record the outcome, then import)
the sensor requests, for a job type that imports (its ``import_spec``).

Bad output is refused
whole and the run tags itself ``import_refused`` so the follower does not retry it; any other
failure (database unreachable, the run's process killed) is retried by the follower with a new
run, until the ledger says the job is imported.
"""

# No `from __future__ import annotations`: Dagster reads the context type from annotations.

from typing import Any

import dagster as dg

from robotoff_batch.batch.submit import PipelineError
from robotoff_batch.job_types import RegisteredJobType
from robotoff_batch.job_types.base import changed_words
from robotoff_batch.names import (
    PARTIAL_IMPORT_TAG,
    REFUSED_TAG,
    RETRY_QUARANTINED_TAG,
    batch_job_asset_key,
    batch_jobs_group,
    predictions_asset_key,
)
from robotoff_batch.predictions.model import PredictionImportError, PredictionStoreAuthError
from robotoff_batch.predictions.output import OutputError, import_job_output
from robotoff_batch.predictions.task_output import read_rows
from robotoff_batch.resources import (
    BatchEngineResource,
    PredictionStoreResource,
    ProductDumpResource,
    StagingResource,
)

EXAMPLE_COLUMNS = ("barcode", "lang", "changes", "original", "correction")


def excerpts(original: str, correction: str, width: int = 200) -> tuple[str, str]:
    """The same window of both texts, at most ``width`` characters, centred on the first
    change (``…`` where cut): a change beyond the first 200 characters is still seen."""
    start = 0
    for a, b in zip(original, correction, strict=False):
        if a != b:
            break
        start += 1
    if start == len(original) == len(correction):
        return original[:width], correction[:width]
    begin = max(0, start - width // 2)

    def cut(text: str) -> str:
        end = begin + width
        return ("…" if begin else "") + text[begin:end] + ("…" if end < len(text) else "")

    return cut(original), cut(correction)


def examples_table(rows: list[dict[str, Any]]) -> dg.MetadataValue:
    records = []
    for row in rows:
        data = row.get("data") or {}
        original, correction = str(data.get("original", "")), str(data.get("correction", ""))
        shown_original, shown_correction = excerpts(original, correction)
        records.append(
            dg.TableRecord(
                {
                    "barcode": str(row.get("barcode", "")),
                    "lang": str(data.get("lang") or row.get("value_tag") or ""),
                    "changes": changed_words(original, correction),
                    "original": shown_original,
                    "correction": shown_correction,
                }
            )
        )
    return dg.MetadataValue.table(
        records=records,
        schema=dg.TableSchema(columns=[dg.TableColumn(c, "string") for c in EXAMPLE_COLUMNS]),
    )


#: Held-back rows listed in the asset's metadata (all of them: `robotoff-batch status JOB`).
QUARANTINE_LISTED = 50
QUARANTINE_COLUMNS = ("file", "row", "code", "reason")


def quarantine_table(rows: list[dict[str, Any]]) -> dg.MetadataValue:
    return dg.MetadataValue.table(
        records=[
            dg.TableRecord(
                {
                    c: str(row.get(c, "")) if c != "row" else int(row["row"])
                    for c in QUARANTINE_COLUMNS
                }
            )
            for row in rows
        ],
        schema=dg.TableSchema(
            columns=[
                dg.TableColumn(c, "int" if c == "row" else "string") for c in QUARANTINE_COLUMNS
            ]
        ),
    )


def build_imports(registered: RegisteredJobType, partitions: dg.PartitionsDefinition) -> Any:
    """The predictions asset of a job type that imports (its import_spec)."""
    jt = registered.job_type
    key = predictions_asset_key(jt.name)
    check_count = dg.AssetCheckSpec(
        name="rows_imported_match_output",
        asset=key,
        description="The rows the import read = the rows of the job's task files (their "
        "Parquet footers, read again by the check), and the predictions stored for the job = "
        "those the import inserted.",
    )
    check_held = dg.AssetCheckSpec(
        name="no_rows_quarantined",
        asset=key,
        description="No output row was held back (quarantined: conflicting rows of a "
        "product, a NUL byte, an empty code...); WARN: the rest was imported, the held-back "
        "rows are listed and imported by `import JOB --retry-quarantined` once fixed.",
    )
    check_dupes = dg.AssetCheckSpec(
        name="no_duplicate_predictions",
        asset=key,
        description="At most one prediction per product, type, language, predictor and "
        "version among the job's rows.",
    )

    @dg.asset(
        key=key,
        deps=[batch_job_asset_key(jt.name)],
        group_name=batch_jobs_group(jt.name),
        partitions_def=partitions,
        check_specs=[check_count, check_dupes, check_held],
        description=f"The batch job's output imported into Robotoff's `prediction` table as "
        f"`{jt.prediction_type}` predictions (one transaction per job, at most once).",
        kinds={"postgres"},
    )
    def predictions(
        context: dg.AssetExecutionContext,
        staging: StagingResource,
        batch_engine: BatchEngineResource,
        prediction_store: PredictionStoreResource,
        product_dump: ProductDumpResource,
    ) -> dg.MaterializeResult:
        job_id = context.partition_key
        area = staging.get_staging()
        engine = batch_engine.get_engine()
        try:
            store = prediction_store.get_store()
            partial = context.run.tags.get(PARTIAL_IMPORT_TAG) == "true"
            outcome = import_job_output(
                engine=engine,
                staging=area,
                store=store,
                job_type=jt,
                job_id=job_id,
                max_bad_row_fraction=prediction_store.max_bad_row_fraction,
                retry_quarantined=context.run.tags.get(RETRY_QUARANTINED_TAG) == "true",
                dump_path=product_dump.path,  # the newest dump: facts as of the import
                partial=partial,
            )
        except (PipelineError, OutputError, PredictionImportError) as exc:
            # Bad output is not transient: the follower must not retry it.
            context.instance.add_run_tags(context.run_id, {REFUSED_TAG: "true"})
            raise dg.Failure(
                description=f"import of {job_id} refused: {exc}", allow_retries=False
            ) from None
        except PredictionStoreAuthError as exc:
            # Wrong credentials do not heal by retrying; the message is the reason.
            context.instance.add_run_tags(context.run_id, {REFUSED_TAG: "true"})
            raise dg.Failure(description=str(exc), allow_retries=False) from None
        expected = outcome.predictions
        in_db = store.count_predictions(batch_job_id=job_id)
        # the files the manifests list (carried chunks included), less those an earlier
        # job's import read (a relaunch after import --partial)
        in_files = read_rows(
            staging=area,
            job_uri=area.job_uri(job_type=jt.name, job_id=job_id),
            task_count=len(engine.get_job(job_id=job_id).tasks),
            partial=outcome.partial,
            imported_elsewhere=lambda uris: store.imported_chunks(uris, other_than=job_id),
        )
        duplicates = store.duplicate_predictions(batch_job_id=job_id)
        examples = store.fetch_examples(batch_job_id=job_id, limit=10)
        held = (
            store.quarantined_rows(job_id, limit=QUARANTINE_LISTED)
            if outcome.rows_quarantined
            else []
        )
        verb = "was already imported" if outcome.already_imported else "imported"
        context.log.info(f"{job_id}: {verb}, {outcome.predictions} predictions")
        return dg.MaterializeResult(
            metadata={
                "batch_job_id": job_id,
                "predictions_imported": dg.MetadataValue.int(outcome.predictions),
                "already_imported": outcome.already_imported,
                # a FAILED job's complete chunks only (import --partial); its relaunch
                # carries them and imports the rest
                "partial_import": outcome.partial,
                "output_files": outcome.output_files,
                "output_rows": outcome.source_rows,
                "unchanged_rows_skipped": outcome.skipped_rows,
                "predictions_from_output": outcome.candidates,
                "predictions_kept_same_version": outcome.predictions_kept,
                "predictions_replaced_older_version": outcome.predictions_replaced,
                # texts a task did not send to its engine (too long, engine error, truncated)
                "texts_skipped": dg.MetadataValue.int(sum(outcome.texts_skipped.values())),
                **{
                    f"texts_skipped_{reason}": dg.MetadataValue.int(n)
                    for reason, n in sorted(outcome.texts_skipped.items())
                },
                **{
                    f"insights_{name}": dg.MetadataValue.int(n)
                    for name, n in outcome.insights.items()
                },
                "rows_quarantined": dg.MetadataValue.int(outcome.rows_quarantined),
                "identical_rows_collapsed": dg.MetadataValue.int(outcome.rows_collapsed),
                "products_deleted_since_launch": dg.MetadataValue.int(outcome.products_deleted),
                **({"product_facts": outcome.facts_source} if outcome.facts_source else {}),
                **({"quarantined": quarantine_table(held)} if held else {}),
                "import_s": dg.MetadataValue.float(round(outcome.duration_s, 3)),
                "examples": examples_table(examples),
            },
            check_results=[
                dg.AssetCheckResult(
                    check_name=check_count.name,
                    # the staged files may be gone (cleaned up) for a job imported long ago
                    passed=in_db == expected and in_files in (None, outcome.source_rows),
                    metadata={
                        "rows_in_task_files": in_files if in_files is not None else "gone",
                        "rows_read_by_import": outcome.source_rows,
                        "in_database": in_db,
                        "inserted_by_import": expected,
                        "from_output": outcome.candidates,
                        "kept_same_version": outcome.predictions_kept,
                    },
                ),
                dg.AssetCheckResult(
                    check_name=check_held.name,
                    passed=outcome.rows_quarantined == 0,
                    severity=dg.AssetCheckSeverity.WARN,
                    metadata={
                        "rows_quarantined": outcome.rows_quarantined,
                        **({"quarantined": quarantine_table(held)} if held else {}),
                    },
                ),
                dg.AssetCheckResult(
                    check_name=check_dupes.name,
                    passed=duplicates == 0,
                    metadata={"duplicate_groups": duplicates},
                ),
            ],
        )

    return predictions
