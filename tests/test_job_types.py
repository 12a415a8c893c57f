"""The ingredients-spellcheck job type: extraction with its cached lexicon, the registry (the
output's import: test_spellcheck_import.py)."""

from __future__ import annotations

import os
import shutil
from pathlib import Path

import pyarrow.parquet as pq
import pytest

from robotoff_batch.config.loader import load_job_config
from robotoff_batch.job_types import RegistryError, job_type_modules, load_registry
from robotoff_batch.job_types.ingredients_spellcheck import SpellcheckLaunch, extract
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
    # the product facts the import's insight rules read are staged whatever the engine
    assert out.rows == 20 and sorted(out.files) == ["input.parquet", "products.parquet"]
    assert out.metadata["spellcheck_engine"] == "vllm" and "lexicon_cache" not in out.metadata
    assert not (tmp_path / "home" / "cache").exists()


def test_registry_pairs_modules_and_configs(tmp_path: Path) -> None:
    registry = load_registry()
    assert set(registry) == set(job_type_modules()) == {"ingredients-spellcheck"}
    from robotoff_batch.config.loader import load_job_configs

    configs = load_job_configs()
    orphan = dict(configs)
    orphan["other-job"] = configs["ingredients-spellcheck"]
    with pytest.raises(RegistryError, match="config without module: \\['other-job'\\]"):
        load_registry(orphan)


def test_a_job_type_declares_its_staged_files(tmp_path: Path) -> None:
    """The core stages what a job type declares and nothing else, its input first."""
    from robotoff_batch.job_types.base import ExtractedInput, StagedFilesError

    jt = load_registry()["ingredients-spellcheck"].job_type
    assert (
        jt.input_file == "input.parquet"
        and jt.imports
        and jt.key_prefix == "ingredients_spellcheck"
    )
    jt.check_extracted(ExtractedInput(rows=1, files={"input.parquet": tmp_path}))
    with pytest.raises(StagedFilesError, match=r"wrote \['secret.txt'\]"):
        jt.check_extracted(
            ExtractedInput(rows=1, files={"input.parquet": tmp_path, "secret.txt": tmp_path})
        )
    with pytest.raises(StagedFilesError, match="did not write input.parquet"):
        jt.check_extracted(ExtractedInput(rows=1, files={"products.parquet": tmp_path}))


def test_a_job_type_must_implement_extract_and_set_its_attributes() -> None:
    from robotoff_batch.job_types.base import JobType

    class NoExtract(JobType[SpellcheckLaunch]):
        name = "no-extract"

    with pytest.raises(TypeError, match="abstract"):
        NoExtract()  # type: ignore[abstract]

    class NoCommand(JobType[SpellcheckLaunch]):
        name = "no-command"
        launch_config = SpellcheckLaunch
        required_columns: dict[str, str] = {}

        def extract(self, dump, params, job_config, out, *, local_argv=None, progress=None):  # type: ignore[no-untyped-def,override]
            raise NotImplementedError

    with pytest.raises(TypeError, match="does not set local_command"):
        NoCommand()


def test_launch_parameters_are_strict_about_booleans() -> None:
    """A boolean is a mistake for a number (``limit=true`` is not 1); an int fraction is fine."""
    from pydantic import ValidationError

    for wrong in ({"limit": True}, {"min_fraction": True}, {"max_fraction": False}):
        with pytest.raises(ValidationError, match=next(iter(wrong))):
            SpellcheckLaunch(**wrong)  # type: ignore[arg-type]
    assert SpellcheckLaunch(min_fraction=0, max_fraction=1).max_fraction == 1.0
