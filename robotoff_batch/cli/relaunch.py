"""``robotoff-batch relaunch JOB``: a FAILED job's remainder, as a new batch job on the same
staged input that carries the chunks already done (robotoff_batch/follow/relaunch.py)."""

from __future__ import annotations

from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

import typer

from robotoff_batch.cli.common import fail, say

if TYPE_CHECKING:  # Dagster and the engines are imported when the command runs (fast --help)
    from robotoff_batch.batch.engine import JobStatus
    from robotoff_batch.cli import operations
    from robotoff_batch.config.resources_models import BatchResources


def relaunch(ws: operations.Workspace, *, job_id: str, alternative: int | None = None) -> Any:
    """Submit the relaunch of a FAILED job; register its partition and note it on both
    partitions (the UI shows which job continues which). Returns the ``Relaunched``."""
    import dagster as dg

    from robotoff_batch.assets.fallback import launch_environment
    from robotoff_batch.batch import submit
    from robotoff_batch.batch.engine import JobNotFoundError
    from robotoff_batch.cli import operations
    from robotoff_batch.config.loader import load_job_config
    from robotoff_batch.follow.relaunch import RelaunchError, relaunch_failed
    from robotoff_batch.names import JOB_TYPE_LABEL, batch_job_asset_key, partitions_def_name

    engine = ws.engine
    try:
        job_type = engine.get_job(job_id=job_id).labels.get(JOB_TYPE_LABEL, "")
    except JobNotFoundError:
        raise operations.OperationError(f"no batch job {job_id!r}") from None
    registry = {r.name: r for r in ws.registry}
    if job_type not in registry:
        raise operations.OperationError(f"{job_id} is of an unknown job type {job_type!r}")
    config = load_job_config(registry[job_type].config_path).config  # the file as it is now
    staging = ws.resource("staging").get_staging()
    project = ws.resource("batch_engine").project

    def environment(owner: str, first: str) -> Mapping[str, str]:
        try:
            return launch_environment(ws.instance, owner, first)
        except dg.Failure as exc:
            raise RelaunchError(exc.description or str(exc)) from None

    def submit_new(
        new_id: str, resources: BatchResources, env: Mapping[str, str], labels: Mapping[str, str]
    ) -> JobStatus:
        try:
            status, _ = submit.submit_job(
                engine=engine,
                config=config,
                job_type=job_type,
                job_id=new_id,
                project=project,
                environment=env,
                labels=labels,
                resources=resources,
            )
        except submit.PipelineError as exc:
            raise RelaunchError(str(exc)) from None
        return status

    try:
        done = relaunch_failed(
            engine=engine,
            staging=staging,
            config=config,
            job_type=job_type,
            job_id=job_id,
            launch_environment=environment,
            submit=submit_new,
            alternative=alternative,
        )
    except RelaunchError as exc:
        raise operations.OperationError(str(exc)) from None
    new_id = done.new_job.job_id
    ws.instance.add_dynamic_partitions(partitions_def_name(job_type), [new_id])
    for partition, note in ((job_id, {"relaunched_as": new_id}), (new_id, {"relaunch_of": job_id})):
        ws.instance.report_runless_asset_event(
            dg.AssetObservation(
                asset_key=batch_job_asset_key(job_type),
                partition=partition,
                metadata={
                    **note,
                    "carried_from": dg.MetadataValue.text("\n".join(done.carried_from)),
                },
            )
        )
    return done


def relaunch_command(
    job_id: str = typer.Argument(..., help="A FAILED batch job id."),
    alternative: int | None = typer.Option(
        None,
        help="Run on the config's resources (0) or its i-th fallback alternative; default: "
        "those the failed job ran on.",
    ),
    wait: bool = typer.Option(False, "--wait", help="Follow the new job to its outcome (import)."),
    timeout_s: float = typer.Option(
        24 * 3600, help="With --wait: stop waiting after this long (the job goes on)."
    ),
) -> None:
    """Relaunch a FAILED job on its staged input: the new job takes the chunks already done
    and computes only the rest; its import takes each product once (with or without
    an "import --partial" of the failed job first)."""
    from robotoff_batch.cli import operations
    from robotoff_batch.cli.jobs import follow_and_report

    ws = operations.Workspace.from_env()
    try:
        done = relaunch(ws, job_id=job_id, alternative=alternative)
    except operations.OperationError as exc:
        raise fail(f"relaunch failed: {exc}") from None
    new_id = done.new_job.job_id
    where = "its config's resources" if done.alternative == 0 else f"alternative {done.alternative}"
    say(f"relaunched {job_id} as {new_id} on {where}, carrying the chunks of {job_id}")
    if wait:
        follow_and_report(ws, new_id, timeout_s)
