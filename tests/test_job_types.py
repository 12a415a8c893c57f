"""The ingredients-spellcheck job type: extraction with its cached lexicon, output conversion."""

from __future__ import annotations

import io
import os
import shutil
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from robotoff_batch.config.loader import load_job_config
from robotoff_batch.job_types import RegistryError, job_type_modules, load_registry
from robotoff_batch.job_types.base import PREDICTION_SCHEMA, OutputError
from robotoff_batch.job_types.ingredients_spellcheck import (
    SpellcheckLaunch,
    extract,
    to_predictions,
)
from robotoff_batch.paths import JOB_CONFIGS_DIR, SAMPLE_DATA_DIR

JOB_CONFIG = load_job_config(JOB_CONFIGS_DIR / "ingredients-spellcheck.yaml").config
LOCAL_ARGV = list(load_registry()["ingredients-spellcheck"].job_type.local_command)


def test_lexicon_is_built_once_per_dump_file(tmp_path: Path, monkeypatch: pytest.MonkeyPatch):
    monkeypatch.setenv("ROBOTOFF_BATCH_HOME", str(tmp_path / "home"))
    dump = tmp_path / "food.parquet"
    shutil.copyfile(SAMPLE_DATA_DIR / "food_sample_2026.parquet", dump)
    params = SpellcheckLaunch(limit=20)
    cpu = {"job_config": JOB_CONFIG, "local_argv": LOCAL_ARGV}  # the local runner's CPU engine
    first = extract(dump_path=str(dump), params=params, work_dir=tmp_path / "a", **cpu)
    second = extract(dump_path=str(dump), params=params, work_dir=tmp_path / "b", **cpu)
    assert (first.metadata["lexicon_cache"], second.metadata["lexicon_cache"]) == ("built", "hit")
    lexicon_a = pq.read_table(first.files["lexicon.parquet"])
    assert lexicon_a.num_rows > 100
    assert lexicon_a.equals(pq.read_table(second.files["lexicon.parquet"]))
    os.utime(dump, ns=(1, 1))  # a new dump at the same path is a new lexicon
    third = extract(dump_path=str(dump), params=params, work_dir=tmp_path / "c", **cpu)
    assert third.metadata["lexicon_cache"] == "built"


def test_a_vllm_job_stages_no_lexicon(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """The production config runs vLLM, which never reads the lexicon: none is built or staged."""
    monkeypatch.setenv("ROBOTOFF_BATCH_HOME", str(tmp_path / "home"))
    assert JOB_CONFIG.resources.environment["SPELLCHECK_ENGINE"] == "vllm"
    out = extract(
        dump_path=str(SAMPLE_DATA_DIR / "food_sample_2026.parquet"),
        params=SpellcheckLaunch(limit=20),
        work_dir=tmp_path / "gpu",
        job_config=JOB_CONFIG,
    )
    assert out.rows == 20 and sorted(out.files) == ["input.parquet"]
    assert out.metadata["spellcheck_engine"] == "vllm" and "lexicon_cache" not in out.metadata
    assert not (tmp_path / "home" / "cache").exists()


def _output(**columns: list[object]) -> io.BytesIO:
    buffer = io.BytesIO()
    pq.write_table(pa.table(columns), buffer)
    buffer.seek(0)
    return buffer


GOOD = {
    "code": ["1", "2", "3"],
    "lang": ["fr", "en", "fr"],
    "text": ["suc re", "sugar", "farine de ble"],
    "correction": ["sucre", "sugar", "farine de blé"],
    "engine": ["lexicon-cpu"] * 3,
    "engine_version": ["1"] * 3,
}


def test_changed_rows_become_robotoff_predictions() -> None:
    stats: dict[str, int] = {}
    batches = list(
        to_predictions(
            source=_output(**GOOD), source_name="part-0", batch_job_id="j-1", stats=stats
        )
    )
    table = pa.Table.from_batches(batches)
    assert table.schema == PREDICTION_SCHEMA
    assert table.column("barcode").to_pylist() == ["1", "3"]  # "2" is unchanged
    assert table.column("predictor_version").to_pylist() == ["1@j-1", "1@j-1"]
    assert table.column("value_tag").to_pylist() == ["fr", "fr"]
    assert stats == {"source_rows": 3, "skipped_rows": 1, "predictions": 2}


def test_malformed_output_is_refused_naming_file_column_and_row() -> None:
    missing = {k: v for k, v in GOOD.items() if k != "correction"}
    with pytest.raises(
        OutputError, match=r"part-7: output is missing column\(s\) \['correction'\]"
    ):
        list(
            to_predictions(
                source=_output(**missing), source_name="part-7", batch_job_id="j", stats={}
            )
        )
    null_code = dict(GOOD, code=["1", None, "3"])
    with pytest.raises(OutputError, match="part-8: row 1 has a null or empty code"):
        list(
            to_predictions(
                source=_output(**null_code), source_name="part-8", batch_job_id="j", stats={}
            )
        )
    with pytest.raises(OutputError, match="not a readable Parquet file"):
        list(
            to_predictions(
                source=io.BytesIO(b"nope"), source_name="part-9", batch_job_id="j", stats={}
            )
        )


def test_registry_pairs_modules_and_configs(tmp_path: Path) -> None:
    registry = load_registry()
    assert set(registry) == set(job_type_modules()) == {"ingredients-spellcheck"}
    from robotoff_batch.config.loader import load_job_configs

    configs = load_job_configs()
    orphan = dict(configs)
    orphan["other-job"] = configs["ingredients-spellcheck"]
    with pytest.raises(RegistryError, match="config without module: \\['other-job'\\]"):
        load_registry(orphan)
