"""``robotoff-batch stage-weights JOB_TYPE``: bring a GPU job type's pinned model weights into
the deployment's staging bucket, once (docs/production.md, "Model weights")."""

from __future__ import annotations

import tempfile
from pathlib import Path

import typer

from robotoff_batch.cli.common import console, err_console


def stage_weights_command(
    job_type: str = typer.Argument("ingredients-spellcheck", help="Job type."),
    source: Path | None = typer.Option(  # noqa: B008
        None,
        "--from",
        help="A local snapshot of the pinned revision (else it is downloaded from the hub, "
        "which needs huggingface_hub on this machine).",
    ),
    revision: str | None = typer.Option(
        None,
        help="The commit to stage when the config pins none yet (its resolved hash is "
        "printed, to pin in the job config).",
    ),
) -> None:
    """Stage the pinned model weights under <staging>/models/<model>/<revision>/ (create-only,
    STAGED.json written last); the tasks then read them with the hub switched off."""
    from robotoff_batch.config.loader import JobConfigError, load_job_config
    from robotoff_batch.job_types.ingredients_spellcheck.weights import (
        MODEL_ENV,
        REVISION_ENV,
        WeightsError,
        download_snapshot,
        pinned_model,
        stage_weights,
    )
    from robotoff_batch.paths import JOB_CONFIGS_DIR
    from robotoff_batch.resources import build_resources, initialized

    if job_type != "ingredients-spellcheck":
        err_console.print(f"{job_type} stages no model weights", highlight=False)
        raise typer.Exit(1)
    try:
        config = load_job_config(JOB_CONFIGS_DIR / f"{job_type}.yaml").config
    except JobConfigError as exc:
        err_console.print(str(exc), highlight=False)
        raise typer.Exit(1) from None
    environment = dict(config.resources.environment)
    if revision:
        environment[REVISION_ENV] = revision
    staging = initialized(build_resources()["staging"]).get_staging()
    try:
        with tempfile.TemporaryDirectory(prefix="weights-") as tmp:
            if source is None:
                model = environment.get(MODEL_ENV) or "openfoodfacts/spellcheck-mistral-7b"
                wanted = environment.get(REVISION_ENV) or None
                console.print(f"downloading {model}@{wanted or 'main'} from the hub ...")
                source, commit = download_snapshot(model, wanted, Path(tmp))
                environment[REVISION_ENV] = commit
            pinned = pinned_model(environment)
            uri, files, size = stage_weights(
                staging=staging,
                pinned=pinned,
                source_dir=source,
                progress=lambda line: console.print(line, highlight=False),
            )
    except WeightsError as exc:
        err_console.print(str(exc), highlight=False)
        raise typer.Exit(1) from None
    console.print(f"staged {files} files ({size / 1e9:.2f} GB) at {uri}", highlight=False)
    if config.resources.environment.get(REVISION_ENV) != pinned.revision:
        console.print(
            f"pin it in job_configs/{job_type}.yaml: {REVISION_ENV}: {pinned.revision}",
            highlight=False,
        )
