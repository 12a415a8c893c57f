"""Pytest fixtures for the Google Cloud path: GCS emulator, fake Cloud Batch, engines.

Registered through ``pytest_plugins`` in ``tests/conftest.py``. Everything here is real
client code against local servers: google-cloud-storage against gcp-storage-emulator, the
``BatchServiceClient`` against :class:`tests.fakes.fake_batch_service.FakeBatchService` over gRPC.
"""

from __future__ import annotations

import sys
from collections.abc import Iterator, Mapping, Sequence
from pathlib import Path

import google.cloud.storage as storage
import pytest
from google.auth.credentials import AnonymousCredentials

from robotoff_batch.batch.cloud_batch import CloudBatchEngine
from robotoff_batch.batch.cloud_logging import TaskLogReader
from robotoff_batch.batch.local import LocalBatchEngine
from robotoff_batch.staging.gcs import GCSStaging
from tests.fakes.fake_batch_service import FakeBatchService, running_fake_batch_service
from tests.fakes.gcs_emulator import RunningEmulator, running_gcs_emulator
from tests.fakes.settings import (
    FAKE_CONTAINER_SCRIPT,
    FAKE_IMAGE_FAIL,
    FAKE_IMAGE_OK,
    FAKE_IMAGE_SLEEP,
    STAGING_BUCKET,
    TEST_LOCATION,
    TEST_PROJECT,
    fast_batch_retry,
    fast_gcs_retry,
)


@pytest.fixture
def gcs_emulator(monkeypatch: pytest.MonkeyPatch) -> Iterator[RunningEmulator]:
    """gcp-storage-emulator with the staging bucket; STORAGE_EMULATOR_HOST points at it."""
    with running_gcs_emulator(buckets=(STAGING_BUCKET,)) as emulator:
        monkeypatch.setenv("STORAGE_EMULATOR_HOST", emulator.url)
        yield emulator


@pytest.fixture
def gcs_client(gcs_emulator: RunningEmulator) -> storage.Client:
    return storage.Client(project="test", credentials=AnonymousCredentials())


@pytest.fixture
def gcs_staging(gcs_client: storage.Client) -> GCSStaging:
    return GCSStaging(
        root_uri=f"gs://{STAGING_BUCKET}/batch", client=gcs_client, retry=fast_gcs_retry()
    )


@pytest.fixture
def fake_container_commands(tmp_path: Path) -> Mapping[str, Sequence[str]]:
    """Commands the local runner runs for the fake images (a tiny Python 'container')."""
    script = tmp_path / "fake_container.py"
    script.write_text(FAKE_CONTAINER_SCRIPT)
    return {
        FAKE_IMAGE_OK: [sys.executable, str(script), "ok"],
        FAKE_IMAGE_FAIL: [sys.executable, str(script), "fail"],
        FAKE_IMAGE_SLEEP: [sys.executable, str(script), "sleep"],
    }


@pytest.fixture
def local_batch_backend(
    tmp_path: Path, fake_container_commands: Mapping[str, Sequence[str]]
) -> Iterator[LocalBatchEngine]:
    """The project's local runner, which the fake Batch service runs the tasks with."""
    backend = LocalBatchEngine(
        state_dir=tmp_path / "local-batch", commands_by_image=fake_container_commands
    )
    yield backend
    backend.close()


@pytest.fixture
def fake_batch_service(local_batch_backend: LocalBatchEngine) -> Iterator[FakeBatchService]:
    """The fake BatchService over gRPC, running jobs through the local runner."""
    with running_fake_batch_service(backend=local_batch_backend) as service:
        yield service
        for name in service.job_names():  # stop what a failed test left running
            local_batch_backend.cancel(job_id=name.rsplit("/", 1)[-1])


@pytest.fixture
def cloud_batch_engine(fake_batch_service: FakeBatchService) -> CloudBatchEngine:
    """The real engine and the real ``BatchServiceClient``, on the fake over gRPC."""
    return CloudBatchEngine(
        project=TEST_PROJECT,
        location=TEST_LOCATION,
        client=fake_batch_service.client(),
        retry=fast_batch_retry(),
        timeout=10.0,
        logs=TaskLogReader(project=TEST_PROJECT, client=fake_batch_service.logging_client()),
    )
