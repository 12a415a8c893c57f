"""Against real Google Cloud: skipped unless credentials and a project are configured.

Needs ``GOOGLE_APPLICATION_CREDENTIALS`` or ``GOOGLE_CREDENTIALS`` and
``ROBOTOFF_BATCH_GCP_PROJECT`` (``ROBOTOFF_BATCH_GCP_LOCATION`` defaults to europe-west4).
The staging checks also need ``ROBOTOFF_BATCH_STAGING_URI=gs://...``. Nothing here creates a
Batch job (no cost): it proves the API accepts our requests (the label filter syntax, NOT_FOUND
handling) and that the bucket behaves as the emulator does (create-only uploads).
"""

from __future__ import annotations

import os
import uuid
from pathlib import Path

import pytest

from robotoff_batch.batch.cloud_batch import CloudBatchEngine
from robotoff_batch.batch.engine import JobNotFoundError
from robotoff_batch.gcp_credentials import load_credentials
from robotoff_batch.staging import ObjectExistsError, staging_from_uri
from robotoff_batch.staging.gcs import GCSStaging

_HAS_CREDENTIALS = bool(
    os.environ.get("GOOGLE_APPLICATION_CREDENTIALS") or os.environ.get("GOOGLE_CREDENTIALS")
)
_PROJECT = os.environ.get("ROBOTOFF_BATCH_GCP_PROJECT")

pytestmark = [
    pytest.mark.integration,
    pytest.mark.skipif(
        not (_HAS_CREDENTIALS and _PROJECT),
        reason="real Google Cloud test: set GOOGLE_APPLICATION_CREDENTIALS or "
        "GOOGLE_CREDENTIALS, and ROBOTOFF_BATCH_GCP_PROJECT",
    ),
]


@pytest.fixture
def engine() -> CloudBatchEngine:
    credentials, _ = load_credentials()
    assert _PROJECT
    return CloudBatchEngine.from_settings(
        _PROJECT,
        os.environ.get("ROBOTOFF_BATCH_GCP_LOCATION", "europe-west4"),
        credentials=credentials,
    )


def test_list_jobs_filter_is_accepted(engine: CloudBatchEngine) -> None:
    labels = {"app": "robotoff-batch", "job-type": f"integration-{uuid.uuid4().hex[:8]}"}
    assert engine.list_jobs(labels=labels) == []


def test_missing_job(engine: CloudBatchEngine) -> None:
    job_id = f"robotoff-batch-missing-{uuid.uuid4().hex[:8]}"
    with pytest.raises(JobNotFoundError):
        engine.get_job(job_id=job_id)
    engine.cancel(job_id=job_id)  # already gone: not an error


def test_staging_bucket_is_create_only(tmp_path: Path) -> None:
    root = os.environ.get("ROBOTOFF_BATCH_STAGING_URI", "")
    if not root.startswith("gs://"):
        pytest.skip("set ROBOTOFF_BATCH_STAGING_URI=gs://bucket/prefix to test the bucket")
    staging = staging_from_uri(root)
    assert isinstance(staging, GCSStaging)
    staging.check_access()
    local = tmp_path / "probe.txt"
    local.write_bytes(b"robotoff-batch integration probe")
    uri = staging.job_uri(job_type="integration", job_id=uuid.uuid4().hex) + "/probe.txt"
    staging.upload_file(local_path=str(local), uri=uri)
    try:
        with pytest.raises(ObjectExistsError):
            staging.upload_file(local_path=str(local), uri=uri)
        with staging.open_read(uri=uri) as stream:
            assert stream.read() == local.read_bytes()
    finally:
        staging.client.bucket(staging.bucket_name).blob(uri.split("/", 3)[3]).delete()
