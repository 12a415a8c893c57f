"""The import's read: a SUCCEEDED job's task files, checked and streamed into the store.

:func:`import_job_output` is what the finish run (and ``robotoff-batch import``) calls; nothing
here knows about Dagster.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from functools import cache
from pathlib import Path
from typing import Any, Protocol

import pyarrow as pa
import pyarrow.parquet as pq

from robotoff_batch.batch.engine import BatchEngine, JobState
from robotoff_batch.batch.submit import PipelineError
from robotoff_batch.names import FALLBACK_OF_LABEL, RELAUNCH_OF_LABEL
from robotoff_batch.predictions.model import ImportSpec, OutputChunk
from robotoff_batch.predictions.target import PredictionTarget
from robotoff_batch.predictions.task_output import (
    OutputError,
    TaskFiles,
    part_file_name,
    task_files,
)
from robotoff_batch.staging import Staging

logger = logging.getLogger(__name__)


class ImportingJobType(Protocol):
    """What the import reads of a job type (:class:`robotoff_batch.job_types.base.JobType`)."""

    @property
    def name(self) -> str: ...

    @property
    def import_spec(self) -> ImportSpec | None: ...

    @property
    def facts_file(self) -> str | None: ...

    def facts_at_import(
        self, *, dump_path: str, codes: pa.Array
    ) -> Iterator[pa.RecordBatch] | None: ...


#: Schema metadata key of a staged facts file: the modification time (ISO, UTC) of the dump
#: it was read from, so the import can tell whether the dump it has now is newer.
DUMP_MODIFIED_KEY = b"robotoff_batch.dump_modified"


def dump_modified(dump_path: str) -> datetime | None:
    """When a local dump file was last written (UTC); None for a remote or missing one."""
    if "://" in dump_path and not dump_path.startswith("file://"):
        return None
    try:
        return datetime.fromtimestamp(Path(dump_path.removeprefix("file://")).stat().st_mtime, UTC)
    except OSError:
        return None


class ImportNotReady(RuntimeError):
    """The import cannot be decided now (e.g. the engine did not list the job's tasks); a
    later attempt may succeed, unlike a refused output."""


@dataclass(frozen=True)
class ImportOutcome:
    batch_job_id: str
    predictions: int
    already_imported: bool
    output_files: int
    source_rows: int
    skipped_rows: int
    duration_s: float
    candidates: int = 0
    predictions_kept: int = 0
    predictions_replaced: int = 0
    insights: Mapping[str, int] = field(default_factory=dict)
    rows_quarantined: int = 0
    rows_collapsed: int = 0
    products_deleted: int = 0
    facts_source: str = ""  # which product facts the insights were checked against, and when
    # texts the tasks did not send to their engine, by reason (the manifests' counts)
    texts_skipped: Mapping[str, int] = field(default_factory=dict)
    partial: bool = False  # a FAILED job's complete chunks only


def output_file_name(task_index: int) -> str:
    """The single file task ``task_index`` may write under ``output/`` (the container's
    contract; the checkpointed form is ``task-<i>/manifest.json`` and its chunks)."""
    return part_file_name(task_index)


def task_output_uris(
    *, staging: Staging, job_uri: str, task_count: int, partial: bool = False
) -> list[str]:
    """The job's task files, in task order (docs/CONTRACTS.md, "Task output layout"): per
    task its part file or exactly the chunks its manifest lists; a missing task, an
    incomplete manifest (unless ``partial``) or a stray object is refused."""
    return task_files(staging=staging, job_uri=job_uri, task_count=task_count, partial=partial).uris


@cache
def use_system_memory_pool() -> None:
    """Arrow's bundled allocator keeps freed pages for reuse: over the import's stream of
    short-lived batches that is ~25 MiB more peak at 1M rows than the system allocator, which
    returns them (benchmarks/results/import.md). Set once, by the first import of the process
    (not when this module is imported); ARROW_DEFAULT_MEMORY_POOL, when set, still wins."""
    if not os.environ.get("ARROW_DEFAULT_MEMORY_POOL"):
        pa.set_memory_pool(pa.system_memory_pool())


# Rows per Arrow batch read from a task or facts file: the import's working set is a few
# batches, whatever the job's size (benchmarks/import_benchmark.py measures the peak).
READ_BATCH_ROWS = 4_096


def _read_output(*, staging: Staging, uris: list[str], spec: ImportSpec) -> Iterator[OutputChunk]:
    """The task files' rows, file by file, in Arrow batches (never a whole file in memory)."""
    columns = spec.output_schema.names
    for index, uri in enumerate(uris):
        with staging.open_read(uri=uri) as stream:
            try:
                parquet = pq.ParquetFile(stream)
            except (pa.ArrowInvalid, OSError) as exc:
                raise OutputError(f"{uri}: not a readable Parquet file ({exc})") from exc
            schema = parquet.schema_arrow
            absent = [c for c in spec.optional if c not in schema.names]
            missing = [c for c in columns if c not in schema.names and c not in absent]
            if missing:
                raise OutputError(
                    f"{uri}: output is missing column(s) {missing}; expected {columns}"
                )
            present = [c for c in columns if c not in absent]
            for name in present:
                wanted = spec.output_schema.field(name).type
                actual = schema.field(name).type
                if pa.types.is_string(wanted) and not (
                    pa.types.is_string(actual) or pa.types.is_large_string(actual)
                ):
                    raise OutputError(
                        f"{uri}: column {name!r} is {actual}, not a string (a number loses a "
                        "barcode's leading zeros); nothing was imported"
                    )
            offset = 0
            # one thread: Arrow's per-thread arenas would add to the import's peak memory
            batches = parquet.iter_batches(
                columns=present, batch_size=READ_BATCH_ROWS, use_threads=False
            )
            for batch in batches:
                if absent:  # an optional column the file lacks: nulls, in the spec's order
                    batch = pa.RecordBatch.from_arrays(
                        [
                            batch.column(name)
                            if name in present
                            else pa.nulls(batch.num_rows, spec.output_schema.field(name).type)
                            for name in columns
                        ],
                        names=columns,
                    )
                yield OutputChunk(file_index=index, offset=offset, batch=batch)
                offset += batch.num_rows


def _read_facts(*, staging: Staging, uri: str) -> Iterator[pa.RecordBatch]:
    with staging.open_read(uri=uri) as stream:
        yield from pq.ParquetFile(stream).iter_batches(
            batch_size=READ_BATCH_ROWS, use_threads=False
        )


def _facts(
    *,
    staging: Staging,
    uri: str,
    job_type: ImportingJobType,
    dump_path: str | None,
    launched: datetime | None,
) -> tuple[Iterable[pa.RecordBatch], str]:
    """The product facts the import checks the insights against, and which they are.

    From ``dump_path`` (one DuckDB pass over the job's products, those it no longer holds
    marked deleted) when it is newer than the dump the launch read (the staged file's
    metadata, else the job's creation time); the staged launch-time facts when it is not, is
    missing or remote, or the job type cannot read it again."""
    with staging.open_read(uri=uri) as stream:
        parquet = pq.ParquetFile(stream)
        raw = (parquet.schema_arrow.metadata or {}).get(DUMP_MODIFIED_KEY)
        launch_dump = datetime.fromisoformat(raw.decode()) if raw else None
        codes = None
        now_dump = dump_modified(dump_path) if dump_path else None
        reference = launch_dump or launched  # the launch read a dump older than itself
        if now_dump is not None and (reference is None or now_dump > reference):
            codes = parquet.read(columns=["code"], use_threads=False).column(0).combine_chunks()
    of_launch = f"dump of {launch_dump:%Y-%m-%d %H:%M} UTC" if launch_dump else "dump"
    if codes is not None and dump_path and now_dump is not None:
        batches = job_type.facts_at_import(dump_path=dump_path, codes=codes)
        if batches is not None:
            return batches, f"{dump_path} (modified {now_dump:%Y-%m-%d %H:%M} UTC), read at import"
    why = (
        "no dump at import"
        if not dump_path
        else f"{dump_path} is missing or remote"
        if now_dump is None
        else f"{dump_path} is not newer"
    )
    return _read_facts(staging=staging, uri=uri), f"launch-time facts ({of_launch}; {why})"


def _outcome(
    result: Any, output_files: int, facts_source: str = "", found: TaskFiles | None = None
) -> ImportOutcome:
    return ImportOutcome(
        texts_skipped=dict(found.skipped) if found is not None else {},
        partial=bool(getattr(result, "partial", False)),
        batch_job_id=result.batch_job_id,
        predictions=result.predictions,
        already_imported=result.already_imported,
        output_files=output_files,
        source_rows=result.source_rows,
        skipped_rows=result.skipped_rows,
        duration_s=result.duration_s,
        candidates=result.candidates,
        predictions_kept=result.predictions_kept,
        predictions_replaced=result.predictions_replaced,
        insights=dict(result.insights),
        rows_quarantined=result.rows_quarantined,
        rows_collapsed=result.rows_collapsed,
        products_deleted=result.products_deleted,
        facts_source=facts_source,
    )


def import_job_output(
    *,
    engine: BatchEngine,
    staging: Staging,
    store: PredictionTarget,
    job_type: ImportingJobType,
    job_id: str,
    max_bad_row_fraction: float | None = None,
    retry_quarantined: bool = False,
    dump_path: str | None = None,
    partial: bool = False,
) -> ImportOutcome:
    """Import a SUCCEEDED job's output: all of it in one transaction, once.

    A job the ledger records as imported is answered from the ledger, without asking the
    engine or reading storage (the staged files may be gone). Otherwise the files read are
    exactly the tasks' (one per task index); an empty output, a missing task file, a stray
    file, a file that is not Parquet or a column of the wrong type are refused whole (nothing
    written); bad rows are held back (quarantined) unless more than ``max_bad_row_fraction``
    of them are. ``retry_quarantined``: the held-back rows of an imported job read again.

    The insights are checked against the product facts as of the import: read from
    ``dump_path`` (the newest dump the deployment has) when it is newer than the launch's
    dump, else the facts staged at launch (see :func:`_facts`).
    """
    spec = job_type.import_spec
    use_system_memory_pool()
    if spec is None:
        raise PipelineError(f"{job_type.name} declares no import: nothing is imported")
    earlier = store.imported_job(job_id)
    if earlier is not None and not (retry_quarantined and earlier.rows_quarantined):
        return _outcome(earlier, output_files=0)
    status = engine.get_job(job_id=job_id)
    if partial and status.state not in (JobState.FAILED, JobState.CANCELLED):
        raise PipelineError(
            f"batch job {job_id} is {status.state.value}: --partial imports the complete "
            "chunks of a FAILED (or CANCELLED) job only; nothing is imported"
        )
    if not partial and status.state != JobState.SUCCEEDED:
        hint = (
            " (its complete chunks: import it with --partial)"
            if status.state
            in (
                JobState.FAILED,
                JobState.CANCELLED,
            )
            else ""
        )
        raise PipelineError(
            f"batch job {job_id} is {status.state.value}, not SUCCEEDED: nothing is imported{hint}"
        )
    if not status.tasks:
        raise ImportNotReady(
            f"the batch engine did not list the tasks of {job_id}, so its task files are "
            "unknown; nothing was imported (retried)"
        )
    job_uri = staging.job_uri(job_type=job_type.name, job_id=job_id)
    found = task_files(
        staging=staging, job_uri=job_uri, task_count=len(status.tasks), partial=partial
    )
    # Chunks an earlier import already read (a partial import of the job this one carried
    # them from) are left out: each product is imported once.
    # (A retry of held-back rows re-reads the files this job's own import already read.)
    retrying = earlier is not None
    done = set() if retrying else store.imported_chunks(found.uris)
    uris = [u for u in found.uris if u not in done]
    if done:
        logger.info(
            "%s: %d chunk(s) already imported by an earlier job, left out", job_id, len(done)
        )
    if not uris:
        raise PipelineError(
            f"batch job {job_id} has no complete chunk that was not imported already "
            f"({len(done)} were): nothing is imported"
        )
    # A capacity fallback's or a relaunch's job writes its own output, from the first job's
    # staged input.
    first = status.labels.get(RELAUNCH_OF_LABEL) or status.labels.get(FALLBACK_OF_LABEL) or job_id
    facts: Iterable[pa.RecordBatch] = ()
    facts_source = ""
    if spec.facts_schema is not None and job_type.facts_file:
        input_uri = staging.job_uri(job_type=job_type.name, job_id=first)
        facts_uri = f"{input_uri}/{job_type.facts_file}"
        if not staging.exists(uri=facts_uri):
            raise OutputError(
                f"{facts_uri} (the job's product facts, written at launch) is missing: the "
                "insights cannot be checked; nothing was imported"
            )
        facts, facts_source = _facts(
            staging=staging,
            uri=facts_uri,
            job_type=job_type,
            dump_path=dump_path,
            launched=status.create_time,
        )
        logger.info("%s: product facts from %s", job_id, facts_source)
    result = store.import_output(
        batch_job_id=job_id,
        job_type=job_type.name,
        spec=spec,
        files=uris,
        outputs=_read_output(staging=staging, uris=uris, spec=spec),
        facts=facts,
        retry_quarantined=retry_quarantined,
        partial=partial,
        chunk_uris=() if retrying else uris,
        **({} if max_bad_row_fraction is None else {"max_bad_row_fraction": max_bad_row_fraction}),
    )
    return _outcome(result, output_files=len(uris), facts_source=facts_source, found=found)
