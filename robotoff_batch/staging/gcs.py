"""A ``gs://bucket/prefix`` staging area on Google Cloud Storage.

- Uploads are create-only: ``if_generation_match=0`` makes GCS refuse an upload over an
  existing object (412), which :class:`ObjectExistsError` reports. The same precondition makes
  retrying an upload safe, so transient errors (429, 5xx, connection resets) are retried with
  exponential backoff.
- Every upload is verified: the client sends a CRC32C that GCS checks, and the stored object's
  CRC32C is compared again with the local file's.
- :meth:`GCSStaging.check_access` fails early, before any job is submitted, on a bucket that
  does not exist or that the credentials cannot use, naming the bucket.
- :meth:`GCSStaging.open_read` streams (``BlobReader``, ranged reads pinned to the object's
  generation), it never downloads a whole file into memory.
"""

from __future__ import annotations

import base64
import logging
from typing import BinaryIO, cast
from urllib.parse import urlparse

import google.cloud.storage as storage
import google_crc32c
from google.api_core import exceptions as api_exceptions
from google.api_core.retry import Retry
from google.cloud.storage.exceptions import DataCorruption
from google.cloud.storage.retry import DEFAULT_RETRY

from robotoff_batch.staging import IdenticalObjectExistsError, ObjectExistsError, StagingError

logger = logging.getLogger(__name__)

# What a resumable upload raises when the stored object's checksum is not the one sent.
DATA_CORRUPTION: tuple[type[Exception], ...] = (DataCorruption,)
REQUIRED_PERMISSIONS = ("storage.objects.create", "storage.objects.get", "storage.objects.list")
READ_CHUNK_SIZE = 8 * 1024 * 1024
_CHUNK = 1024 * 1024


def default_retry(
    *, initial: float = 1.0, maximum: float = 32.0, multiplier: float = 2.0, timeout: float = 300.0
) -> Retry:
    """The storage library's retry predicate (429, 5xx, connection errors) with our backoff."""
    return DEFAULT_RETRY.with_delay(
        initial=initial, maximum=maximum, multiplier=multiplier
    ).with_timeout(timeout)


def _local_checksums(path: str) -> tuple[str, int]:
    """Base64 CRC32C (as GCS reports it) and size of a local file."""
    checksum = google_crc32c.Checksum()
    size = 0
    with open(path, "rb") as handle:
        for chunk in iter(lambda: handle.read(_CHUNK), b""):
            checksum.update(chunk)
            size += len(chunk)
    return base64.b64encode(checksum.digest()).decode("ascii"), size


def parse_gs_uri(uri: str) -> tuple[str, str]:
    """``gs://bucket/a/b`` -> ``("bucket", "a/b")``."""
    parsed = urlparse(uri)
    if parsed.scheme != "gs" or not parsed.netloc:
        raise StagingError(f"not a gs:// URI: {uri!r}")
    return parsed.netloc, parsed.path.lstrip("/")


