"""Staging area: where a batch job's input is written and its output is read.

Layout, identical for every implementation::

    <root>/<job-type>/<job-id>/input.parquet      the extracted products
    <root>/<job-type>/<job-id>/<extra files>       job-type artefacts (e.g. lexicon.parquet)
    <root>/<job-type>/<job-id>/output/             one file per task, written by the container

``root`` is a ``file://`` directory by default and ``gs://bucket/prefix`` in production.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import BinaryIO, Protocol, runtime_checkable


class StagingError(RuntimeError):
    """The staging area refused an operation (missing bucket, object exists, ...)."""


class ObjectExistsError(StagingError):
    """A create-only upload met an existing object: staging never overwrites."""


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
        """Create-only upload, checksum verified; raises ObjectExistsError, returns the URI."""
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
