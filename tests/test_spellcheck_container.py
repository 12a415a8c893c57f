"""The ingredients-spellcheck container's entrypoint, run as a subprocess on real sample rows."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import threading
from http.server import BaseHTTPRequestHandler, HTTPServer
from pathlib import Path

import duckdb
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from robotoff_batch.job_types.ingredients_spellcheck.lexicon import build_lexicon
from robotoff_batch.paths import CONTAINERS_DIR, SAMPLE_DATA_DIR
from tests.fakes.gcs_emulator import RunningEmulator

pytest_plugins = ["tests.gcp_fixtures"]  # also registered by tests/conftest.py

CONTAINER = CONTAINERS_DIR / "ingredients-spellcheck"
ENTRYPOINT = CONTAINER / "entrypoint.py"
sys.path.insert(0, str(CONTAINER))

from spellcheck_job import ENGINE_VERSION  # noqa: E402
from spellcheck_job.lexicon_cpu import LexiconSpellchecker  # noqa: E402
from spellcheck_job.main import OUTPUT_SCHEMA  # noqa: E402
from spellcheck_job.sharding import shard_range  # noqa: E402
from spellcheck_job.vllm_engine import build_prompt  # noqa: E402
from spellcheck_job.wordfreq_cpu import RULES  # noqa: E402

DATA = SAMPLE_DATA_DIR
SAMPLE = DATA / "food_sample_2026.parquet"


@pytest.fixture(scope="module")
def job_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A staged job: input.parquet (main texts of the real sample) and lexicon.parquet."""
    root = tmp_path_factory.mktemp("job")
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
    # Several row groups, so a shard spans group boundaries.
    pq.write_table(table, root / "input.parquet", row_group_size=17)
    pq.write_table(build_lexicon(con, str(SAMPLE)), root / "lexicon.parquet")
    return root


def run_entrypoint(env_extra: dict[str, str], *args: str) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("BATCH_", "WEBHOOK"))}
    env.pop("INPUT_FILE_PATH", None)
    env.pop("OUTPUT_FILE_PATH", None)
    env.pop("LEXICON_FILE_PATH", None)
    env.update(env_extra)
    return subprocess.run(
        [sys.executable, str(ENTRYPOINT), *args],
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )


def base_env(job: Path) -> dict[str, str]:
    return {
        "INPUT_FILE_PATH": (job / "input.parquet").as_uri(),
        "OUTPUT_FILE_PATH": (job / "output").as_uri(),
        "LEXICON_FILE_PATH": str(job / "lexicon.parquet"),
        "BATCH_TASK_COUNT": "3",
        "BATCH_JOB_ID": "test-job",
    }


def test_three_tasks_cover_every_row_once(job_dir: Path) -> None:
    for index in range(3):
        result = run_entrypoint(
            {**base_env(job_dir), "BATCH_TASK_INDEX": str(index)},
            "--engine",
            "lexicon-cpu",
            "--batch-size",
            "16",
            "--chunk-rows",
            "10",
        )
        assert result.returncode == 0, result.stderr
        assert "rows done" in result.stderr
    output = job_dir / "output"
    assert sorted(p.name for p in output.iterdir()) == [f"task-{i:05d}" for i in range(3)]
    assert not list(output.rglob(".*"))  # no temporary file left behind
    tables = []
    for i in range(3):
        manifest = json.loads((output / f"task-{i:05d}" / "manifest.json").read_text())
        assert manifest["complete"] and manifest["task_index"] == i
        start, stop = shard_range(100, i, 3)
        assert manifest["shard"] == [start, stop]
        # chunks of 10 rows, in order, each listed once and present
        assert [c["rows"] for c in manifest["chunks"]] == [
            min(10, stop - start - k) for k in range(0, stop - start, 10)
        ]
        for chunk in manifest["chunks"]:
            table = pq.read_table(chunk["uri"].removeprefix("file://"))
            assert table.schema.remove_metadata() == OUTPUT_SCHEMA
            assert set(table.column("task_index").to_pylist()) <= {i}
            tables.append(table)
        listed = {c["uri"].rsplit("/", 1)[1] for c in manifest["chunks"]}
        assert listed == {p.name for p in (output / f"task-{i:05d}").glob("chunk-*")}
    out = pa.concat_tables(tables)
    source = pq.read_table(job_dir / "input.parquet")
    assert sorted(out.column("code").to_pylist()) == sorted(source.column("code").to_pylist())
    assert len(set(out.column("code").to_pylist())) == source.num_rows
    by_code = dict(
        zip(source.column("code").to_pylist(), source.column("text").to_pylist(), strict=True)
    )
    for code, text in zip(
        out.column("code").to_pylist(), out.column("text").to_pylist(), strict=True
    ):
        assert by_code[code] == text
    # each changed text carries its corrections (rule, confidence); an unchanged one none
    changed = 0
    for row in out.to_pylist():
        if row["correction"] is None or row["correction"] == row["text"]:
            assert row["corrections"] is None, row
            continue
        changed += 1
        found = json.loads(row["corrections"])
        assert found, row
        for c in found:
            assert set(c) == {"before", "after", "rule", "confidence"}
            assert c["rule"] in RULES and 0.0 < c["confidence"] <= 1.0
            assert c["before"] in row["text"] and c["after"] in row["correction"]
    assert changed > 0
    assert set(out.column("engine_version").to_pylist()) == {ENGINE_VERSION}


