"""Which objects of a job's ``output/`` the import reads (docs/CONTRACTS.md, "Task output
layout"): per task index, its single part file or exactly the chunks its manifest lists;
anything else under ``output/`` is stray and refuses the import."""

from __future__ import annotations

import json
import logging
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field

from robotoff_batch.staging import Staging

logger = logging.getLogger(__name__)


class OutputError(ValueError):
    """A job's output file cannot be imported (missing column, null code...)."""


MANIFEST_NAME = "manifest.json"


def part_file_name(task_index: int) -> str:
    """The single-file form: the file task ``task_index`` writes under ``output/``."""
    return f"part-{task_index:05d}.parquet"


def task_dir_name(task_index: int) -> str:
    """The checkpointed form: the folder of task ``task_index`` under ``output/``."""
    return f"task-{task_index:05d}"


def chunk_name(k: int) -> str:
    return f"chunk-{k:05d}.parquet"


@dataclass(frozen=True)
class TaskFiles:
    """What the import reads of one job's output, and what the manifests say about it."""

    uris: list[str]
    complete_tasks: int
    task_count: int
    skipped: dict[str, int] = field(default_factory=dict)
    rows: int = 0  # rows of the listed chunks, by the manifests (part files not counted)

    @property
    def partial(self) -> bool:
        return self.complete_tasks < self.task_count


def _is_temporary(uri: str, prefix: str) -> bool:
    return any(p.startswith(".") for p in uri[len(prefix) :].split("/"))


def task_files(
    *, staging: Staging, job_uri: str, task_count: int, partial: bool = False
) -> TaskFiles:
    """The files to import, in task order, then chunk order.

    Refused (:class:`OutputError`, nothing imported): a task with neither a part file nor a
    manifest, or with both; a manifest that is not complete (unless ``partial``), names
    another task or task count, or lists a chunk that is missing or out of order; any
    other object under ``output/`` (stray). Names starting with ``.`` (temporary files of a
    killed attempt) are ignored. With ``partial``, a task may have no output or an
    incomplete manifest; the one unlisted chunk right after an incomplete manifest's last
    listed chunk (its attempt died before listing it) is ignored, not stray.
    """
    prefix = f"{job_uri}/output/"
    present = [u for u in staging.list_uris(prefix_uri=prefix) if not _is_temporary(u, prefix)]
    seen = set(present)
    accounted: set[str] = set()
    uris: list[str] = []
    skipped: dict[str, int] = {}
    complete = rows = 0
    missing: list[str] = []
    for i in range(task_count):
        part = f"{prefix}{part_file_name(i)}"
        task_prefix = f"{prefix}{task_dir_name(i)}/"
        manifest_uri = f"{task_prefix}{MANIFEST_NAME}"
        if part in seen and manifest_uri in seen:
            raise OutputError(
                f"task {i} wrote both {part} and {manifest_uri}; nothing was imported"
            )
        if part in seen:
            uris.append(part)
            accounted.add(part)
            complete += 1
            continue
        if manifest_uri not in seen:
            if not partial:
                missing.append(part)
            continue
        accounted.add(manifest_uri)
        manifest = _read_manifest(staging, manifest_uri)
        if manifest.get("task_index") != i or manifest.get("task_count") != task_count:
            raise OutputError(
                f"{manifest_uri} describes task {manifest.get('task_index')} of "
                f"{manifest.get('task_count')}, not task {i} of {task_count}; nothing was imported"
            )
        chunks = manifest.get("chunks") or []
        expected_first = 0
        for k, chunk in enumerate(chunks):
            uri = str(chunk.get("uri", ""))
            own = f"{task_prefix}{chunk_name(k)}"
            if uri != own and not uri.startswith(staging.root_uri):
                raise OutputError(
                    f"{manifest_uri} lists chunk {k} at {uri!r}, outside the staging area; "
                    "nothing was imported"
                )
            if chunk.get("first_row") != expected_first:
                raise OutputError(
                    f"{manifest_uri}: chunk {k} starts at row {chunk.get('first_row')}, "
                    f"expected {expected_first}; nothing was imported"
                )
            expected_first += int(chunk.get("rows", 0))
            if uri not in seen and not staging.exists(uri=uri):
                raise OutputError(
                    f"{manifest_uri} lists {uri}, which is missing; nothing was imported"
                )
            uris.append(uri)
            accounted.add(uri)
        rows += expected_first
        for kind, n in (manifest.get("skipped") or {}).items():
            skipped[kind] = skipped.get(kind, 0) + int(n)
        if manifest.get("complete"):
            complete += 1
        elif partial:
            accounted.add(f"{task_prefix}{chunk_name(len(chunks))}")
        else:
            raise OutputError(
                f"{manifest_uri} is not complete ({len(chunks)} chunk(s) listed): task {i} did "
                "not finish; nothing was imported (a FAILED job's finished chunks: import it "
                "with --partial)"
            )
    if missing:
        raise OutputError(
            f"{len(missing)} of {task_count} task file(s) missing, e.g. {missing[0]} (or "
            f"its {task_dir_name(0)}/{MANIFEST_NAME}); nothing was imported"
        )
    stray = sorted(seen - accounted)
    if stray:
        raise OutputError(
            f"{len(stray)} object(s) under {prefix} that no task wrote, e.g. {stray[0]} (the "
            f"tasks write {part_file_name(0)} or {task_dir_name(0)}/{MANIFEST_NAME} and the "
            "chunks it lists); nothing was imported: remove them, then import again"
        )
    return TaskFiles(
        uris=uris, complete_tasks=complete, task_count=task_count, skipped=skipped, rows=rows
    )


def _read_manifest(staging: Staging, uri: str) -> dict:  # type: ignore[type-arg]
    with staging.open_read(uri=uri) as stream:
        raw = stream.read()
    try:
        body = json.loads(raw)
    except ValueError as exc:
        raise OutputError(f"{uri}: not a JSON manifest ({exc}); nothing was imported") from exc
    if not isinstance(body, dict) or body.get("format") != 1:
        raise OutputError(f"{uri}: not a format-1 task manifest; nothing was imported")
    return body


def read_rows(
    *,
    staging: Staging,
    job_uri: str,
    task_count: int,
    partial: bool,
    imported_elsewhere: Callable[[Iterable[str]], set[str]],
) -> int | None:
    """Rows of the task files an import of this job reads, from their Parquet footers: the
    files its manifests list (its own chunks and those carried from an earlier job of the same
    input), less those another job's import already read. None when they cannot be listed
    any more (output cleaned up)."""
    import pyarrow.parquet as pq

    try:
        listed = task_files(
            staging=staging, job_uri=job_uri, task_count=task_count, partial=partial
        ).uris
    except OutputError:
        return None
    if not listed:
        return None
    elsewhere = imported_elsewhere(listed)
    total = 0
    for uri in listed:
        if uri in elsewhere:
            continue
        with staging.open_read(uri=uri) as stream:
            total += pq.ParquetFile(stream).metadata.num_rows
    return total
