"""The Google path end to end: gs:// staging on the GCS emulator, the real BatchServiceClient
against the gRPC fake (whose tasks run the real spellcheck container through the local
runner), the sensor, and the import into a real PostgreSQL."""

from __future__ import annotations

import io
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import dagster as dg
import pyarrow.parquet as pq
import pytest
from google.auth.credentials import AnonymousCredentials
from google.cloud import storage

from robotoff_batch.batch.local import LocalBatchEngine
from robotoff_batch.definitions import build_definitions
from robotoff_batch.job_types import load_registry
from robotoff_batch.job_types.ingredients_spellcheck import cached_lexicon
from robotoff_batch.paths import SAMPLE_DATA_DIR
from robotoff_batch.resources import (
    GCSStagingResource,
    PostgresPredictionStoreResource,
    ProductDumpResource,
)
from tests.fakes.fake_batch_service import (
    EmulatedCloudBatchEngineResource,
    FakeBatchService,
    emulated_cloud_resources,
    running_fake_batch_service,
)
from tests.fakes.pinned_weights import REVISION, pinned_registry, stage_marker
from tests.fakes.settings import STAGING_BUCKET, TEST_LOCATION, TEST_PROJECT
from tests.test_e2e import (
    db_rows,
    failure_text,
    launch,
    launched_job_id,
    run_request,
    tick_until_done,
)

JOB_TYPE = "ingredients-spellcheck"