class GCSStaging:
    """Staging on GCS under ``gs://bucket/prefix``."""

    def __init__(
        self,
        *,
        root_uri: str,
        client: storage.Client,
        retry: Retry | None = None,
        read_chunk_size: int = READ_CHUNK_SIZE,
    ) -> None:
        """``retry`` defaults to :func:`default_retry`; reads fetch ``read_chunk_size`` bytes."""
        bucket_name, prefix = parse_gs_uri(root_uri.rstrip("/"))
        self.bucket_name = bucket_name
        self.prefix = prefix.strip("/")
        self.root_uri = f"gs://{bucket_name}" + (f"/{self.prefix}" if self.prefix else "")
        self.client = client
        self.retry = retry if retry is not None else default_retry()
        self.read_chunk_size = read_chunk_size
        self._bucket = client.bucket(bucket_name)

    def __repr__(self) -> str:
        return f"GCSStaging(root_uri={self.root_uri!r})"

    def _blob_name(self, uri: str) -> str:
        bucket_name, name = parse_gs_uri(uri)
        if bucket_name != self.bucket_name:
            raise StagingError(f"{uri} is not in the staging bucket gs://{self.bucket_name}")
        if self.prefix and not (name == self.prefix or name.startswith(self.prefix + "/")):
            raise StagingError(f"{uri} is outside the staging root {self.root_uri}")
        return name

    def _uri(self, name: str) -> str:
        return f"gs://{self.bucket_name}/{name}"

    def check_access(self) -> None:
        """Fail with a clear StagingError if the bucket is missing or not usable."""
        where = f"gs://{self.bucket_name}"
        try:
            # Needs only storage.objects.list (Storage Object Admin has no buckets.get).
            blobs = self.client.list_blobs(
                self.bucket_name, prefix=self.prefix or None, max_results=1, retry=self.retry
            )
            list(blobs)
            granted = set(
                self._bucket.test_iam_permissions(list(REQUIRED_PERMISSIONS), retry=self.retry)
            )
        except api_exceptions.NotFound:
            raise StagingError(
                f"the staging bucket {where} does not exist (ROBOTOFF_BATCH_STAGING_URI="
                f"{self.root_uri})"
            ) from None
        except (api_exceptions.Forbidden, api_exceptions.Unauthorized) as exc:
            raise StagingError(
                f"access to the staging bucket {where} is denied: {exc.message} (grant the "
                "service account Storage Object Admin on the bucket)"
            ) from None
        missing = [p for p in REQUIRED_PERMISSIONS if p not in granted]
        if missing:
            raise StagingError(
                f"the credentials lack {missing} on the staging bucket {where} (grant the "
                "service account Storage Object Admin on the bucket)"
            )
        logger.info("Staging bucket %s is reachable and writable", where)

    def job_uri(self, *, job_type: str, job_id: str) -> str:
        for label, value in (("job type", job_type), ("job id", job_id)):
            if not value or "/" in value or value in (".", ".."):
                raise StagingError(f"invalid {label} {value!r} for a staging path")
        return f"{self.root_uri}/{job_type}/{job_id}"

    def upload_file(self, *, local_path: str, uri: str) -> str:
        """Create-only, CRC32C-verified upload; raises ObjectExistsError if the object exists."""
        name = self._blob_name(uri)
        expected_crc, expected_size = _local_checksums(local_path)
        blob = self._bucket.blob(name)
        try:
            blob.upload_from_filename(
                local_path, if_generation_match=0, checksum="crc32c", retry=self.retry
            )
        except api_exceptions.PreconditionFailed:
            self._raise_exists(uri, name, expected_crc, expected_size)
        except DATA_CORRUPTION as exc:
            # A resumable upload whose stored CRC32C is not ours: the object exists, damaged.
            self._delete_corrupt(name, uri)
            raise StagingError(
                f"upload of {uri} was corrupted in transit ({exc}); the damaged object was "
                "removed: launch again"
            ) from None
        if blob.crc32c is None:
            blob.reload(retry=self.retry)
        if blob.crc32c != expected_crc or (blob.size is not None and blob.size != expected_size):
            # A corrupt object must not be mistaken for staged input: remove exactly it.
            self._delete_corrupt(name, uri)
            raise StagingError(
                f"checksum mismatch after uploading {uri}: stored crc32c {blob.crc32c} "
                f"(size {blob.size}), local {expected_crc} (size {expected_size})"
            )
        logger.info("Staged %s (%d bytes, crc32c %s)", uri, expected_size, expected_crc)
        return uri

    def _delete_corrupt(self, name: str, uri: str) -> None:
        """Remove exactly the damaged generation we wrote (never a newer one)."""
        try:
            blob = self._bucket.get_blob(name, retry=self.retry)
            if blob is not None:
                blob.delete(if_generation_match=blob.generation, retry=self.retry)
        except api_exceptions.GoogleAPICallError:
            logger.exception("Could not delete the corrupt object %s", uri)

    def _raise_exists(self, uri: str, name: str, crc: str, size: int) -> None:
        existing = self._bucket.get_blob(name, retry=self.retry)
        if existing is not None and existing.crc32c == crc and existing.size == size:
            # Also the outcome of a retried upload whose first response was lost.
            raise IdenticalObjectExistsError(
                f"{uri} already exists with identical content (crc32c {crc}): "
                "staging never overwrites"
            ) from None
        raise ObjectExistsError(
            f"{uri} already exists with different content: staging never overwrites"
        ) from None

    def list_uris(self, *, prefix_uri: str) -> list[str]:
        bucket_name, name_prefix = parse_gs_uri(prefix_uri)
        if bucket_name != self.bucket_name:
            raise StagingError(f"{prefix_uri} is not in the staging bucket gs://{bucket_name}")
        blobs = self.client.list_blobs(
            self.bucket_name, prefix=name_prefix or None, retry=self.retry
        )
        return sorted(self._uri(blob.name) for blob in blobs)

    def open_read(self, *, uri: str) -> BinaryIO:
        """A seekable stream of ranged reads, pinned to the object's current generation."""
        name = self._blob_name(uri)
        blob = self._bucket.get_blob(name, retry=self.retry)
        if blob is None:
            raise StagingError(f"{uri} does not exist")
        reader = blob.open(
            "rb",
            chunk_size=self.read_chunk_size,
            if_generation_match=blob.generation,
            retry=self.retry,
        )
        return cast(BinaryIO, reader)

    def exists(self, *, uri: str) -> bool:
        return bool(self._bucket.blob(self._blob_name(uri)).exists(retry=self.retry))


def storage_client() -> storage.Client:
    """A client from :func:`load_credentials` (``GOOGLE_CREDENTIALS`` or ADC)."""
    from robotoff_batch.gcp_credentials import load_credentials

    credentials, project = load_credentials()
    return storage.Client(project=project, credentials=credentials)
