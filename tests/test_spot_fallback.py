"""SPOT that pays off, end to end: a SPOT job whose VM is preempted twice (Batch's exit code
50001, on the tasks' status events as ListTasks reports them) is moved on by the sensor to its
STANDARD alternative, which computes only the chunks left; the import takes each product once.

Real parts: the code location's sensor, launch, fallback and finish runs; the real
BatchServiceClient against the gRPC fake Batch (tests/fakes/fake_batch_service.py: on a Spot
job, a container killed from outside is reported as a reclaimed VM, 50001), which runs the
real spellcheck container (CPU engine) through the local runner; staging on the GCS emulator;
embedded PostgreSQL. The container is killed before writing chunk 6 on its first two attempts
(tests/fixtures/task_spellcheck_dies.py), as a preempted VM's is; the third hangs (the job is
still RUNNING when the follower counts the preemptions)."""

from __future__ import annotations

import json
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import dagster as dg
import psycopg
import pyarrow.parquet as pq
import pytest
import yaml

from robotoff_batch.batch.engine import JobState
from robotoff_batch.batch.local import LocalBatchEngine
from robotoff_batch.config.loader import load_job_configs
from robotoff_batch.definitions import build_definitions
from robotoff_batch.follow.fallback import preemptions
from robotoff_batch.job_types import load_registry
from robotoff_batch.job_types.ingredients_spellcheck import cached_lexicon
from robotoff_batch.paths import JOB_CONFIGS_DIR, SAMPLE_DATA_DIR
from tests.fakes.fake_batch_service import (
    EmulatedCloudBatchEngineResource,
    emulated_cloud_resources,
    running_fake_batch_service,
)
from tests.fakes.pinned_weights import pin, stage_marker
from tests.fakes.settings import TEST_LOCATION, TEST_PROJECT
from tests.test_e2e import failure_text, launch, launched_job_id, run_request, tick
from tests.test_fallback import env_of, follow_to_the_end, imports

JOB_TYPE = "ingredients-spellcheck"
IMAGE = "europe-docker.pkg.dev/robotoff/robotoff-batch/ingredients-spellcheck:0.1.0"
FIXTURE = Path(__file__).parent / "fixtures" / "task_spellcheck_dies.py"
ROWS, CHUNK = 100, 10


@pytest.fixture
def world(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, pg_db: str) -> Iterator[tuple[Any, ...]]:
    """The spellcheck config on SPOT (3 retries) with one alternative, the same on STANDARD,
    fallback_after_preemptions 2; the container dies on its first two attempts."""
    monkeypatch.setenv("ROBOTOFF_BATCH_HOME", str(tmp_path / "home"))
    monkeypatch.setenv("ROBOTOFF_BATCH_IMPORT_RETRY_DELAY_S", "0")
    data = yaml.safe_load((JOB_CONFIGS_DIR / f"{JOB_TYPE}.yaml").read_text())
    data["resources"]["container_image_uri"] = IMAGE
    data["resources"]["provisioning_model"] = "SPOT"
    data["resources"]["max_retry_count"] = 3
    data["fallbacks"] = [{"provisioning_model": "STANDARD"}]
    data["fallback_after_preemptions"] = 2
    data["max_cost_usd"] = 100  # 4 attempts of the STANDARD alternative: $86.05
    pin(data)
    path = tmp_path / "job_configs" / f"{JOB_TYPE}.yaml"
    path.parent.mkdir()
    path.write_text(yaml.safe_dump(data, sort_keys=False))
    registry = load_registry(load_job_configs([path]))
    lexicon, _ = cached_lexicon(str(SAMPLE_DATA_DIR / "food_sample_2026.parquet"))
    counts = tmp_path / "counts"
    counts.mkdir()
    command = [
        "env",
        "DIE_AT=before-chunk-6",
        "DIE_ATTEMPTS=2",
        f"COUNT_DIR={counts}",
        "COUNT_PER_JOB=1",
        sys.executable,
        str(FIXTURE),
        "--engine",
        "lexicon-cpu",
        "--lexicon",
        lexicon.as_uri(),
        "--chunk-rows",
        str(CHUNK),
    ]
    backend = LocalBatchEngine(state_dir=tmp_path / "vms", commands_by_image={IMAGE: command})
    with running_fake_batch_service(backend=backend) as service, dg.instance_for_test() as inst:
        resources = emulated_cloud_resources(service.address, pg_db)
        stage_marker(resources["staging"].get_staging())
        resources["batch_engine"] = EmulatedCloudBatchEngineResource(
            gcp_project=TEST_PROJECT,
            gcp_location=TEST_LOCATION,
            emulator_host=service.address,
            extra_locations=registry[JOB_TYPE].config.locations,
        )
        defs = build_definitions(resources=resources, registry=list(registry.values()))
        yield defs, inst, resources, service, counts
        for name in service.job_names():
            backend.cancel(job_id=name.rsplit("/", 1)[-1])


