"""Staging: file:// on disk, gs:// through google-cloud-storage against gcp-storage-emulator."""

from __future__ import annotations

import base64
import os
from pathlib import Path

import google.cloud.storage as storage
import google_crc32c
import pytest
from google.auth.credentials import AnonymousCredentials

from robotoff_batch.batch import submit
from robotoff_batch.staging import (
    IdenticalObjectExistsError,
    ObjectExistsError,
    Staging,
    StagingError,
    iter_output_uris,
    staging_from_uri,
)
from robotoff_batch.staging.gcs import GCSStaging
from robotoff_batch.staging.local import LocalStaging
from tests.fakes.gcs_emulator import RunningEmulator
from tests.fakes.settings import (
    STAGING_BUCKET,
    fast_gcs_retry,
)

pytest_plugins = ["tests.gcp_fixtures"]  # also registered by tests/conftest.py


def _file(tmp_path: Path, name: str, content: bytes) -> str:
    path = tmp_path / name
    path.write_bytes(content)
    return str(path)


def _crc(content: bytes) -> str:
    return base64.b64encode(google_crc32c.Checksum(content).digest()).decode()


# -- file:// --------------------------------------------------------------------------------


@pytest.fixture
def local_staging(tmp_path: Path) -> LocalStaging:
    staging = LocalStaging(root_uri=(tmp_path / "staging").as_uri())
    staging.check_access()
    return staging


def test_local_staging_implements_the_protocol(local_staging: LocalStaging) -> None:
    assert isinstance(local_staging, Staging)


def test_local_upload_is_create_only(local_staging: LocalStaging, tmp_path: Path) -> None:
    uri = (
        local_staging.job_uri(job_type="ingredients-spellcheck", job_id="job-1") + "/input.parquet"
    )
    assert local_staging.upload_file(local_path=_file(tmp_path, "a", b"first"), uri=uri) == uri
    with pytest.raises(ObjectExistsError, match=uri) as other:
        local_staging.upload_file(local_path=_file(tmp_path, "b", b"second"), uri=uri)
    assert not isinstance(other.value, IdenticalObjectExistsError)
    assert "different content" in str(other.value)
    with pytest.raises(IdenticalObjectExistsError, match="identical content"):
        local_staging.upload_file(local_path=_file(tmp_path, "c", b"first"), uri=uri)
    with local_staging.open_read(uri=uri) as stream:
        assert stream.read() == b"first"
    # No temporary file left behind by the refused uploads.
    assert os.listdir(local_staging.path_of(uri).parent) == ["input.parquet"]


def test_a_retried_local_staging_step_accepts_identical_bytes_only(
    local_staging: LocalStaging, tmp_path: Path
) -> None:
    """The launch's staging step retried on the local default: the same files are kept (the
    step succeeds), other bytes under the same job id are refused."""
    files = {
        "input.parquet": Path(_file(tmp_path, "in", b"products")),
        "x.parquet": Path(_file(tmp_path, "x", b"extra")),
    }
    stage = {"staging": local_staging, "job_type": "t", "job_id": "retried"}
    first = submit.stage_files(**stage, files=files)  # type: ignore[arg-type]
    assert submit.stage_files(**stage, files=files) == first  # type: ignore[arg-type]
    changed = {**files, "x.parquet": Path(_file(tmp_path, "x2", b"other"))}
    with pytest.raises(submit.PipelineError, match="already exists with other content"):
        submit.stage_files(**stage, files=changed)  # type: ignore[arg-type]
    with local_staging.open_read(uri=first["x.parquet"]) as stream:
        assert stream.read() == b"extra"


def test_the_factory_imports_only_the_backend_it_needs(tmp_path: Path) -> None:
    """A file:// staging area does not import google-cloud-storage (a fresh interpreter)."""
    import subprocess
    import sys

    code = (
        "import sys; from robotoff_batch.staging import staging_from_uri; "
        f"s = staging_from_uri({(tmp_path / 's').as_uri()!r}); "
        "print(type(s).__name__, 'google.cloud.storage' in sys.modules, "
        "'robotoff_batch.staging.gcs' in sys.modules)"
    )
    from robotoff_batch.paths import PROJECT_ROOT

    env = {**os.environ, "PYTHONPATH": str(PROJECT_ROOT)}
    out = subprocess.run(
        [sys.executable, "-c", code],
        capture_output=True,
        text=True,
        check=True,
        timeout=60,
        env=env,
    ).stdout.split()
    assert out == ["LocalStaging", "False", "False"]


