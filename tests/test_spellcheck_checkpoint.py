"""Checkpointed spellcheck tasks on the local runner: the real container (CPU engine) and the
real supervisor, a VM that dies mid-task (SIGKILL, as preemption), the retry resuming after
the last complete chunk, then the real import of exactly the chunks the manifest lists into
embedded PostgreSQL."""

from __future__ import annotations

import json
import shutil
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import duckdb
import psycopg
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from robotoff_batch.batch import submit
from robotoff_batch.batch.engine import JobState
from robotoff_batch.batch.local import LocalBatchEngine
from robotoff_batch.job_types.ingredients_spellcheck import JOB_TYPE
from robotoff_batch.job_types.ingredients_spellcheck.imports import extract_facts
from robotoff_batch.job_types.ingredients_spellcheck.lexicon import build_lexicon
from robotoff_batch.paths import SAMPLE_DATA_DIR
from robotoff_batch.predictions import output as pipeline
from robotoff_batch.predictions.output import OutputError
from robotoff_batch.predictions.store import PredictionStore
from robotoff_batch.staging import Staging, staging_from_uri
from tests.fakes.waiting import wait_until_ended
from tests.test_local_runner import make_request

FIXTURE = Path(__file__).parent / "fixtures" / "task_spellcheck_dies.py"
IMAGE = "europe-docker.pkg.dev/off/robotoff/spellcheck-dies:1"
SAMPLE = SAMPLE_DATA_DIR / "food_sample_2026.parquet"
ROWS, CHUNK = 100, 10
LONG_ROW = 37  # its text is replaced by 20,000 characters


@pytest.fixture
def staging(tmp_path: Path) -> Staging:
    root = tmp_path / "staging"
    root.mkdir()
    return staging_from_uri(root.as_uri())


@pytest.fixture
def engine(tmp_path: Path) -> Iterator[LocalBatchEngine]:
    local = LocalBatchEngine(
        state_dir=tmp_path / "local-batch",
        commands_by_image={IMAGE: [sys.executable, str(FIXTURE), "--engine", "lexicon-cpu"]},
        poll_interval_s=0.05,
    )
    yield local
    for job in local.list_jobs(labels={}):
        if not job.state.is_terminal:
            local.cancel(job_id=job.job_id)
    local.close()


