"""Pinned weights, staged once, read with the hub off: stage-weights into a real staging area,
the GPU job's request as the launch builds it, and the container copying the staged weights
and handing vLLM their directory."""

from __future__ import annotations

import sys
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from typer.testing import CliRunner

from robotoff_batch.batch import submit
from robotoff_batch.batch.request import build_create_job_request
from robotoff_batch.cli import app
from robotoff_batch.config.loader import load_job_config
from robotoff_batch.config.models import JobConfig
from robotoff_batch.job_types.base import StagedFilesError
from robotoff_batch.job_types.ingredients_spellcheck import JOB_TYPE
from robotoff_batch.job_types.ingredients_spellcheck.weights import (
    WeightsError,
    pinned_model,
    stage_weights,
)
from robotoff_batch.paths import CONTAINERS_DIR, JOB_CONFIGS_DIR
from robotoff_batch.staging import Staging, staging_from_uri

sys.path.insert(0, str(CONTAINERS_DIR / "ingredients-spellcheck"))

from spellcheck_job import main as job_main  # noqa: E402
from spellcheck_job.io import InputError  # noqa: E402

REVISION = "0123456789abcdef0123456789abcdef01234567"
MODEL = "openfoodfacts/spellcheck-mistral-7b"


def gpu_config(revision: str = REVISION) -> JobConfig:
    data = load_job_config(JOB_CONFIGS_DIR / "ingredients-spellcheck.yaml").config.model_dump()
    data["resources"]["environment"]["SPELLCHECK_MODEL_REVISION"] = revision
    return JobConfig.model_validate(data)


@pytest.fixture
def staging(tmp_path: Path) -> Staging:
    root = tmp_path / "staging"
    root.mkdir()
    return staging_from_uri(root.as_uri())


@pytest.fixture
def snapshot(tmp_path: Path) -> Path:
    """A revision's files as the hub serves them (tiny stand-ins), plus what is not staged."""
    snap = tmp_path / "snapshot"
    snap.mkdir()
    (snap / "config.json").write_text('{"model_type": "mistral"}')
    (snap / "model-00001-of-00002.safetensors").write_bytes(b"\x00" * 1000)
    (snap / "model-00002-of-00002.safetensors").write_bytes(b"\x01" * 500)
    (snap / "tokenizer.json").write_text("{}")
    (snap / "tokenizer.model").write_bytes(b"sp")
    (snap / "README.md").write_text("not staged")
    (snap / "pytorch_model.bin").write_bytes(b"not staged either")
    return snap


def test_the_gpu_jobs_request_reads_the_staged_weights_with_the_hub_off(
    staging: Staging, snapshot: Path
) -> None:
    config = gpu_config()
    exists = lambda uri: staging.exists(uri=uri)  # noqa: E731
    with pytest.raises(StagedFilesError, match=r"not staged .*STAGED\.json is missing"):
        JOB_TYPE.task_environment(config, staging_root_uri=staging.root_uri, exists=exists)

    uri, files, size = stage_weights(
        staging=staging, pinned=pinned_model(config.resources.environment), source_dir=snapshot
    )
    assert uri == f"{staging.root_uri}/models/{MODEL}/{REVISION}"
    kept = ("config.json", "tokenizer.json", "tokenizer.model")
    assert (files, size) == (5, 1500 + sum((snapshot / n).stat().st_size for n in kept))
    staged = {u.rsplit("/", 1)[1] for u in staging.list_uris(prefix_uri=uri + "/")}
    assert "README.md" not in staged and "pytorch_model.bin" not in staged
    assert "STAGED.json" in staged
    # staging again (an interrupted run resumed) keeps the identical objects
    assert (
        stage_weights(
            staging=staging, pinned=pinned_model(config.resources.environment), source_dir=snapshot
        )[1]
        == 5
    )

    env = JOB_TYPE.task_environment(config, staging_root_uri=staging.root_uri, exists=exists)
    job_uri = staging.job_uri(job_type=JOB_TYPE.name, job_id="gpu-job")
    environment = {
        **submit.container_environment(
            job_uri=job_uri,
            staged={"input.parquet": f"{job_uri}/input.parquet"},
            input_file="input.parquet",
        ),
        **env,
    }
    request = build_create_job_request(
        config.resources,
        job_type=JOB_TYPE.name,
        job_id="gpu-job",
        project="robotoff",
        environment=environment,
        labels={},
    )
    variables = request.job.task_groups[0].task_spec.environment.variables
    assert variables["HF_HUB_OFFLINE"] == "1" and variables["TRANSFORMERS_OFFLINE"] == "1"
    assert variables["SPELLCHECK_WEIGHTS_URI"] == uri
    assert variables["SPELLCHECK_MODEL_REVISION"] == REVISION
    assert variables["SPELLCHECK_ENGINE"] == "vllm"

    # the CPU engine (the local runner's) needs no weights
    assert (
        JOB_TYPE.task_environment(
            JOB_TYPE.config_for_local_runner(config),
            staging_root_uri=staging.root_uri,
            exists=exists,
        )
        == {}
    )