def test_local_list_and_outputs(local_staging: LocalStaging, tmp_path: Path) -> None:
    job = local_staging.job_uri(job_type="t", job_id="j")
    for index in (1, 0):
        local_staging.upload_file(
            local_path=_file(tmp_path, f"p{index}", b"x"),
            uri=f"{job}/output/part-{index:05d}.parquet",
        )
    local_staging.upload_file(local_path=_file(tmp_path, "i", b"in"), uri=f"{job}/input.parquet")
    assert list(iter_output_uris(local_staging, job_uri=job)) == [
        f"{job}/output/part-00000.parquet",
        f"{job}/output/part-00001.parquet",
    ]
    assert local_staging.list_uris(prefix_uri=f"{job}/in") == [f"{job}/input.parquet"]
    assert local_staging.list_uris(prefix_uri=f"{job}/nothing/") == []
    assert local_staging.exists(uri=f"{job}/input.parquet")
    assert not local_staging.exists(uri=f"{job}/missing.parquet")


def test_local_refuses_paths_outside_the_root(local_staging: LocalStaging) -> None:
    with pytest.raises(StagingError, match="outside"):
        local_staging.exists(uri=f"{local_staging.root_uri}/../elsewhere")
    with pytest.raises(StagingError):
        local_staging.job_uri(job_type="../x", job_id="j")


def test_local_check_access_on_a_file(tmp_path: Path) -> None:
    blocker = tmp_path / "file"
    blocker.write_text("not a directory")
    with pytest.raises(StagingError, match="staging"):
        LocalStaging(root_uri=(blocker / "staging").as_uri()).check_access()


# -- gs:// ----------------------------------------------------------------------------------


def test_gcs_staging_implements_the_protocol(gcs_staging: GCSStaging) -> None:
    assert isinstance(gcs_staging, Staging)
    assert gcs_staging.job_uri(job_type="t", job_id="j") == f"gs://{STAGING_BUCKET}/batch/t/j"


def test_gcs_upload_is_create_only_and_verified(
    gcs_staging: GCSStaging, gcs_client: storage.Client, tmp_path: Path
) -> None:
    uri = gcs_staging.job_uri(job_type="t", job_id="j") + "/input.parquet"
    gcs_staging.check_access()
    gcs_staging.upload_file(local_path=_file(tmp_path, "a", b"first version"), uri=uri)

    blob = gcs_client.bucket(STAGING_BUCKET).get_blob("batch/t/j/input.parquet")
    assert blob is not None and blob.crc32c == _crc(b"first version")
    generation = blob.generation

    with pytest.raises(ObjectExistsError, match=uri) as refused:
        gcs_staging.upload_file(local_path=_file(tmp_path, "b", b"second version"), uri=uri)
    assert not isinstance(refused.value, IdenticalObjectExistsError)
    with pytest.raises(IdenticalObjectExistsError, match="identical"):
        gcs_staging.upload_file(local_path=_file(tmp_path, "c", b"first version"), uri=uri)

    after = gcs_client.bucket(STAGING_BUCKET).get_blob("batch/t/j/input.parquet")
    assert after is not None and after.generation == generation
    assert after.download_as_bytes() == b"first version"
    assert gcs_staging.exists(uri=uri)
    assert not gcs_staging.exists(uri=uri + ".missing")


def test_gcs_missing_bucket_fails_before_anything(
    gcs_client: storage.Client, gcs_emulator: RunningEmulator
) -> None:
    staging = GCSStaging(root_uri="gs://no-such-bucket/batch", client=gcs_client)
    with pytest.raises(StagingError, match="gs://no-such-bucket.*does not exist"):
        staging.check_access()
    assert not [k for k in gcs_emulator.faults.served if k.startswith("POST")]


def test_gcs_access_denied_is_clear(gcs_staging: GCSStaging, gcs_emulator: RunningEmulator) -> None:
    # Only the object listing: the storage client also GETs the bucket's metadata in a
    # background thread (observability cache), at a time of its choosing.
    gcs_emulator.faults.fail_next(1, status=403, method="GET", path_contains="/o")
    with pytest.raises(StagingError, match=f"gs://{STAGING_BUCKET} is denied"):
        gcs_staging.check_access()