@pytest.fixture
def spellcheck_batch_service(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> Iterator[FakeBatchService]:
    """The fake Cloud Batch, playing the spellcheck image with its real entrypoint.

    The production config runs vLLM (no GPU here): its VMs play it with the CPU engine, given
    a lexicon of the sample dump by argument, since a vLLM job stages none."""
    monkeypatch.setenv("ROBOTOFF_BATCH_HOME", str(tmp_path / "home"))
    registered = load_registry()[JOB_TYPE]
    lexicon, _ = cached_lexicon(str(SAMPLE_DATA_DIR / "food_sample_2026.parquet"))
    command = [*registered.job_type.local_command, "--lexicon", lexicon.as_uri()]
    backend = LocalBatchEngine(
        state_dir=tmp_path / "fake-batch-vms",
        commands_by_image={registered.config.resources.container_image_uri: command},
    )
    with running_fake_batch_service(backend=backend) as service:
        yield service
        for name in service.job_names():
            backend.cancel(job_id=name.rsplit("/", 1)[-1])


PINNED: dict[str, Any] = {}


def make_defs(resources: dict[str, Any]) -> dg.Definitions:
    """The real code location on these resources, the spellcheck config's model revision
    pinned (a deployment that ran `stage-weights`; the marker is staged by google_resources)."""
    return build_definitions(resources=resources, registry=list(PINNED["registry"].values()))


@pytest.fixture(autouse=True)
def pinned(tmp_path: Path) -> None:
    PINNED["registry"] = pinned_registry(tmp_path)


@pytest.fixture
def google_resources(
    spellcheck_batch_service: FakeBatchService, gcs_emulator: Any, pg_db: str
) -> dict[str, Any]:
    stage_marker(
        GCSStagingResource(
            root_uri=f"gs://{STAGING_BUCKET}/batch", gcp_project="test"
        ).get_staging()
    )
    return {
        "product_dump": ProductDumpResource(path=str(SAMPLE_DATA_DIR / "food_sample_2026.parquet")),
        "staging": GCSStagingResource(root_uri=f"gs://{STAGING_BUCKET}/batch", gcp_project="test"),
        "batch_engine": EmulatedCloudBatchEngineResource(
            gcp_project=TEST_PROJECT,
            gcp_location=TEST_LOCATION,
            emulator_host=spellcheck_batch_service.address,
        ),
        "prediction_store": PostgresPredictionStoreResource(database_url=pg_db),
    }


@pytest.fixture
def instance(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[dg.DagsterInstance]:
    monkeypatch.setenv("ROBOTOFF_BATCH_HOME", str(tmp_path / "home"))
    with dg.instance_for_test() as inst:
        yield inst


def test_gcs_and_cloud_batch_from_launch_to_predictions(
    google_resources: dict[str, Any],
    spellcheck_batch_service: FakeBatchService,
    instance: dg.DagsterInstance,
    pg_db: str,
) -> None:
    defs = make_defs(google_resources)
    result = launch(defs, instance, limit=60)
    assert result.success, failure_text(result)
    job_id = launched_job_id(result)

    bucket = storage.Client(project="test", credentials=AnonymousCredentials()).bucket(
        STAGING_BUCKET
    )
    prefix = f"batch/{JOB_TYPE}/{job_id}/"
    staged = {b.name.removeprefix(prefix) for b in bucket.list_blobs(prefix=prefix)}
    # vLLM reads no lexicon: none built, none staged; the import reads the product facts
    assert staged == {"input.parquet", "products.parquet"}

    created = spellcheck_batch_service.requests["CreateJob"][0]
    job = created.job
    assert job.task_groups[0].task_spec.environment.variables["INPUT_FILE_PATH"] == (
        f"gs://{STAGING_BUCKET}/{prefix}input.parquet"
    )
    assert job.task_groups[0].task_spec.environment.variables["BUCKET_NAME"] == STAGING_BUCKET
    # a GPU job reads the pinned revision's staged weights, with the hub off
    variables = job.task_groups[0].task_spec.environment.variables
    assert variables["HF_HUB_OFFLINE"] == "1"
    assert variables["SPELLCHECK_MODEL_REVISION"] == REVISION
    assert variables["SPELLCHECK_WEIGHTS_URI"] == (
        f"gs://{STAGING_BUCKET}/batch/models/openfoodfacts/spellcheck-mistral-7b/{REVISION}"
    )
    assert job.allocation_policy.instances[0].policy.accelerators[0].type_ == "nvidia-l4"

    calls_before = dict(spellcheck_batch_service.calls)
    requests, states, _ = tick_until_done(defs, instance, google_resources)
    assert states and states[-1] in ("QUEUED", "SCHEDULED", "RUNNING"), states
    assert requests and requests[0].partition_key == job_id
    ticks_list_calls = spellcheck_batch_service.calls["ListJobs"] - calls_before.get("ListJobs", 0)
    assert ticks_list_calls >= 1
    # no per-job read on a tick, but a RUNNING job's progress reading (GetJob + ListTasks, at
    # most once a minute per job: follow/progress.py): at most one here, the ticks are seconds
    got_job = spellcheck_batch_service.calls.get("GetJob", 0) - calls_before.get("GetJob", 0)
    listed = spellcheck_batch_service.calls.get("ListTasks", 0) - calls_before.get("ListTasks", 0)
    assert got_job <= 1 and listed == got_job, (got_job, listed)

    (request,) = requests
    imported = run_request(defs, instance, request)
    assert imported.success, failure_text(imported)
    checks = imported.get_asset_check_evaluations()
    assert len(checks) == 4 and all(c.passed for c in checks)
    # its cost, from the Cloud Batch task events and the job's own allocation policy
    mat = instance.get_latest_materialization_event(
        dg.AssetKey(["ingredients_spellcheck", "batch_job"])
    )
    assert mat is not None and mat.asset_materialization is not None
    meta = mat.asset_materialization.metadata
    assert str(meta["actual_cost"].value).startswith("actual cost: $"), meta["actual_cost"]
    assert "(g2-standard-8 + 1 x nvidia-l4, STANDARD)" in str(meta["actual_cost"].value)
    assert meta["actual_cost_usd"].value > 0 and meta["products"].value == 60

    expected = {}
    output = [
        b.name.removeprefix(f"{prefix}output/")
        for b in bucket.list_blobs(prefix=f"{prefix}output/")
    ]
    # checkpointed: the task's chunks and the manifest listing them (written over gs://)
    assert "task-00000/manifest.json" in output and "task-00000/chunk-00000.parquet" in output
    for blob in bucket.list_blobs(prefix=f"{prefix}output/"):
        if not blob.name.endswith(".parquet"):
            continue
        table = pq.read_table(io.BytesIO(blob.download_as_bytes()))
        for row in table.to_pylist():
            if row["correction"] != row["text"]:
                expected[row["code"]] = row["correction"]
    assert expected
    rows = db_rows(pg_db, job_id)
    assert {r["barcode"]: r["data"]["correction"] for r in rows} == expected


def test_one_list_jobs_call_per_sensor_tick_with_50_jobs_in_flight(
    instance: dg.DagsterInstance, pg_db: str
) -> None:
    """The sensor's tick costs one ListJobs call, whatever the number of jobs in flight."""
    from datetime import UTC, datetime

    from robotoff_batch.batch.request import build_create_job_request, make_job_id
    from tests.test_e2e import tick

    registered = load_registry()[JOB_TYPE]
    with running_fake_batch_service(backend=None) as service:  # jobs stay QUEUED: no VM
        resources = emulated_cloud_resources(service.address, pg_db)
        engine = resources["batch_engine"].get_engine()
        job_ids = [
            make_job_id(JOB_TYPE, launched_at=datetime.now(UTC), nonce=str(i)) for i in range(50)
        ]
        for job_id in job_ids:
            engine.submit(
                request=build_create_job_request(
                    registered.config.resources,
                    job_type=JOB_TYPE,
                    job_id=job_id,
                    project=TEST_PROJECT,
                    environment={},
                    labels={},
                )
            )
        defs = make_defs(resources)
        before = dict(service.calls)
        first = tick(defs, instance, resources, None)
        registered_ids = [k for r in first.dynamic_partitions_requests for k in r.partition_keys]
        assert sorted(registered_ids) == sorted(job_ids)
        assert len(first.asset_events) == 50  # each job's first state: QUEUED
        after_first = dict(service.calls)
        second = tick(defs, instance, resources, first.cursor)
        assert not second.asset_events and not second.run_requests
        per_tick = [
            {k: after_first.get(k, 0) - before.get(k, 0) for k in after_first},
            {k: service.calls.get(k, 0) - after_first.get(k, 0) for k in service.calls},
        ]
        for calls in per_tick:
            assert {k: v for k, v in calls.items() if v} == {"ListJobs": 1}


def test_a_job_outside_the_engines_region_is_not_submitted(
    google_resources: dict[str, Any],
    spellcheck_batch_service: FakeBatchService,
    instance: dg.DagsterInstance,
) -> None:
    """The sensor lists its regions only; a job elsewhere would never be followed: refuse it."""
    resources = dict(google_resources)
    resources["batch_engine"] = EmulatedCloudBatchEngineResource(
        gcp_project=TEST_PROJECT,
        gcp_location="us-central1",
        extra_locations=[],  # not the job configs' regions
        emulator_host=spellcheck_batch_service.address,
    )
    result = launch(make_defs(resources), instance, limit=5)
    assert not result.success
    assert "runs in europe-west4 but the batch engine follows us-central1" in failure_text(result)
    assert spellcheck_batch_service.calls.get("CreateJob", 0) == 0
