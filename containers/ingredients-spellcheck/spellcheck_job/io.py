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


class OutputError(RuntimeError):
    """The task's output could not be stored intact (a transient failure: the task exits 3,
    which Batch retries up to max_retry_count)."""


OUTPUT_ERROR_EXIT_CODE = 3


def _data_corruption_types() -> tuple[type[BaseException], ...]:
    """``DataCorruption`` lives in google.cloud.storage.exceptions (storage >= 3) or in
    google.resumable_media (storage 2.x, this image's pin)."""
    found: list[type[BaseException]] = []
    try:
        from google.cloud.storage.exceptions import DataCorruption as StorageCorruption

        found.append(StorageCorruption)
    except ImportError:
        pass
    try:
        from google.resumable_media.common import DataCorruption as MediaCorruption

        found.append(MediaCorruption)
    except ImportError:
        pass
    return tuple(found)


def crc32c_b64(data: bytes) -> str:
    """The base64 CRC32C of ``data``, as GCS reports ``crc32c``."""
    import base64

    import google_crc32c

    return base64.b64encode(google_crc32c.Checksum(data).digest()).decode("ascii")


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
    gs://: upload with ``if_generation_match=0`` (create only) and a CRC32C that GCS checks
    (``checksum="crc32c"``); the stored object's CRC32C is compared with ours again. A corrupt
    upload (``DataCorruption``, or a stored CRC32C that differs) is deleted and raises
    :class:`OutputError`, so that a retry of the task uploads it again. If an earlier attempt
    of the same task already created the object with the same CRC32C, it is kept; with another
    one it is an :class:`OutputError` too.
    """
    if is_gcs(uri):
        buffer = io.BytesIO()
        pq.write_table(table, buffer, row_group_size=ROW_GROUP_ROWS)
        data = buffer.getvalue()
        expected = crc32c_b64(data)
        bucket, key = _split_gs(uri)
        blob = _client().bucket(bucket).blob(key)
        from google.api_core.exceptions import PreconditionFailed

        try:
            blob.upload_from_string(
                data,
                content_type="application/vnd.apache.parquet",
                if_generation_match=0,
                checksum="crc32c",
            )
        except PreconditionFailed:
            existing = _client().bucket(bucket).get_blob(key)
            if existing is not None and existing.crc32c == expected:
                logger.warning("%s already exists (earlier attempt of this task), same CRC32C", uri)
                return
            raise OutputError(
                f"{uri} already exists with other content (crc32c "
                f"{getattr(existing, 'crc32c', None)}, ours {expected}): not overwritten"
            ) from None
        except _data_corruption_types() as exc:
            _delete_corrupt(blob, uri)
            raise OutputError(
                f"upload of {uri} was corrupted in transit (CRC32C mismatch: {exc}); the "
                "object was removed, a retry of the task uploads it again"
            ) from None
        if blob.crc32c is None:
            blob.reload()
        if blob.crc32c != expected:
            _delete_corrupt(blob, uri)
            raise OutputError(
                f"{uri} was stored with crc32c {blob.crc32c}, ours is {expected}: removed"
            )
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


def _delete_corrupt(blob: Any, uri: str) -> None:
    """Remove exactly the corrupt object we wrote (if it exists), never another generation."""
    from google.api_core.exceptions import GoogleAPICallError, NotFound

    try:
        blob.reload()
        blob.delete(if_generation_match=blob.generation)
    except NotFound:
        pass
    except GoogleAPICallError:
        logger.exception("could not delete the corrupt object %s", uri)


def exists(uri: str) -> bool:
    """Whether an object (gs://) or file exists at ``uri``."""
    if is_gcs(uri):
        bucket, key = _split_gs(uri)
        return bool(_client().bucket(bucket).blob(key).exists())
    return local_path(uri).is_file()


def _parquet_bytes(table: pa.Table) -> bytes:
    buffer = io.BytesIO()
    pq.write_table(table, buffer, row_group_size=ROW_GROUP_ROWS)
    return buffer.getvalue()


def write_parquet_create_only(table: pa.Table, uri: str) -> str:
    """Write ``table`` at ``uri`` once: atomic, never over an existing object; returns its
    CRC32C. gs:// as :func:`write_parquet_atomic` (create-only, checksummed). Locally: a
    temporary file in the same directory, fsync, then ``link`` (which refuses an existing
    target, unlike ``rename``), so a reader sees the whole file or none."""
    if is_gcs(uri):
        write_parquet_atomic(table, uri)
        return crc32c_b64(_parquet_bytes(table))
    data = _parquet_bytes(table)
    path = local_path(uri)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp_name = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as handle:
            handle.write(data)
            handle.flush()
            os.fsync(handle.fileno())
        try:
            os.link(tmp_name, path)
        except FileExistsError:
            raise OutputError(f"{uri} already exists: a chunk is never overwritten") from None
    finally:
        Path(tmp_name).unlink(missing_ok=True)
    return crc32c_b64(data)


def read_json(uri: str) -> tuple[dict[str, Any] | None, int]:
    """A JSON object and its generation (gs://; 1 for a local file), or (None, 0)."""
    import json

    if is_gcs(uri):
        bucket, key = _split_gs(uri)
        blob = _client().bucket(bucket).get_blob(key)
        if blob is None:
            return None, 0
        # The generation as listed, and exactly that generation's bytes (a newer write in
        # between fails the read instead of pairing new bytes with the old generation).
        generation = int(blob.generation)
        return json.loads(blob.download_as_bytes(if_generation_match=generation)), generation
    path = local_path(uri)
    if not path.is_file():
        return None, 0
    return json.loads(path.read_text(encoding="utf-8")), 1


def write_json(uri: str, body: dict[str, Any], *, if_generation: int) -> int:
    """Replace a small JSON object atomically; returns its new generation.

    gs://: ``if_generation_match=if_generation`` (0: must not exist yet), so a writer that
    read an older version fails (:class:`OutputError`) instead of overwriting a newer one.
    Locally: a temporary file then ``rename`` (one writer per task: Batch runs one attempt
    of a task at a time)."""
    import json

    data = json.dumps(body, indent=1, sort_keys=True).encode("utf-8")
    if is_gcs(uri):
        from google.api_core.exceptions import PreconditionFailed

        bucket, key = _split_gs(uri)
        blob = _client().bucket(bucket).blob(key)
        try:
            blob.upload_from_string(
                data,
                content_type="application/json",
                if_generation_match=if_generation,
                checksum="crc32c",
            )
        except PreconditionFailed:
            raise OutputError(
                f"{uri} changed since this attempt read it (another attempt of the task?): "
                "not overwritten"
            ) from None
        return int(blob.generation)
    path = local_path(uri)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp_name = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as handle:
            handle.write(data)
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(tmp_name, path)
    except BaseException:
        Path(tmp_name).unlink(missing_ok=True)
        raise
    return 1


def download_prefix(prefix_uri: str, dest: str) -> int:
    """Copy every object under ``prefix_uri`` (gs:// or local) into ``dest``, keeping their
    relative paths; returns the number of files. The staged weights' ``STAGED.json`` (written
    last by ``robotoff-batch stage-weights``) must be there: a half-staged copy is refused."""
    prefix = prefix_uri.rstrip("/") + "/"
    target = Path(dest)
    if is_gcs(prefix):
        bucket_name, key = _split_gs(prefix)
        blobs = [
            b for b in _client().list_blobs(bucket_name, prefix=key) if not b.name.endswith("/")
        ]
        names = [b.name[len(key) :] for b in blobs]
        if "STAGED.json" not in names:
            raise InputError(f"{prefix}STAGED.json is missing: the weights are not (fully) staged")
        for blob, name in zip(blobs, names, strict=True):
            path = target / name
            path.parent.mkdir(parents=True, exist_ok=True)
            blob.download_to_filename(str(path), checksum="crc32c")
        return len(blobs)
    source = local_path(prefix)
    if not (source / "STAGED.json").is_file():
        raise InputError(f"{prefix}STAGED.json is missing: the weights are not (fully) staged")
    import shutil

    files = [p for p in source.rglob("*") if p.is_file()]
    for path in files:
        out = target / path.relative_to(source)
        out.parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(path, out)
    return len(files)
