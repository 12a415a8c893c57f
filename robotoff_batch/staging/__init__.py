"""Staging area: where a batch job's input is written and its output is read.

Layout, identical for every implementation::

    <root>/<job-type>/<job-id>/input.parquet      the extracted products
    <root>/<job-type>/<job-id>/<extra files>       job-type artefacts (e.g. lexicon.parquet)
    <root>/<job-type>/<job-id>/output/             one file per task, written by the container

``root`` is a ``file://`` directory by default (:mod:`.local`) and ``gs://bucket/prefix`` in
production (:mod:`.gcs`); :func:`staging_from_uri` picks the backend, each importing only its
own client. Both are create-only with the same rule for an object that already exists: the
same bytes (a retried step re-staging its input) raise :class:`IdenticalObjectExistsError`,
which a caller may accept; other bytes raise :class:`ObjectExistsError`, never overwritten.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import TYPE_CHECKING, Any, BinaryIO, Protocol, runtime_checkable
from urllib.parse import urlparse

if TYPE_CHECKING:
    from google.api_core.retry import Retry


class StagingError(RuntimeError):
    """The staging area refused an operation (missing bucket, object exists, ...)."""


class ObjectExistsError(StagingError):
    """A create-only upload met an existing object: staging never overwrites."""


class IdenticalObjectExistsError(ObjectExistsError):
    """The object already exists and holds exactly the bytes we meant to upload.

    Still an :class:`ObjectExistsError` (staging never overwrites), but a caller that
    re-stages the same input after a crash or a step retry may accept it.
    """


@runtime_checkable
class Staging(Protocol):
    """A place for batch job inputs and outputs, addressed by URIs."""

    root_uri: str

    def check_access(self) -> None:
        """Fail with a clear :class:`StagingError` if the area is missing or not writable."""
        ...

    def job_uri(self, *, job_type: str, job_id: str) -> str:
        """The URI of the job's directory (no trailing slash)."""
        ...

    def upload_file(self, *, local_path: str, uri: str) -> str:
        """Create-only upload, checksum verified; returns the URI. An existing object raises
        IdenticalObjectExistsError (same bytes) or ObjectExistsError (other bytes)."""
        ...

    def list_uris(self, *, prefix_uri: str) -> list[str]:
        """URIs of the objects under a prefix, sorted."""
        ...

    def open_read(self, *, uri: str) -> BinaryIO:
        """A readable, seekable binary stream (no whole-file copy in memory)."""
        ...

    def exists(self, *, uri: str) -> bool: ...


def iter_output_uris(staging: Staging, *, job_uri: str, suffix: str = ".parquet") -> Iterator[str]:
    """The job's output files, in task order."""
    for uri in staging.list_uris(prefix_uri=f"{job_uri}/output/"):
        if uri.endswith(suffix):
            yield uri


def staging_from_uri(
    root_uri: str, *, gcs_client: Any = None, retry: Retry | None = None
) -> Staging:
    """The staging backend of a root URI: ``file://`` (:class:`.local.LocalStaging`) or
    ``gs://`` (:class:`.gcs.GCSStaging`); only the chosen backend's module is imported.

    Without ``gcs_client``, a GCS client is built from :func:`load_credentials`
    (``GOOGLE_CREDENTIALS`` or Application Default Credentials).
    """
    scheme = urlparse(root_uri).scheme
    if scheme == "file":
        from robotoff_batch.staging.local import LocalStaging

        return LocalStaging(root_uri=root_uri)
    if scheme == "gs":
        from robotoff_batch.staging.gcs import GCSStaging, storage_client

        return GCSStaging(root_uri=root_uri, client=gcs_client or storage_client(), retry=retry)
    raise StagingError(
        f"unsupported staging URI {root_uri!r}: use file:///absolute/dir or gs://bucket/prefix"
    )
