"""The ingredients-spellcheck job type: extraction with its cached lexicon, the registry (the
output's import: test_spellcheck_import.py)."""

from __future__ import annotations

import os
import shutil
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from robotoff_batch.config.loader import load_job_config
from robotoff_batch.job_types import RegistryError, job_type_modules, load_registry
from robotoff_batch.job_types.ingredients_spellcheck import SpellcheckLaunch, extract
from robotoff_batch.paths import JOB_CONFIGS_DIR, SAMPLE_DATA_DIR

JOB_CONFIG = load_job_config(JOB_CONFIGS_DIR / "ingredients-spellcheck.yaml").config
# the shipped config as the local runner runs it (the CPU engine)
LOCAL_CONFIG = load_registry()["ingredients-spellcheck"].job_type.config_for_local_runner(
    JOB_CONFIG
)


def test_lexicon_is_built_once_per_dump_file(tmp_path: Path, monkeypatch: pytest.MonkeyPatch):
    monkeypatch.setenv("ROBOTOFF_BATCH_HOME", str(tmp_path / "home"))
    dump = tmp_path / "food.parquet"
    shutil.copyfile(SAMPLE_DATA_DIR / "food_sample_2026.parquet", dump)
    params = SpellcheckLaunch(limit=20)
    cpu = {"job_config": LOCAL_CONFIG}  # the local runner's CPU engine
    first = extract(dump_path=str(dump), params=params, work_dir=tmp_path / "a", **cpu)
    second = extract(dump_path=str(dump), params=params, work_dir=tmp_path / "b", **cpu)
    assert (first.metadata["lexicon_cache"], second.metadata["lexicon_cache"]) == ("built", "hit")
    lexicon_a = pq.read_table(first.files["lexicon.parquet"])
    assert lexicon_a.num_rows > 100
    assert lexicon_a.equals(pq.read_table(second.files["lexicon.parquet"]))
    os.utime(dump, ns=(1, 1))  # a new dump at the same path is a new lexicon
    third = extract(dump_path=str(dump), params=params, work_dir=tmp_path / "c", **cpu)
    assert third.metadata["lexicon_cache"] == "built"


def test_a_lexicon_of_another_rule_is_never_used(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A lexicon cached by another rule (issue 23 changed it: from the `ingredients` JSON to the
    main texts) is not this rule's: the same dump file gets a new one, counted in the pass."""
    from robotoff_batch.job_types.ingredients_spellcheck import job_type

    monkeypatch.setenv("ROBOTOFF_BATCH_HOME", str(tmp_path / "home"))
    dump = tmp_path / "food.parquet"
    shutil.copyfile(SAMPLE_DATA_DIR / "food_sample_2026.parquet", dump)
    params = SpellcheckLaunch(limit=20)
    cpu = {"job_config": LOCAL_CONFIG}
    rule = job_type.lexicon_rule()
    with monkeypatch.context() as patched:  # the old rule's lexicon, cached for this dump
        patched.setattr(job_type, "lexicon_rule", lambda: b"an older rule")
        old = job_type.lexicon_cache_path(str(dump))
        job_type.store_lexicon(old, pa.table({"lang": ["en"], "word": ["stale"], "n": [1]}))
        hit = extract(dump_path=str(dump), params=params, work_dir=tmp_path / "a", **cpu)
        assert hit.metadata["lexicon_cache"] == "hit"  # (what the old rule's launch reads)
    assert job_type.lexicon_rule() == rule and job_type.lexicon_cache_path(str(dump)) != old
    new = extract(dump_path=str(dump), params=params, work_dir=tmp_path / "b", **cpu)
    assert new.metadata["lexicon_cache"] == "built"
    lexicon = pq.read_table(new.files["lexicon.parquet"])
    assert "stale" not in lexicon.column("word").to_pylist() and lexicon.num_rows > 100
    # the rule's source includes which rows the pass counts (selection.sql: lexicon_rows)
    assert b"launch_excluded" in rule


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


def test_the_job_config_chooses_the_engine() -> None:
    """The engine the extraction writes for is the job config's (as the engine that runs it
    sees it), never an argv: the YAML runs vLLM, the local runner's config the CPU engine, a
    ``--engine`` in the config's commands wins over SPELLCHECK_ENGINE (the container's rule)."""
    from robotoff_batch.job_types.ingredients_spellcheck.job_type import engine_that_runs

    assert engine_that_runs(JOB_CONFIG) == "vllm"
    assert engine_that_runs(LOCAL_CONFIG) == "lexicon-cpu"
    assert (
        LOCAL_CONFIG.resources.environment["SPELLCHECK_MODEL"]
        == "openfoodfacts/spellcheck-mistral-7b"
    )
    assert LOCAL_CONFIG.cost.total_usd == JOB_CONFIG.cost.total_usd  # only the variables change
    commands = JOB_CONFIG.resources.model_copy(update={"commands": ["--engine", "lexicon-cpu"]})
    assert engine_that_runs(JOB_CONFIG.model_copy(update={"resources": commands})) == "lexicon-cpu"


def test_launch_parameters_are_checked_by_the_launch_config_alone() -> None:
    """The one check of a launch's parameters is the dg.Config model (what the launchpad, the
    CLI and the extraction all get): an empty fraction window is refused there."""
    from pydantic import ValidationError

    with pytest.raises(ValidationError, match="min_fraction 0.4 must be below max_fraction 0.4"):
        SpellcheckLaunch(min_fraction=0.4, max_fraction=0.4)
    with pytest.raises(ValidationError, match="limit"):
        SpellcheckLaunch(limit=0)
    assert SpellcheckLaunch(min_fraction=0, max_fraction=0.4).max_fraction == 0.4


def test_the_dump_footer_is_read_once_per_launch(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The launch reads the dump's footer once (check_dump) and hands the schema to the
    extraction, which does not read it again."""
    import pyarrow.parquet as parquet

    from robotoff_batch import extraction

    monkeypatch.setenv("ROBOTOFF_BATCH_HOME", str(tmp_path / "home"))
    dump = str(SAMPLE_DATA_DIR / "food_sample_2026.parquet")
    reads: list[str] = []
    real = parquet.read_schema

    def counted(where, *args, **kwargs):  # type: ignore[no-untyped-def]
        reads.append(str(where))
        return real(where, *args, **kwargs)

    monkeypatch.setattr(parquet, "read_schema", counted)
    jt = load_registry()["ingredients-spellcheck"].job_type
    schema = extraction.check_dump(dump_path=dump, required_columns=jt.required_columns)
    out = jt.extract(
        dump, SpellcheckLaunch(limit=5), LOCAL_CONFIG, tmp_path / "x", dump_schema=schema
    )
    assert out.rows == 5 and "lexicon.parquet" in out.files
    assert reads == [dump]


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

        def extract(self, dump, params, job_config, out, *, dump_schema=None, progress=None):  # type: ignore[no-untyped-def,override]
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
