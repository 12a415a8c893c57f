"""Checkpointed task output: chunks written once, listed in a per-task manifest.

Layout and manifest format: docs/CONTRACTS.md, "Task output layout". Under the job's
``output/``, task i writes ``task-<i:05d>/chunk-<k:05d>.parquet`` (chunk k: rows
``[k*C, (k+1)*C)`` of its shard), each an atomic, create-only object, then rewrites
``task-<i:05d>/manifest.json`` listing it. A later attempt of the task (a retry, a preempted
VM) reads the manifest and resumes after its last chunk; a chunk present but not yet listed
(the attempt died between the two writes) is adopted after checking its codes.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import pyarrow as pa

from spellcheck_job.io import (
    InputError,
    OutputError,
    exists,
    join,
    read_json,
    read_table,
    write_json,
    write_parquet_create_only,
)

logger = logging.getLogger(__name__)

MANIFEST_FORMAT = 1
MANIFEST_NAME = "manifest.json"


class ManifestMismatch(RuntimeError):
    """An earlier attempt's manifest describes another shard, chunking or task count."""


def task_prefix(output_uri: str, task_index: int) -> str:
    return join(output_uri, f"task-{task_index:05d}")


def chunk_name(k: int) -> str:
    return f"chunk-{k:05d}.parquet"