def test_missing_env_var_is_named(job_dir: Path) -> None:
    env = base_env(job_dir)
    del env["INPUT_FILE_PATH"]
    result = run_entrypoint(env)
    assert result.returncode != 0
    assert "INPUT_FILE_PATH" in result.stderr


def test_missing_input_is_named(job_dir: Path) -> None:
    env = {**base_env(job_dir), "INPUT_FILE_PATH": str(job_dir / "nope.parquet")}
    result = run_entrypoint(env)
    assert result.returncode != 0
    assert "nope.parquet" in result.stderr


def test_missing_column_is_named(job_dir: Path, tmp_path: Path) -> None:
    bad = tmp_path / "bad.parquet"
    pq.write_table(pa.table({"code": ["1"], "lang": ["fr"]}), bad)
    env = {**base_env(job_dir), "INPUT_FILE_PATH": str(bad), "OUTPUT_FILE_PATH": str(tmp_path)}
    result = run_entrypoint(env)
    assert result.returncode != 0
    assert "text" in result.stderr and "missing column" in result.stderr


def test_no_task_calls_a_webhook_or_reads_a_key(job_dir: Path, tmp_path: Path) -> None:
    """Robotoff's container posts to WEBHOOK_URL with BATCH_JOB_KEY; ours never does: the
    pipeline hands the output over once the whole job SUCCEEDED."""
    received: list[str] = []

    class Handler(BaseHTTPRequestHandler):
        def do_POST(self) -> None:  # noqa: N802
            received.append(self.path)
            self.send_response(200)
            self.end_headers()

        def log_message(self, *args: object) -> None:
            pass

    server = HTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        out = tmp_path / "job" / "output"
        env = {
            **base_env(job_dir),
            "OUTPUT_FILE_PATH": str(out),
            "BATCH_TASK_COUNT": "1",
            "WEBHOOK_URL": f"http://127.0.0.1:{server.server_port}/api/v1/batch/import",
            "BATCH_JOB_KEY": "s3cret-key",
        }
        result = run_entrypoint(env)
    finally:
        server.shutdown()
    assert result.returncode == 0, result.stderr
    assert (out / "task-00000" / "manifest.json").is_file()
    assert received == []
    assert "s3cret-key" not in result.stderr


def test_engine_fixes_a_typo_and_keeps_correct_text_identical() -> None:
    engine = LexiconSpellchecker({"fr": {"chocolat": 50, "sucre": 80, "lait": 40, "crème": 10}})
    assert engine.correct("Sucre, chocollat 20%, lait", "fr") == "Sucre, chocolat 20%, lait"
    assert engine.correct("CHOCOLTA noir", "fr") == "CHOCOLAT noir"
    assert engine.correct("Chocolta, creme", "fr") == "Chocolat, crème"
    correct = "Sucre,  CHOCOLAT (cacao 70 %), E322, lait*\n_lait_ écrémé."
    assert engine.correct(correct, "fr") == correct
    assert engine.correct("chocolat2 E330 5e", "fr") == "chocolat2 E330 5e"


