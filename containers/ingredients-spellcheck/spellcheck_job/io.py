"""Reading and writing the job's files by URI: local paths, ``file://`` and ``gs://``.

gs:// goes through google-cloud-storage, imported only when a gs:// URI is used (the CPU
engine runs locally with pyarrow alone). The client honours ``STORAGE_EMULATOR_HOST``.
"""

from __future__ import annotations

import io
import logging
import os
import tempfile
from collections.abc import Sequence
from pathlib import Path
from typing import Any
from urllib.parse import unquote, urlparse

import pyarrow as pa
import pyarrow.parquet as pq

logger = logging.getLogger(__name__)


class InputError(RuntimeError):
    """The job's input cannot be used (missing file, missing column...)."""


_gcs_client: Any = None


def _client() -> Any:
    """One google-cloud-storage client per process (lazy import)."""
    global _gcs_client
    if _gcs_client is None:
        from google.cloud import storage

        _gcs_client = storage.Client()
    return _gcs_client


def _split_gs(uri: str) -> tuple[str, str]:
    """Split ``gs://bucket/key`` into (bucket, key)."""
    parsed = urlparse(uri)
    return parsed.netloc, parsed.path.lstrip("/")


def is_gcs(uri: str) -> bool:
    """Whether the URI names a Google Cloud Storage object."""
    return uri.startswith("gs://")


def local_path(uri: str) -> Path:
    """The filesystem path of a local path or ``file://`` URI."""
    if uri.startswith("file://"):
        return Path(unquote(urlparse(uri).path))
    if "://" in uri:
        raise InputError(f"unsupported URI scheme in {uri!r} (use a path, file:// or gs://)")
    return Path(uri)


def join(base: str, name: str) -> str:
    """Join a directory URI and a file name."""
    return base.rstrip("/") + "/" + name


def open_parquet(uri: str) -> pq.ParquetFile:
    """Open a Parquet file for partial reads (footer first, then only the row groups asked).

    Raises ``InputError`` naming the URI when it does not exist or is not Parquet.
    """
    try:
        if is_gcs(uri):
            bucket, key = _split_gs(uri)
            blob = _client().bucket(bucket).blob(key)
            if not blob.exists():
                raise InputError(f"input file not found: {uri}")
            # BlobReader is seekable: pyarrow fetches only the ranges it needs.
            return pq.ParquetFile(blob.open("rb", chunk_size=8 * 1024 * 1024))
        path = local_path(uri)
        if not path.is_file():
            raise InputError(f"input file not found: {uri}")
        return pq.ParquetFile(path)
    except (pa.ArrowInvalid, OSError) as exc:
        raise InputError(f"not a readable Parquet file: {uri} ({exc})") from exc


def read_rows(parquet: pq.ParquetFile, start: int, stop: int, columns: Sequence[str]) -> pa.Table:
    """Read rows ``[start, stop)`` of ``columns``, decoding only the row groups that hold them."""
    names = set(parquet.schema_arrow.names)
    missing = [c for c in columns if c not in names]
    if missing:
        raise InputError(f"input is missing column(s) {missing}; it has {sorted(names)}")
    schema = pa.schema([parquet.schema_arrow.field(c) for c in columns])
    if stop <= start:
        return schema.empty_table()
    pieces: list[pa.Table] = []
    offset = 0
    metadata = parquet.metadata
    for group in range(metadata.num_row_groups):
        group_rows = metadata.row_group(group).num_rows
        g_start, g_stop = offset, offset + group_rows
        offset = g_stop
        if g_stop <= start or g_start >= stop:
            continue
        table = parquet.read_row_group(group, columns=list(columns))
        lo = max(start, g_start) - g_start
        hi = min(stop, g_stop) - g_start
        pieces.append(table.slice(lo, hi - lo))
    return pa.concat_tables(pieces).cast(schema) if pieces else schema.empty_table()


def read_table(uri: str, columns: Sequence[str]) -> pa.Table:
    """Read whole columns of a (small) Parquet file such as the lexicon."""
    parquet = open_parquet(uri)
    return read_rows(parquet, 0, parquet.metadata.num_rows, columns)


#: Rows per Parquet row group of an output file: a reader holds one row group at a time, so
#: the import's memory stays flat whatever a task's share of the job.
ROW_GROUP_ROWS = 16_384


def write_parquet_atomic(table: pa.Table, uri: str) -> None:
    """Write ``table`` at ``uri`` so that readers never see a partial file.

    Locally: write a temporary file in the same directory, then rename it over the target.
    gs://: upload with ``if_generation_match=0`` (create only). If an earlier attempt of the
    same task already created the object, it is kept: the engines are deterministic, so the
    content is the same.
    """
    if is_gcs(uri):
        buffer = io.BytesIO()
        pq.write_table(table, buffer, row_group_size=ROW_GROUP_ROWS)
        bucket, key = _split_gs(uri)
        blob = _client().bucket(bucket).blob(key)
        from google.api_core.exceptions import PreconditionFailed

        try:
            blob.upload_from_string(
                buffer.getvalue(),
                content_type="application/vnd.apache.parquet",
                if_generation_match=0,
            )
        except PreconditionFailed:
            logger.warning("%s already exists (earlier attempt of this task); kept as is", uri)
        return
    path = local_path(uri)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp_name = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as handle:
            pq.write_table(table, handle, row_group_size=ROW_GROUP_ROWS)
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(tmp_name, path)
    except BaseException:
        Path(tmp_name).unlink(missing_ok=True)
        raise
