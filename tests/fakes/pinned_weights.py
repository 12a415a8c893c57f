"""A deployment that pinned and staged the vLLM model's weights, for the tests that launch the
production (GPU) config on the emulated Cloud Batch: the revision the job config pins and the
STAGED.json marker `robotoff-batch stage-weights` writes last (the weights themselves are not
needed: the emulated VMs play the image with the CPU engine)."""

from __future__ import annotations

import json
import tempfile
from pathlib import Path
from typing import Any

from robotoff_batch.config.loader import load_job_configs
from robotoff_batch.job_types import RegisteredJobType, load_registry
from robotoff_batch.job_types.ingredients_spellcheck.weights import pinned_model
from robotoff_batch.paths import JOB_CONFIGS_DIR
from robotoff_batch.staging import IdenticalObjectExistsError, Staging

REVISION = "0123456789abcdef0123456789abcdef01234567"
JOB_TYPE = "ingredients-spellcheck"


def pin(data: dict[str, Any], revision: str = REVISION) -> dict[str, Any]:
    """The job config's YAML data with the model revision pinned."""
    data["resources"].setdefault("environment", {})["SPELLCHECK_MODEL_REVISION"] = revision
    return data


def pinned_registry(tmp_path: Path) -> dict[str, RegisteredJobType]:
    """The registry of the shipped job configs, the spellcheck one with its revision pinned."""
    import yaml

    directory = tmp_path / "pinned_job_configs"
    directory.mkdir(exist_ok=True)
    paths = []
    for source in sorted(JOB_CONFIGS_DIR.glob("*.yaml")):
        data = yaml.safe_load(source.read_text())
        if source.stem == JOB_TYPE:
            data = pin(data)
        target = directory / source.name
        target.write_text(yaml.safe_dump(data, sort_keys=False))
        paths.append(target)
    return load_registry(load_job_configs(paths))


def stage_marker(staging: Staging, revision: str = REVISION) -> str:
    """The pinned revision's STAGED.json in the staging area; returns its URI."""
    pinned = pinned_model({"SPELLCHECK_MODEL_REVISION": revision})
    uri = pinned.marker_uri(staging.root_uri)
    with tempfile.TemporaryDirectory() as tmp:
        marker = Path(tmp) / "STAGED.json"
        marker.write_text(json.dumps({"model": pinned.model, "revision": revision, "files": []}))
        try:
            staging.upload_file(local_path=str(marker), uri=uri)
        except IdenticalObjectExistsError:
            pass
    return uri
