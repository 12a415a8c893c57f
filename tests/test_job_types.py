"""The ingredients-spellcheck job type: extraction with its cached lexicon, the registry.

Its output's import is tested in test_spellcheck_import.py."""

from __future__ import annotations

import os
import shutil
from pathlib import Path

import pyarrow.parquet as pq
import pytest

from robotoff_batch.job_types import RegistryError, job_type_modules, load_registry
from robotoff_batch.job_types.ingredients_spellcheck import SpellcheckLaunch, extract
from robotoff_batch.paths import SAMPLE_DATA_DIR


def test_lexicon_is_built_once_per_dump_file(tmp_path: Path, monkeypatch: pytest.MonkeyPatch):
    monkeypatch.setenv("ROBOTOFF_BATCH_HOME", str(tmp_path / "home"))
    dump = tmp_path / "food.parquet"
    shutil.copyfile(SAMPLE_DATA_DIR / "food_sample_2026.parquet", dump)
    params = SpellcheckLaunch(limit=20)
    from robotoff_batch.config.loader import load_job_configs

    cpu = {
        "job_config": load_job_configs()["ingredients-spellcheck"].config,
        "local_argv": ["x", "--engine", "lexicon-cpu"],
    }
    first = extract(dump_path=str(dump), params=params, work_dir=tmp_path / "a", **cpu)
    second = extract(dump_path=str(dump), params=params, work_dir=tmp_path / "b", **cpu)
    assert (first.metadata["lexicon_cache"], second.metadata["lexicon_cache"]) == ("built", "hit")
    lexicon_a = pq.read_table(first.files["lexicon.parquet"])
    assert lexicon_a.num_rows > 100
    assert lexicon_a.equals(pq.read_table(second.files["lexicon.parquet"]))
    os.utime(dump, ns=(1, 1))  # a new dump at the same path is a new lexicon
    third = extract(dump_path=str(dump), params=params, work_dir=tmp_path / "c", **cpu)
    assert third.metadata["lexicon_cache"] == "built"


def test_registry_pairs_modules_and_configs(tmp_path: Path) -> None:
    registry = load_registry()
    assert set(registry) == set(job_type_modules()) == {"ingredients-spellcheck"}
    from robotoff_batch.config.loader import load_job_configs

    configs = load_job_configs()
    orphan = dict(configs)
    orphan["other-job"] = configs["ingredients-spellcheck"]
    with pytest.raises(RegistryError, match="config without module: \\['other-job'\\]"):
        load_registry(orphan)
