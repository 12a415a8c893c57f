"""Dagster definitions of a job type, generated from the registry (a new job type reuses all):

launch.py     <type>/products, staged_input, batch_job_submission: one launch step
batch_job.py  <type>/batch_job [partition = batch job id]: outcome and check; cancel job
imports.py    <type>/predictions [partition = batch job id]: the import (job types that import)

The finish job (``finish_<type>``, requested by the sensor when a job ends) materializes
``batch_job`` then, for a job type that imports, ``predictions``; it runs in-process: no
per-step process to start.
"""

from __future__ import annotations

from typing import Any

import dagster as dg

from robotoff_batch.assets.batch_job import build_batch_job, build_cancel_job
from robotoff_batch.assets.fallback import build_fallback_job
from robotoff_batch.assets.imports import build_imports
from robotoff_batch.assets.launch import build_launch
from robotoff_batch.job_types import RegisteredJobType
from robotoff_batch.names import FINISH_KIND, RUN_KIND_TAG, finish_job_name, partitions_def_name


def build_job_type_definitions(registered: RegisteredJobType) -> dg.Definitions:
    """Assets, checks, jobs and schedule of one job type."""
    jt = registered.job_type
    partitions = dg.DynamicPartitionsDefinition(name=partitions_def_name(registered.name))
    launch = build_launch(registered)
    batch_job = build_batch_job(registered, partitions)
    finish_assets = [batch_job]
    if jt.imports:
        finish_assets.append(build_imports(registered, partitions))
    what = "and import its output " if jt.imports else ""
    finish_job = dg.define_asset_job(
        name=finish_job_name(jt.name),
        selection=dg.AssetSelection.assets(*finish_assets),
        partitions_def=partitions,
        executor_def=dg.in_process_executor,
        description=f"Record a finished {jt.name} batch job's outcome on its partition {what}"
        "(the sensor requests it when the job ends).",
        tags={"job_type": jt.name, RUN_KIND_TAG: FINISH_KIND},
    )
    jobs: list[Any] = [*launch["jobs"], finish_job, build_cancel_job(registered, partitions)]
    if registered.config.fallbacks:
        jobs.append(build_fallback_job(registered, partitions))
    return dg.Definitions(
        assets=[*launch["assets"], *finish_assets],
        jobs=jobs,
        schedules=launch["schedules"],
    )