def test_gcs_survives_a_503_storm_on_upload_and_list(
    gcs_staging: GCSStaging, gcs_emulator: RunningEmulator, tmp_path: Path
) -> None:
    job = gcs_staging.job_uri(job_type="t", job_id="storm")
    gcs_emulator.faults.fail_next(3, status=503, method="POST", path_contains="/upload/")
    gcs_emulator.faults.fail_next(1, status=429, method="POST", path_contains="/upload/")
    gcs_staging.upload_file(local_path=_file(tmp_path, "a", b"data"), uri=f"{job}/input.parquet")
    assert gcs_emulator.faults.injected["POST"] == 4

    gcs_emulator.faults.fail_next(3, status=503, method="GET", path_contains="/o")
    assert gcs_staging.list_uris(prefix_uri=f"{job}/") == [f"{job}/input.parquet"]
    assert gcs_emulator.faults.injected["GET"] == 3


def test_gcs_open_read_streams_ranges(
    gcs_client: storage.Client, gcs_emulator: RunningEmulator, tmp_path: Path
) -> None:
    staging = GCSStaging(
        root_uri=f"gs://{STAGING_BUCKET}/batch",
        client=gcs_client,
        retry=fast_gcs_retry(),
        read_chunk_size=256 * 1024,
    )
    content = os.urandom(1024 * 1024 + 17)
    uri = staging.job_uri(job_type="t", job_id="read") + "/output/part-00000.parquet"
    staging.upload_file(local_path=_file(tmp_path, "big", content), uri=uri)
    downloads_before = sum(v for k, v in gcs_emulator.faults.served.items() if "/download/" in k)

    with staging.open_read(uri=uri) as stream:
        assert stream.read(10) == content[:10]
        stream.seek(len(content) - 7)
        assert stream.read() == content[-7:]
        stream.seek(0)
        assert b"".join(iter(lambda: stream.read(64 * 1024), b"")) == content

    downloads = sum(v for k, v in gcs_emulator.faults.served.items() if "/download/" in k)
    assert downloads - downloads_before >= 5  # ranged reads, never one whole-file download
    with pytest.raises(StagingError, match="does not exist"):
        staging.open_read(uri=uri + ".missing")


def test_gcs_refuses_uris_outside_the_root(gcs_staging: GCSStaging, tmp_path: Path) -> None:
    with pytest.raises(StagingError, match="not in the staging bucket"):
        gcs_staging.upload_file(local_path=_file(tmp_path, "a", b"x"), uri="gs://other/batch/x")
    with pytest.raises(StagingError, match="outside"):
        gcs_staging.upload_file(
            local_path=_file(tmp_path, "a", b"x"), uri=f"gs://{STAGING_BUCKET}/x"
        )


def test_staging_from_uri(tmp_path: Path, gcs_client: storage.Client) -> None:
    assert isinstance(staging_from_uri(tmp_path.as_uri()), LocalStaging)
    gcs = staging_from_uri(f"gs://{STAGING_BUCKET}/p", gcs_client=gcs_client)
    assert isinstance(gcs, GCSStaging) and gcs.root_uri == f"gs://{STAGING_BUCKET}/p"
    with pytest.raises(StagingError, match="unsupported"):
        staging_from_uri("s3://bucket/x")


def test_gcs_client_builds_from_anonymous_credentials(gcs_emulator: RunningEmulator) -> None:
    client = storage.Client(project="test", credentials=AnonymousCredentials())
    assert [b.name for b in client.list_buckets()] == [STAGING_BUCKET]


def test_gcs_corrupted_resumable_upload_is_a_clear_error_and_leaves_nothing(
    gcs_staging: GCSStaging,
    gcs_client: storage.Client,
    gcs_emulator: RunningEmulator,
    tmp_path: Path,
) -> None:
    """Over 8 MiB the client uploads in resumable mode and checks the stored CRC32C itself:
    a damaged transfer raises DataCorruption, which must not escape raw nor leave the object."""
    content = os.urandom(9 * 1024 * 1024)
    uri = gcs_staging.job_uri(job_type="t", job_id="big") + "/input.parquet"
    gcs_emulator.faults.corrupt_next_uploads(1)
    with pytest.raises(StagingError, match="corrupted in transit") as raised:
        gcs_staging.upload_file(local_path=_file(tmp_path, "big", content), uri=uri)
    assert raised.value.__cause__ is None
    assert gcs_emulator.faults.injected["corrupt"] == 1
    assert gcs_client.bucket(STAGING_BUCKET).get_blob("batch/t/big/input.parquet") is None
    # launching again uploads it intact
    gcs_staging.upload_file(local_path=_file(tmp_path, "big2", content), uri=uri)
    blob = gcs_client.bucket(STAGING_BUCKET).get_blob("batch/t/big/input.parquet")
    assert blob is not None and blob.crc32c == _crc(content)