def read_json(staging: Any, uri: str) -> Any:
    with staging.open_read(uri=uri) as stream:
        return json.loads(stream.read())


def test_a_preempted_spot_job_moves_to_standard_and_only_the_rest_is_computed(
    world: tuple[Any, ...], pg_db: str
) -> None:
    defs, instance, resources, service, counts = world
    result = launch(defs, instance, limit=ROWS)
    assert result.success, failure_text(result)
    first = launched_job_id(result)
    engine = resources["batch_engine"].get_engine()
    staging = resources["staging"].get_staging()

    cursor = None
    request = None
    for _ in range(480):  # the sensor, until it asks for the fallback run
        due = tick(defs, instance, resources, cursor)
        cursor = due.cursor
        asked = [r for r in due.run_requests if r.job_name.startswith("fallback_")]
        assert not [r for r in due.run_requests if r.job_name.startswith("finish_")]
        if asked:
            (request,) = asked
            break
        time.sleep(0.25)
    seen = engine.get_job(job_id=first)
    assert request is not None, (seen.state, [(t.state, t.runs) for t in seen.tasks])
    status = engine.get_job(job_id=first)
    assert status.state is JobState.RUNNING and preemptions(status) == 2
    assert request.run_key == f"fallback-{first}-1" and request.partition_key == first

    ran = run_request(defs, instance, request)
    assert ran.success, failure_text(ran)
    new = f"{first}-f1"
    created = {r.job_id: r.job for r in service.requests["CreateJob"]}
    model = created[new].allocation_policy.instances[0].policy.provisioning_model
    assert model.name == "STANDARD"
    assert created[first].allocation_policy.instances[0].policy.provisioning_model.name == "SPOT"
    first_output = env_of(service, first)["OUTPUT_FILE_PATH"]
    assert env_of(service, new)["CARRY_OUTPUT_URIS"] == first_output

    finished = follow_to_the_end((defs, instance, resources, service), cursor, {first, new})
    assert engine.get_job(job_id=first).state is JobState.CANCELLED
    assert engine.get_job(job_id=new).state is JobState.SUCCEEDED
    assert finished[new].success, failure_text(finished[new])
    assert imports(pg_db) == [new]  # the superseded SPOT job is not imported

    # only the remainder was computed on STANDARD: chunks 6..9, by one attempt
    input_uri = env_of(service, first)["INPUT_FILE_PATH"]
    with staging.open_read(uri=input_uri) as stream:
        texts = pq.read_table(stream).column("text").to_pylist()
    sent = [bool(t and t.strip()) and len(t) <= 10_000 for t in texts]
    per_chunk = [sum(sent[k : k + CHUNK]) for k in range(0, ROWS, CHUNK)]

    def counted(job_id: str, attempt: int) -> int:
        path = counts / job_id / f"attempt-{attempt}"
        return sum(int(n) for n in path.read_text().split()) if path.exists() else 0

    assert counted(first, 0) == sum(per_chunk[:7])  # chunks 0..6, killed before writing 6
    assert counted(new, 0) == sum(per_chunk[6:]) and counted(new, 1) == 0
    manifest = read_json(
        staging, f"{env_of(service, new)['OUTPUT_FILE_PATH']}/task-00000/manifest.json"
    )
    assert manifest["complete"] and len(manifest["chunks"]) == ROWS // CHUNK
    uris = [c["uri"] for c in manifest["chunks"]]
    assert all(u.startswith(first_output) for u in uris[:6])  # carried, not copied
    assert all(u.startswith(env_of(service, new)["OUTPUT_FILE_PATH"]) for u in uris[6:])

    # each product once; every check of the import passed (the carried chunks counted)
    rows = []
    for uri in uris:
        with staging.open_read(uri=uri) as stream:
            rows.extend(pq.read_table(stream).to_pylist())
    changed = {
        r["code"] for r in rows if r["correction"] is not None and r["correction"] != r["text"]
    }
    with psycopg.connect(pg_db) as conn:
        found = conn.execute("SELECT barcode, count(*) FROM prediction GROUP BY barcode").fetchall()
    assert changed and {b for b, _ in found} == changed
    assert all(n == 1 for _, n in found)
    checks = {e.check_name: e.passed for e in finished[new].get_asset_check_evaluations()}
    assert checks and all(checks.values()), checks