def test_a_revision_that_is_not_a_commit_is_refused(staging: Staging) -> None:
    for revision in ("", "main", "v1.0", REVISION[:12]):
        with pytest.raises(StagedFilesError, match="pin openfoodfacts/spellcheck-mistral-7b"):
            JOB_TYPE.task_environment(gpu_config(revision), staging_root_uri=staging.root_uri)


def test_a_snapshot_without_weights_stages_nothing(staging: Staging, tmp_path: Path) -> None:
    (tmp_path / "empty").mkdir()
    (tmp_path / "empty" / "config.json").write_text("{}")
    with pytest.raises(WeightsError, match="no .safetensors"):
        stage_weights(
            staging=staging,
            pinned=pinned_model({"SPELLCHECK_MODEL_REVISION": REVISION}),
            source_dir=tmp_path / "empty",
        )
    assert staging.list_uris(prefix_uri=f"{staging.root_uri}/models/") == []


def test_stage_weights_command(
    staging: Staging, snapshot: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("ROBOTOFF_BATCH_STAGING_URI", staging.root_uri)
    result = CliRunner().invoke(
        app,
        [
            "stage-weights",
            "ingredients-spellcheck",
            "--from",
            str(snapshot),
            "--revision",
            REVISION,
        ],
    )
    assert result.exit_code == 0, result.output
    assert f"models/{MODEL}/{REVISION}" in result.output
    assert f"SPELLCHECK_MODEL_REVISION: {REVISION}" in result.output  # what to pin
    assert staging.exists(uri=f"{staging.root_uri}/models/{MODEL}/{REVISION}/STAGED.json")


def test_the_container_copies_the_staged_weights_and_loads_them_offline(
    staging: Staging, snapshot: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    uri, _, _ = stage_weights(
        staging=staging,
        pinned=pinned_model({"SPELLCHECK_MODEL_REVISION": REVISION}),
        source_dir=snapshot,
    )
    loaded: list[dict[str, Any]] = []

    class LLM:
        def __init__(self, **kwargs: Any) -> None:
            loaded.append(kwargs)
            self.files = sorted(p.name for p in Path(kwargs["model"]).iterdir())

        def get_tokenizer(self) -> Any:
            return SimpleNamespace(encode=lambda text: list(text.encode()))

        def generate(self, prompts: list[str], params: Any, use_tqdm: bool) -> list[Any]:
            out = SimpleNamespace(text="sel", finish_reason="stop")
            return [SimpleNamespace(outputs=[out]) for _ in prompts]

    monkeypatch.setitem(
        sys.modules, "vllm", SimpleNamespace(LLM=LLM, SamplingParams=lambda **kw: kw)
    )
    pq.write_table(
        pa.table({"code": ["1"], "lang": ["fr"], "text": ["sell"]}), tmp_path / "input.parquet"
    )
    local = tmp_path / "weights"
    env = {
        "INPUT_FILE_PATH": str(tmp_path / "input.parquet"),
        "OUTPUT_FILE_PATH": str(tmp_path / "output"),
        "SPELLCHECK_MODEL_REVISION": REVISION,
        "SPELLCHECK_WEIGHTS_URI": uri,
        "SPELLCHECK_WEIGHTS_DIR": str(local),
    }
    assert job_main.main(["--engine", "vllm"], env) == 0
    assert loaded[0]["model"] == str(local) and loaded[0]["revision"] is None
    assert sorted(p.name for p in local.iterdir()) == sorted(
        [
            "STAGED.json",
            "config.json",
            "model-00001-of-00002.safetensors",
            "model-00002-of-00002.safetensors",
            "tokenizer.json",
            "tokenizer.model",
        ]
    )

    # a copy whose staging did not finish (no STAGED.json) is refused: exit 2, named
    marker = Path(uri.removeprefix("file://")) / "STAGED.json"
    marker.unlink()
    with pytest.raises(InputError, match="STAGED.json is missing"):
        job_main.load_engine(job_main.parse_config(["--engine", "vllm"], env))
