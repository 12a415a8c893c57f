"""A ``file://`` staging area: the embedded default, same layout and rules as ``gs://``.

Uploads are create-only like the GCS ones: the file is copied to a temporary name in the target
directory, flushed, then hard-linked to its final name (``os.link`` fails if the name exists,
atomically), so a reader never sees a half-written file and an existing object is never
overwritten. The copy is verified against the source (CRC32C) before the link. An existing
object with the same CRC32C and size is reported as identical, as GCS's backend does.
"""

from __future__ import annotations

import logging
import os
import secrets
from pathlib import Path
from typing import BinaryIO
from urllib.parse import quote, unquote, urlparse

import google_crc32c

from robotoff_batch.staging import IdenticalObjectExistsError, ObjectExistsError, StagingError

logger = logging.getLogger(__name__)

_TMP_PREFIX = ".upload-"
_CHUNK = 1024 * 1024


def file_crc32c(path: str | os.PathLike[str]) -> str:
    """The CRC32C of a file, as the hex digest (streamed, constant memory)."""
    checksum = google_crc32c.Checksum()
    with open(path, "rb") as handle:
        for chunk in iter(lambda: handle.read(_CHUNK), b""):
            checksum.update(chunk)
    return checksum.hexdigest().decode("ascii")


def _check_segment(name: str, value: str) -> None:
    if not value or "/" in value or value in (".", ".."):
        raise StagingError(f"invalid {name} {value!r} for a staging path")


class LocalStaging:
    """Staging in a local directory, addressed by ``file:///abs/dir/...`` URIs."""

    def __init__(self, *, root_uri: str) -> None:
        parsed = urlparse(root_uri)
        if parsed.scheme != "file" or parsed.netloc not in ("", "localhost"):
            raise StagingError(f"not a local file:// URI: {root_uri!r}")
        path = Path(unquote(parsed.path))
        if not path.is_absolute():
            raise StagingError(f"the staging root must be absolute: {root_uri!r}")
        self.root_path = path.resolve()
        self.root_uri = self._uri_of(self.root_path)

    def __repr__(self) -> str:
        return f"LocalStaging(root_uri={self.root_uri!r})"

    @staticmethod
    def _uri_of(path: Path) -> str:
        return "file://" + quote(str(path))

    def path_of(self, uri: str) -> Path:
        """The local path of a URI under the root (refuses anything outside it)."""
        parsed = urlparse(uri)
        if parsed.scheme != "file":
            raise StagingError(f"not a file:// URI: {uri!r}")
        raw = unquote(parsed.path)
        path = Path(os.path.normpath(raw))
        if path != self.root_path and self.root_path not in path.parents:
            raise StagingError(f"{uri} is outside the staging root {self.root_uri}")
        return path

    def check_access(self) -> None:
        """Create the root if needed and make sure it is a writable directory."""
        try:
            self.root_path.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            raise StagingError(
                f"cannot create the staging directory {self.root_uri}: {exc.strerror}"
            ) from exc
        if not self.root_path.is_dir():
            raise StagingError(f"the staging root {self.root_uri} is not a directory")
        if not os.access(self.root_path, os.W_OK | os.X_OK):
            raise StagingError(f"the staging directory {self.root_uri} is not writable")

    def job_uri(self, *, job_type: str, job_id: str) -> str:
        _check_segment("job type", job_type)
        _check_segment("job id", job_id)
        return f"{self.root_uri}/{job_type}/{job_id}"

    def upload_file(self, *, local_path: str, uri: str) -> str:
        """Create-only copy of ``local_path`` to ``uri``; raises ObjectExistsError if taken."""
        target = self.path_of(uri)
        if target.exists():
            self._raise_exists(uri, target, local_path, file_crc32c(local_path))
        target.parent.mkdir(parents=True, exist_ok=True)
        tmp = target.parent / f"{_TMP_PREFIX}{target.name}.{secrets.token_hex(6)}"
        source_crc = google_crc32c.Checksum()
        try:
            with open(local_path, "rb") as src, open(tmp, "xb") as dst:
                for chunk in iter(lambda: src.read(_CHUNK), b""):
                    source_crc.update(chunk)
                    dst.write(chunk)
                dst.flush()
                os.fsync(dst.fileno())
            expected = source_crc.hexdigest().decode("ascii")
            copied = file_crc32c(tmp)
            if copied != expected:
                raise StagingError(
                    f"checksum mismatch while staging {uri}: crc32c {copied} != {expected}"
                )
            try:
                os.link(tmp, target)
            except FileExistsError:
                self._raise_exists(uri, target, local_path, expected)
        finally:
            tmp.unlink(missing_ok=True)
        logger.info("Staged %s (crc32c %s)", uri, expected)
        return uri

    @staticmethod
    def _raise_exists(uri: str, target: Path, local_path: str, crc: str) -> None:
        same_size = target.is_file() and target.stat().st_size == os.stat(local_path).st_size
        if same_size and file_crc32c(target) == crc:
            raise IdenticalObjectExistsError(
                f"{uri} already exists with identical content (crc32c {crc}): "
                "staging never overwrites"
            )
        raise ObjectExistsError(
            f"{uri} already exists with different content: staging never overwrites"
        )

    def list_uris(self, *, prefix_uri: str) -> list[str]:
        """Files whose URI starts with ``prefix_uri`` (temporary upload files excluded)."""
        prefix_path = self.path_of(prefix_uri.rstrip("/") or prefix_uri)
        base = prefix_path if prefix_uri.endswith("/") else prefix_path.parent
        if not base.is_dir():
            return []
        uris = []
        for dirpath, _dirnames, filenames in os.walk(base):
            for filename in filenames:
                if filename.startswith(_TMP_PREFIX):
                    continue
                uri = self._uri_of(Path(dirpath) / filename)
                if uri.startswith(prefix_uri):
                    uris.append(uri)
        return sorted(uris)

    def open_read(self, *, uri: str) -> BinaryIO:
        try:
            return open(self.path_of(uri), "rb")
        except FileNotFoundError:
            raise StagingError(f"{uri} does not exist") from None

    def exists(self, *, uri: str) -> bool:
        return self.path_of(uri).is_file()
