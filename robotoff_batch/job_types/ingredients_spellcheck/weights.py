"""The vLLM engine's model weights: pinned by the job config, staged once in the deployment's
own storage, read by every task with the hub switched off (docs/production.md, "Model
weights").

Layout, under the staging root (the bucket the tasks already read their input from):

    <root>/models/<model id>/<revision>/<the revision's files, as on the hub>
    <root>/models/<model id>/<revision>/STAGED.json      written last: {model, revision, files}

A copy without ``STAGED.json`` is a staging that did not finish: the tasks and ``doctor``
refuse it.
"""

from __future__ import annotations

import json
import logging
import re
import tempfile
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path

from robotoff_batch.config.models import JobConfig
from robotoff_batch.staging import IdenticalObjectExistsError, Staging
from robotoff_batch.staging.local import file_crc32c

logger = logging.getLogger(__name__)

MODEL_ENV = "SPELLCHECK_MODEL"
REVISION_ENV = "SPELLCHECK_MODEL_REVISION"
WEIGHTS_URI_ENV = "SPELLCHECK_WEIGHTS_URI"
DEFAULT_MODEL = "openfoodfacts/spellcheck-mistral-7b"
STAGED_MARKER = "STAGED.json"
_REVISION = re.compile(r"^[0-9a-f]{40}$")
#: The hub's files vLLM reads for this model (weights, config, tokenizer); READMEs, images
#: and the other weight formats (.bin, .pth) are not staged.
STAGED_PATTERNS = ("*.json", "*.safetensors", "tokenizer.model", "*.txt", "*.jinja")


class WeightsError(RuntimeError):
    """The pinned weights are not usable (no pinned revision, not staged)."""


@dataclass(frozen=True)
class PinnedModel:
    model: str
    revision: str

    def relative_path(self) -> str:
        return f"models/{self.model}/{self.revision}"

    def uri(self, root_uri: str) -> str:
        """Where the staged copy lives (a prefix: no trailing slash)."""
        return f"{root_uri.rstrip('/')}/{self.relative_path()}"

    def marker_uri(self, root_uri: str) -> str:
        return f"{self.uri(root_uri)}/{STAGED_MARKER}"


def pinned_model(environment: Mapping[str, str]) -> PinnedModel:
    """The model and revision a job config pins; :class:`WeightsError` when the revision is
    not a full commit hash (a branch or tag can move under a running campaign)."""
    model = environment.get(MODEL_ENV, "").strip() or DEFAULT_MODEL
    revision = environment.get(REVISION_ENV, "").strip()
    if not _REVISION.match(revision):
        raise WeightsError(
            f"{REVISION_ENV} is {repr(revision) if revision else 'not set'} in the job "
            "config's environment: pin "
            f"{model} to a commit (40 hex digits): `robotoff-batch stage-weights "
            "ingredients-spellcheck --revision main` stages main and prints the line to put in "
            "job_configs/ingredients-spellcheck.yaml"
        )
    return PinnedModel(model=model, revision=revision)


def pinned_model_of(config: JobConfig) -> PinnedModel:
    return pinned_model(config.resources.environment)


def check_staged(staging: Staging, pinned: PinnedModel) -> str:
    """The staged copy's marker URI; :class:`WeightsError` when it is missing."""
    marker = pinned.marker_uri(staging.root_uri)
    if not staging.exists(uri=marker):
        raise WeightsError(
            f"the weights of {pinned.model}@{pinned.revision} are not staged ({marker} is "
            "missing): run `robotoff-batch stage-weights ingredients-spellcheck` once"
        )
    return marker


def stage_weights(
    *,
    staging: Staging,
    pinned: PinnedModel,
    source_dir: Path,
    progress: Callable[[str], None] = lambda line: None,
) -> tuple[str, int, int]:
    """Upload a local snapshot of the revision (create-only; an identical object from an
    earlier, interrupted run is kept), then ``STAGED.json``. Returns (URI, files, bytes)."""
    files = sorted(
        {p for pattern in STAGED_PATTERNS for p in source_dir.rglob(pattern) if p.is_file()}
    )
    files = [p for p in files if p.name != STAGED_MARKER and ".cache" not in p.parts]
    if not any(p.suffix == ".safetensors" for p in files):
        raise WeightsError(f"{source_dir} holds no .safetensors weights: nothing was staged")
    base = pinned.uri(staging.root_uri)
    total = 0
    listing = []
    for n, path in enumerate(files, 1):
        name = path.relative_to(source_dir).as_posix()
        size = path.stat().st_size
        try:
            staging.upload_file(local_path=str(path), uri=f"{base}/{name}")
        except IdenticalObjectExistsError:
            pass
        total += size
        listing.append({"name": name, "bytes": size, "crc32c": file_crc32c(path)})
        progress(f"[{n}/{len(files)}] {name} ({size / 1e9:.2f} GB)")
    with tempfile.TemporaryDirectory() as tmp:
        marker = Path(tmp) / STAGED_MARKER
        marker.write_text(
            json.dumps(
                {"model": pinned.model, "revision": pinned.revision, "files": listing}, indent=1
            )
        )
        try:
            staging.upload_file(local_path=str(marker), uri=f"{base}/{STAGED_MARKER}")
        except IdenticalObjectExistsError:
            pass
    return base, len(files), total


def download_snapshot(model: str, revision: str | None, target: Path) -> tuple[Path, str]:
    """The revision's files from the hub, on the operator's machine (huggingface_hub is not
    a dependency of the pipeline: install it there). Returns (directory, resolved commit)."""
    try:
        from huggingface_hub import snapshot_download
    except ImportError as exc:
        raise WeightsError(
            "downloading from the hub needs huggingface_hub (pip install huggingface_hub), "
            "or give a local snapshot with --from"
        ) from exc
    path = Path(
        snapshot_download(
            repo_id=model,
            revision=revision,
            local_dir=str(target),
            allow_patterns=list(STAGED_PATTERNS),
        )
    )
    from huggingface_hub import HfApi

    commit = HfApi().model_info(model, revision=revision).sha or ""
    return path, commit
