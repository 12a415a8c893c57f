"""Dagster definitions of a job type, generated from the registry (a new job type reuses all):

launch.py     <type>/products, staged_input, batch_job_submission: one launch step
batch_job.py  <type>/batch_job [partition = batch job id]: outcome and check; cancel job
imports.py    <type>/predictions [partition = batch job id]: the import; the finish job
"""

from __future__ import annotations

from typing import Any

import dagster as dg

from robotoff_batch.assets.batch_job import build_batch_job, build_cancel_job
from robotoff_batch.assets.imports import build_imports
from robotoff_batch.assets.launch import build_launch
from robotoff_batch.follow import partitions_def_name
from robotoff_batch.job_types import RegisteredJobType


def build_job_type_definitions(registered: RegisteredJobType) -> dg.Definitions:
    """Assets, checks, jobs and schedule of one job type."""
    partitions = dg.DynamicPartitionsDefinition(name=partitions_def_name(registered.name))
    launch = build_launch(registered)
    batch_job = build_batch_job(registered, partitions)
    imports = build_imports(registered, partitions, batch_job)
    jobs: list[Any] = [
        *launch["jobs"],
        *imports["jobs"],
        build_cancel_job(registered, partitions),
    ]
    return dg.Definitions(
        assets=[*launch["assets"], batch_job, *imports["assets"]],
        jobs=jobs,
        schedules=launch["schedules"],
    )