@dataclass
class TaskCheckpoint:
    """This task's manifest, as read at start and kept up to date after each chunk."""

    output_uri: str
    task_index: int
    task_count: int
    shard: tuple[int, int]
    chunk_rows: int
    engine: str
    predictor_version: str
    attempt: int
    chunks: list[dict[str, Any]] = field(default_factory=list)
    skipped: dict[str, int] = field(default_factory=dict)
    attempts: list[dict[str, Any]] = field(default_factory=list)
    complete: bool = False
    generation: int = 0  # of manifest.json as read (0: none yet)

    @property
    def prefix(self) -> str:
        return task_prefix(self.output_uri, self.task_index)

    @property
    def manifest_uri(self) -> str:
        return join(self.prefix, MANIFEST_NAME)

    @property
    def chunk_count(self) -> int:
        """Chunks of the shard: ceil(rows / chunk_rows)."""
        rows = self.shard[1] - self.shard[0]
        return -(-rows // self.chunk_rows)

    def chunk_range(self, k: int) -> tuple[int, int]:
        """Shard-relative rows of chunk k."""
        rows = self.shard[1] - self.shard[0]
        return k * self.chunk_rows, min(rows, (k + 1) * self.chunk_rows)

    @property
    def next_chunk(self) -> int:
        return len(self.chunks)

    # -- reading -----------------------------------------------------------------------------

    @classmethod
    def open(
        cls,
        *,
        output_uri: str,
        task_index: int,
        task_count: int,
        shard: tuple[int, int],
        chunk_rows: int,
        engine: str,
        predictor_version: str,
        attempt: int,
        carry_from: Sequence[str] = (),
    ) -> TaskCheckpoint:
        """This task's checkpoint: the earlier attempts' manifest if there is one; else, the
        chunks an earlier job of the chain listed for this task (``carry_from``: the output
        URIs of the jobs this one replaces, latest first), if its settings are the same;
        else new."""
        checkpoint = cls(
            output_uri=output_uri,
            task_index=task_index,
            task_count=task_count,
            shard=shard,
            chunk_rows=chunk_rows,
            engine=engine,
            predictor_version=predictor_version,
            attempt=attempt,
        )
        found, generation = read_json(checkpoint.manifest_uri)
        if found is not None:
            checkpoint._resume(found, generation)
        else:
            checkpoint._carry(carry_from)
        checkpoint.attempts.append(
            {"attempt": attempt, "started_chunk": checkpoint.next_chunk, "processed": 0}
        )
        return checkpoint

    def _resume(self, found: dict[str, Any], generation: int) -> None:
        expected = {
            "format": MANIFEST_FORMAT,
            "task_index": self.task_index,
            "task_count": self.task_count,
            "shard": list(self.shard),
            "chunk_rows": self.chunk_rows,
            "engine": self.engine,
            "predictor_version": self.predictor_version,
        }
        differs = {k: (found.get(k), v) for k, v in expected.items() if found.get(k) != v}
        if differs:
            raise ManifestMismatch(
                f"{self.manifest_uri} was written by an attempt with other settings "
                f"({', '.join(f'{k}: {a!r} there, {b!r} now' for k, (a, b) in differs.items())}); "
                "its chunks cannot be resumed"
            )
        self.chunks = list(found.get("chunks", []))
        self.skipped = dict(found.get("skipped", {}))
        self.attempts = list(found.get("attempts", []))
        self.complete = bool(found.get("complete", False))
        self.generation = generation
        logger.info(
            "resuming: %s lists %d of %d chunks%s",
            self.manifest_uri,
            len(self.chunks),
            self.chunk_count,
            " (complete)" if self.complete else "",
        )

    def _carry(self, carry_from: Sequence[str]) -> None:
        """Take the listed chunks of the same task of an earlier job (same shard, chunking,
        engine and predictor version): listed here by their URIs, not copied nor recomputed."""
        for output_uri in carry_from:
            uri = join(task_prefix(output_uri, self.task_index), MANIFEST_NAME)
            found, _ = read_json(uri)
            if found is None:
                continue
            try:
                probe = TaskCheckpoint(**{**self.__dict__, "chunks": [], "attempts": []})
                probe._resume(found, 0)
            except ManifestMismatch as exc:
                logger.warning("not carrying %s: %s", uri, exc)
                continue
            if not probe.chunks:
                continue
            self.chunks = probe.chunks
            self.skipped = probe.skipped
            self.complete = probe.complete
            self.attempts = [{"carried_from": uri, "chunks": len(probe.chunks)}]
            logger.info("carried %d chunk(s) from %s", len(self.chunks), uri)
            return

    def adopt_unlisted(self, expected_codes: Sequence[str]) -> bool:
        """If the next chunk exists (written by an attempt that died before listing it),
        list it without recomputing; its codes must be the range's, in order."""
        k = self.next_chunk
        uri = join(self.prefix, chunk_name(k))
        if not exists(uri):
            return False
        try:
            table = read_table(uri, ("code", "skipped"))
        except InputError as exc:
            raise OutputError(f"{uri} exists but cannot be read ({exc}); not overwritten") from exc
        codes = [str(c) for c in table.column("code").to_pylist()]
        if codes != list(expected_codes):
            raise OutputError(
                f"{uri} exists but holds other rows than chunk {k} of this shard; not overwritten"
            )
        reasons = [r for r in table.column("skipped").to_pylist() if r]
        counts: dict[str, int] = {}
        for reason in reasons:
            kind = reason.split(":", 1)[0]
            counts[kind] = counts.get(kind, 0) + 1
        logger.warning("%s was written by an earlier attempt but not listed: adopted", uri)
        self._list(k, uri, table.num_rows, counts, crc32c=None, processed=0)
        return True

    # -- writing -----------------------------------------------------------------------------

    def write_chunk(self, table: pa.Table, skipped: dict[str, int], processed: int) -> str:
        """Write the next chunk (create-only), then the manifest listing it."""
        k = self.next_chunk
        uri = join(self.prefix, chunk_name(k))
        crc = write_parquet_create_only(table, uri)
        self._list(k, uri, table.num_rows, skipped, crc32c=crc, processed=processed)
        return uri

    def _list(
        self,
        k: int,
        uri: str,
        rows: int,
        skipped: dict[str, int],
        *,
        crc32c: str | None,
        processed: int,
    ) -> None:
        first, stop = self.chunk_range(k)
        if rows != stop - first:
            raise OutputError(f"{uri}: {rows} rows, chunk {k} has {stop - first}")
        self.chunks.append(
            {
                "uri": uri,
                "first_row": first,
                "rows": rows,
                "skipped": sum(skipped.values()),
                "crc32c": crc32c,
            }
        )
        for kind, n in skipped.items():
            self.skipped[kind] = self.skipped.get(kind, 0) + n
        self.attempts[-1]["processed"] += processed
        self.complete = self.next_chunk >= self.chunk_count
        self.save()

    def save(self) -> None:
        """Rewrite the manifest (the only object ever replaced; gs:// compares generations,
        so an attempt that was overtaken fails instead of rolling the manifest back)."""
        body = {
            "format": MANIFEST_FORMAT,
            "task_index": self.task_index,
            "task_count": self.task_count,
            "shard": list(self.shard),
            "chunk_rows": self.chunk_rows,
            "engine": self.engine,
            "predictor_version": self.predictor_version,
            "complete": self.complete,
            "chunks": self.chunks,
            "skipped": self.skipped,
            "attempts": self.attempts,
        }
        self.generation = write_json(self.manifest_uri, body, if_generation=self.generation)