def test_engine_never_takes_a_correction_from_another_language() -> None:
    english = LexiconSpellchecker({"en": {"vanilla": 50}})
    # Spanish VAINILLA is not English VANILLA's typo: unchanged in a Spanish text...
    assert english.correct("SABOR VAINILLA", "es") == "SABOR VAINILLA"
    # ...and even a real typo of an English word is not fixed in a Spanish text,
    assert english.correct("sabor vanlla", "es") == "sabor vanlla"
    # though it is in an English one.
    assert english.correct("vanlla flavour", "en") == "vanilla flavour"
    # A text without a language, or in a language the lexicon lacks, is left alone.
    assert english.correct("vanlla flavour", None) == "vanlla flavour"
    assert english.correct("vanlla flavour", "de") == "vanlla flavour"

    spanish = LexiconSpellchecker({"es": {"vainilla": 20}})
    assert spanish.correct("SABOR VAINLLA", "es") == "SABOR VAINILLA"
    assert spanish.correct("SABOR VAINLLA", "ES") == "SABOR VAINILLA"  # codes are normalised
    assert spanish.correct("VAINLLA flavour", "en") == "VAINLLA flavour"

    # Accents and split words also come only from the text's own language.
    french = LexiconSpellchecker({"fr": {"crème": 10, "lécithines": 5}, "en": {"cream": 9}})
    assert french.correct("creme, léci - thines", "fr") == "crème, lécithines"
    assert french.correct("creme, léci - thines", "es") == "creme, léci - thines"


def test_engine_keeps_a_word_known_in_any_language() -> None:
    engine = LexiconSpellchecker({"es": {"vainilla": 20}, "en": {"vanilla": 50}})
    # VANILLA is one edit from Spanish VAINILLA, but it is a known (English) word.
    assert engine.correct("SABOR VANILLA", "es") == "SABOR VANILLA"
    assert engine.correct("SABOR VAINILLA", "en") == "SABOR VAINILLA"
    # Rows without a language are dropped by from_rows; language codes are lowercased.
    rows = [("ES", "vainilla", 20), (None, "vanilla", 50), ("", "vanila", 3)]
    built = LexiconSpellchecker.from_rows(rows)
    assert built.languages == ["es"] and set(built.counts) == {"vainilla"}
    assert built.correct("vanilla", "es") == "vainilla"  # unknown in every language here
    assert built.correct_batch(["vainlla", None], ["es", "es"]) == ["vainilla", None]
    assert built.correct_batch(["vainlla"]) == ["vainlla"]  # no language given


def test_shards_partition_rows() -> None:
    for n in (0, 1, 2, 10, 101):
        ranges = [shard_range(n, i, 3) for i in range(3)]
        assert ranges[0][0] == 0 and ranges[-1][1] == n
        assert all(a[1] == b[0] for a, b in zip(ranges, ranges[1:], strict=False))


def test_vllm_prompt_is_robotoffs() -> None:
    assert build_prompt("sucre, farine de ble") == (
        "###Correct the list of ingredients:\nsucre, farine de ble\n\n###Correction:\n"
    )


def test_output_upload_is_checksummed_and_a_corrupt_one_is_removed(
    gcs_emulator: RunningEmulator, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The container's gs:// output: a damaged resumable upload (DataCorruption) becomes an
    OutputError (exit 3, retried by Batch) and the damaged object is deleted, so the retry
    uploads it again instead of meeting it as 'already there'."""
    import google.cloud.storage as storage
    from spellcheck_job import io as job_io

    from tests.fakes.settings import STAGING_BUCKET

    monkeypatch.setattr(job_io, "_gcs_client", None)
    big = pa.table({"blob": [os.urandom(1024 * 1024) for _ in range(9)]})  # > 8 MiB: resumable
    uri = f"gs://{STAGING_BUCKET}/out/part-00000.parquet"
    gcs_emulator.faults.corrupt_next_uploads(1)
    with pytest.raises(job_io.OutputError, match="corrupted in transit"):
        job_io.write_parquet_atomic(big, uri)
    client = storage.Client()
    assert client.bucket(STAGING_BUCKET).get_blob("out/part-00000.parquet") is None
    job_io.write_parquet_atomic(big, uri)  # the retry
    stored = client.bucket(STAGING_BUCKET).get_blob("out/part-00000.parquet")
    assert stored is not None and stored.crc32c is not None
    job_io.write_parquet_atomic(big, uri)  # a third attempt finds the same bytes: kept
    small = pa.table({"blob": [b"other"]})
    with pytest.raises(job_io.OutputError, match="other content"):
        job_io.write_parquet_atomic(small, uri)