@pytest.fixture(scope="module")
def staged_files(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """input.parquet (100 main texts of the real sample, one of 20,000 characters),
    lexicon.parquet and products.parquet (the facts the import checks codes against)."""
    root = tmp_path_factory.mktemp("files")
    con = duckdb.connect()
    table = con.sql(
        """
        SELECT code, lang, text FROM (
            SELECT code, lang,
                   list_filter(ingredients_text, lambda x: x.lang = 'main')[1].text AS text
            FROM read_parquet($path)
        ) WHERE text IS NOT NULL AND text <> ''
        ORDER BY code LIMIT 100
        """,
        params={"path": str(SAMPLE)},
    ).to_arrow_table()
    texts = table.column("text").to_pylist()
    texts[LONG_ROW] = ("farine de blé, " * 1400)[:20_000]
    table = table.set_column(2, "text", pa.array(texts, pa.string()))
    pq.write_table(table, root / "input.parquet", row_group_size=17)
    pq.write_table(build_lexicon(con, str(SAMPLE)), root / "lexicon.parquet")
    extract_facts(
        dump_path=str(SAMPLE),
        input_path=root / "input.parquet",
        output_path=root / "products.parquet",
    )
    return root


def run_job(
    engine: LocalBatchEngine,
    staging: Staging,
    files: Path,
    job_id: str,
    die_at: str,
    *,
    retries: int = 1,
    extra: dict[str, str] | None = None,
) -> tuple[Any, dict[str, Any], Path]:
    job_uri = staging.job_uri(job_type=JOB_TYPE.name, job_id=job_id)
    job_path = Path(job_uri.removeprefix("file://"))
    job_path.mkdir(parents=True)
    for name in ("input.parquet", "lexicon.parquet", "products.parquet"):
        shutil.copyfile(files / name, job_path / name)
    request = make_request(
        job_id,
        image=IMAGE,
        max_retry_count=retries,
        variables={
            **(extra or {}),
            "INPUT_FILE_PATH": f"{job_uri}/input.parquet",
            "OUTPUT_FILE_PATH": f"{job_uri}/output",
            "LEXICON_FILE_PATH": f"{job_uri}/lexicon.parquet",
            "CHUNK_ROWS": str(CHUNK),
            "DIE_AT": die_at,
            "COUNT_DIR": str(job_path),
        },
    )
    engine.submit(request=request)
    final = wait_until_ended(engine, job_id, 120)
    manifest = json.loads((job_path / "output" / "task-00000" / "manifest.json").read_text())
    return final, manifest, job_path


def sent_per_chunk(files: Path) -> list[int]:
    """Texts of each chunk the engine is given: non-empty and not over the length cap."""
    texts = pq.read_table(files / "input.parquet").column("text").to_pylist()
    sent = [bool(t and t.strip()) and len(t) <= 10_000 for t in texts]
    return [sum(sent[k : k + CHUNK]) for k in range(0, ROWS, CHUNK)]


@pytest.mark.parametrize(
    ("die_at", "recomputed_chunks"),
    [("before-chunk-6", [6]), ("before-manifest-6", [])],
    ids=["killed computing chunk 6 of 10", "killed after writing chunk 6, before listing it"],
)
def test_a_task_killed_at_60_percent_resumes_and_is_imported_once(
    engine: LocalBatchEngine,
    staging: Staging,
    staged_files: Path,
    pg_db: str,
    die_at: str,
    recomputed_chunks: list[int],
) -> None:
    job_id = "resume-" + die_at.replace("-", "")
    final, manifest, job_path = run_job(engine, staging, staged_files, job_id, die_at)
    assert final.state is JobState.SUCCEEDED, final.failure_summary
    assert final.tasks[0].attempts == 2  # the first attempt was killed (SIGKILL), retried

    per_chunk = sent_per_chunk(staged_files)
    attempts = manifest["attempts"]
    assert [a["attempt"] for a in attempts] == [0, 1]
    assert attempts[0]["started_chunk"] == 0
    # The retry starts after the last chunk the manifest lists (6 when chunk 6 was written
    # but not listed: it is adopted, not recomputed).
    assert attempts[1]["started_chunk"] == 6
    # The texts each attempt gave its engine, counted as it ran (the killed one included).
    processed = [
        sum(int(n) for n in (job_path / f"attempt-{a}").read_text().split()) for a in (0, 1)
    ]
    assert processed[0] == sum(per_chunk[:7])  # chunks 0..6 computed before the kill
    assert processed[1] == sum(per_chunk[6 + (not recomputed_chunks) :])
    recomputed = sum(processed) - sum(per_chunk)
    assert recomputed == sum(per_chunk[k] for k in recomputed_chunks)
    assert recomputed <= max(per_chunk)  # at most one chunk recomputed
    # The manifest counts what each attempt's listed chunks sent.
    assert [a["processed"] for a in attempts] == [sum(per_chunk[:6]), processed[1]]

    assert manifest["complete"] and len(manifest["chunks"]) == ROWS // CHUNK
    assert manifest["skipped"] == {"too_long": 1}  # the 20,000-character text
    rows = [r for c in manifest["chunks"] for r in pq.read_table(c["uri"][7:]).to_pylist()]
    source = pq.read_table(staged_files / "input.parquet").column("code").to_pylist()
    assert [r["code"] for r in rows] == source  # every product once, in input order
    long_row = rows[LONG_ROW]
    assert long_row["correction"] is None
    assert long_row["skipped"] == "too_long: 20000 characters > 10000"
    log = (engine.job_dir(job_id) / "logs" / "task-0-attempt-2.log").read_text()
    assert "lists 6 of 10 chunks" in log  # what the retry found

    store = PredictionStore(conninfo=pg_db)
    store.ensure_schema()
    outcome = pipeline.import_job_output(
        engine=engine, staging=staging, store=store, job_type=JOB_TYPE, job_id=job_id
    )
    changed = sum(1 for r in rows if r["correction"] is not None and r["correction"] != r["text"])
    assert outcome.output_files == ROWS // CHUNK
    assert outcome.source_rows == ROWS
    assert outcome.candidates == changed and outcome.predictions == changed
    assert outcome.texts_skipped == {"too_long": 1}
    assert store.count_predictions(batch_job_id=job_id) == changed
    assert store.duplicate_predictions(batch_job_id=job_id) == 0


def test_the_import_refuses_unfinished_and_stray_chunks(
    engine: LocalBatchEngine, staging: Staging, staged_files: Path
) -> None:
    final, manifest, job_path = run_job(engine, staging, staged_files, "strays", "none-0")
    assert final.state is JobState.SUCCEEDED and final.tasks[0].attempts == 1
    job_uri = staging.job_uri(job_type=JOB_TYPE.name, job_id="strays")
    task = job_path / "output" / "task-00000"
    listed = pipeline.task_output_uris(staging=staging, job_uri=job_uri, task_count=1)
    assert listed == [c["uri"] for c in manifest["chunks"]]

    (task / ".chunk-00010.parquet.x1.tmp").write_bytes(b"half")  # a killed write: ignored
    assert pipeline.task_output_uris(staging=staging, job_uri=job_uri, task_count=1) == listed
    shutil.copyfile(task / "chunk-00003.parquet", task / "chunk-00010.parquet")
    with pytest.raises(OutputError, match=r"no task wrote, e\.g\. .*task-00000/chunk-00010"):
        pipeline.task_output_uris(staging=staging, job_uri=job_uri, task_count=1)
    (task / "chunk-00010.parquet").unlink()

    unfinished = {**manifest, "complete": False, "chunks": manifest["chunks"][:4]}
    (task / "manifest.json").write_text(json.dumps(unfinished))
    with pytest.raises(OutputError, match=r"not complete \(4 chunk\(s\) listed\)"):
        pipeline.task_output_uris(staging=staging, job_uri=job_uri, task_count=1)

    (task / "manifest.json").write_text(json.dumps(manifest))
    (task / "chunk-00002.parquet").unlink()
    with pytest.raises(OutputError, match=r"lists .*chunk-00002\.parquet, which is missing"):
        pipeline.task_output_uris(staging=staging, job_uri=job_uri, task_count=1)


def test_a_failed_jobs_chunks_imported_partially_then_the_relaunch_imports_the_rest_once(
    engine: LocalBatchEngine, staging: Staging, staged_files: Path, pg_db: str
) -> None:
    """Job A dies at chunk 6 with no retry left: FAILED, 6 complete chunks. `import --partial`
    takes them (ledger: partial). Job B, relaunched on the same staged input carrying A's
    chunks (CARRY_OUTPUT_URIS, as the relaunch and the capacity fallback set it), computes only
    chunks 6..9; its import leaves A's chunks out: each product is imported once."""
    store = PredictionStore(conninfo=pg_db)
    store.ensure_schema()
    first, manifest_a, path_a = run_job(
        engine, staging, staged_files, "partial-a", "before-chunk-6", retries=0
    )
    assert first.state is JobState.FAILED and not manifest_a["complete"]
    assert len(manifest_a["chunks"]) == 6
    with pytest.raises(submit.PipelineError, match="import it with --partial"):
        pipeline.import_job_output(
            engine=engine, staging=staging, store=store, job_type=JOB_TYPE, job_id="partial-a"
        )
    partial = pipeline.import_job_output(
        engine=engine,
        staging=staging,
        store=store,
        job_type=JOB_TYPE,
        job_id="partial-a",
        partial=True,
    )
    assert partial.output_files == 6 and partial.source_rows == 60
    record = store.imported_job("partial-a")
    assert record is not None and record.partial

    job_a_uri = staging.job_uri(job_type=JOB_TYPE.name, job_id="partial-a")
    second, manifest_b, path_b = run_job(
        engine,
        staging,
        staged_files,
        "partial-b",
        "none-0",
        extra={"CARRY_OUTPUT_URIS": f"{job_a_uri}/output"},
    )
    assert second.state is JobState.SUCCEEDED, second.failure_summary
    per_chunk = sent_per_chunk(staged_files)
    computed = sum(int(n) for n in (path_b / "attempt-0").read_text().split())
    assert computed == sum(per_chunk[6:])  # only the remainder
    uris = [c["uri"] for c in manifest_b["chunks"]]
    assert uris[:6] == [c["uri"] for c in manifest_a["chunks"]]  # carried, not copied
    assert all("/partial-b/" in u for u in uris[6:])

    rest = pipeline.import_job_output(
        engine=engine, staging=staging, store=store, job_type=JOB_TYPE, job_id="partial-b"
    )
    assert rest.output_files == 4 and rest.source_rows == 40
    rows = [r for u in uris for r in pq.read_table(u[7:]).to_pylist()]
    changed = {
        r["code"] for r in rows if r["correction"] is not None and r["correction"] != r["text"]
    }
    with psycopg.connect(pg_db) as conn:
        counts = conn.execute(
            "SELECT barcode, count(*) FROM prediction GROUP BY barcode"
        ).fetchall()
    assert {b for b, _ in counts} == changed
    assert all(n == 1 for _, n in counts)  # each product once
    assert partial.predictions + rest.predictions == len(changed)
