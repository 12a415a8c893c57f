"""The checkpointed task output on gs://, against the GCS emulator made to honour
``ifGenerationMatch`` as GCS does (tests/fakes/gcs_emulator.py): a chunk is created once and
never overwritten, and the manifest is replaced by compare-and-swap, so two attempts of a
task racing on it (a preempted VM's zombie and its retry) never lose a chunk.

The container's own writer (containers/ingredients-spellcheck/spellcheck_job/checkpoint.py,
io.py) with the real google-cloud-storage client; no double of our code."""

from __future__ import annotations

import sys
import threading
from collections.abc import Iterator
from typing import Any

import google.cloud.storage as storage
import pyarrow as pa
import pytest
import requests

from robotoff_batch.paths import CONTAINERS_DIR
from tests.fakes.gcs_emulator import RunningEmulator
from tests.fakes.settings import STAGING_BUCKET

pytest_plugins = ["tests.gcp_fixtures"]

sys.path.insert(0, str(CONTAINERS_DIR / "ingredients-spellcheck"))

from spellcheck_job import io as job_io  # noqa: E402
from spellcheck_job.checkpoint import TaskCheckpoint  # noqa: E402

OUTPUT = f"gs://{STAGING_BUCKET}/batch/ingredients-spellcheck/job-1/output"
MANIFEST = "batch/ingredients-spellcheck/job-1/output/task-00000/manifest.json"
ROWS, CHUNK = 40, 10


@pytest.fixture
def client(gcs_emulator: RunningEmulator, monkeypatch: pytest.MonkeyPatch) -> Iterator[Any]:
    monkeypatch.setattr(job_io, "_gcs_client", None)  # a client of this test's emulator
    yield storage.Client()
    monkeypatch.setattr(job_io, "_gcs_client", None)


def open_task(attempt: int) -> TaskCheckpoint:
    return TaskCheckpoint.open(
        output_uri=OUTPUT,
        task_index=0,
        task_count=1,
        shard=(0, ROWS),
        chunk_rows=CHUNK,
        engine="lexicon-cpu",
        predictor_version="v-test",
        attempt=attempt,
    )


def chunk_table(k: int, tag: str = "") -> pa.Table:
    codes = [f"{k * CHUNK + i:013d}" for i in range(CHUNK)]
    return pa.table(
        {"code": codes, "correction": [f"{tag}{c}" for c in codes], "skipped": [None] * CHUNK}
    )


def listed(client: Any) -> list[str]:
    import json

    blob = client.bucket(STAGING_BUCKET).get_blob(MANIFEST)
    return [c["uri"].rsplit("/", 1)[1] for c in json.loads(blob.download_as_bytes())["chunks"]]


def test_an_overtaken_attempt_cannot_roll_the_manifest_back(client: Any) -> None:
    """A (a preempted VM still running) and B (its retry) both read the manifest listing chunk
    0. B lists chunks 1 and 2; A then finishes chunk 1 (the same rows: the same bytes, kept)
    and saves its manifest, which would list 0..1 only: GCS refuses it (generation changed),
    A fails, and the manifest still lists all three chunks."""
    first = open_task(0)
    first.write_chunk(chunk_table(0), {}, CHUNK)
    zombie, retry = open_task(1), open_task(2)
    assert zombie.generation == retry.generation == first.generation > 0
    retry.write_chunk(chunk_table(1), {}, CHUNK)
    retry.write_chunk(chunk_table(2), {}, CHUNK)
    with pytest.raises(job_io.OutputError, match="changed since this attempt read it"):
        zombie.write_chunk(chunk_table(1), {}, CHUNK)
    assert listed(client) == ["chunk-00000.parquet", "chunk-00001.parquet", "chunk-00002.parquet"]
    resumed = open_task(3)  # the next attempt resumes after chunk 2, nothing recomputed
    assert resumed.next_chunk == 3


def test_concurrent_manifest_writers_have_exactly_one_winner(client: Any) -> None:
    """Eight writers that read the same generation save at once: one succeeds, the other
    seven are refused, and the stored manifest is the winner's."""
    base = open_task(0)
    base.write_chunk(chunk_table(0), {}, CHUNK)
    writers = [open_task(i + 1) for i in range(8)]
    barrier = threading.Barrier(len(writers))
    outcome: dict[int, str] = {}

    def save(i: int, writer: TaskCheckpoint) -> None:
        writer.attempts[-1]["processed"] = 1000 + i  # tells the bodies apart
        barrier.wait()
        try:
            writer.save()
            outcome[i] = "saved"
        except job_io.OutputError:
            outcome[i] = "refused"

    threads = [threading.Thread(target=save, args=(i, w)) for i, w in enumerate(writers)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(30)
    assert sorted(outcome.values()) == ["refused"] * 7 + ["saved"]
    (winner,) = [i for i, o in outcome.items() if o == "saved"]
    found, _ = job_io.read_json(f"gs://{STAGING_BUCKET}/{MANIFEST}")
    assert found is not None and found["attempts"][-1]["processed"] == 1000 + winner
    assert [c["uri"].rsplit("/", 1)[1] for c in found["chunks"]] == ["chunk-00000.parquet"]


def test_a_chunk_is_created_once_and_never_overwritten(client: Any) -> None:
    """Two attempts that computed chunk 0 differently: the second cannot replace the first
    (multipart upload, create-only), nor list it over the first's manifest."""
    a, b = open_task(0), open_task(1)
    a.write_chunk(chunk_table(0, "a:"), {}, CHUNK)
    blob = client.bucket(STAGING_BUCKET).get_blob(
        MANIFEST.replace("manifest.json", "chunk-00000.parquet")
    )
    generation = blob.generation
    with pytest.raises(job_io.OutputError, match="already exists with other content"):
        b.write_chunk(chunk_table(0, "b:"), {}, CHUNK)
    after = client.bucket(STAGING_BUCKET).get_blob(blob.name)
    assert after.generation == generation  # untouched
    table = job_io.read_table(f"gs://{STAGING_BUCKET}/{blob.name}", ("correction",))
    assert table.column("correction")[0].as_py().startswith("a:")
    assert listed(client) == ["chunk-00000.parquet"]


def test_two_resumable_uploads_of_one_chunk_only_the_first_completes(client: Any) -> None:
    """Both sessions start while the object is absent (ifGenerationMatch=0 holds then); the
    precondition is checked again as each completes: the second is refused (412), the first
    object stays."""
    blob = client.bucket(STAGING_BUCKET).blob("batch/ingredients-spellcheck/job-1/output/big")
    sessions = [blob.create_resumable_upload_session(if_generation_match=0) for _ in range(2)]
    assert all("ifGenerationMatch=0" in url for url in sessions)
    first = requests.put(sessions[0], data=b"first", timeout=10)
    assert first.status_code == 200, first.text
    second = requests.put(sessions[1], data=b"second", timeout=10)
    assert second.status_code == 412, second.text
    assert client.bucket(STAGING_BUCKET).get_blob(blob.name).download_as_bytes() == b"first"
