"""The code location: every job type's assets, jobs and schedule, the sensor, the resources.

Loading it validates every file in job_configs/; an invalid file fails the load with the same
message as ``robotoff-batch config validate``.
"""

from __future__ import annotations

from typing import Any

import dagster as dg

from robotoff_batch.assets import build_job_type_definitions
from robotoff_batch.job_types import RegisteredJobType, load_registry
from robotoff_batch.names import fallback_job_name, finish_job_name
from robotoff_batch.resources import BatchEngineResource, build_resources
from robotoff_batch.sensors import build_batch_job_sensor


def build_definitions(
    environment: str | None = None,
    *,
    resources: dict[str, Any] | None = None,
    registry: list[RegisteredJobType] | None = None,
) -> dg.Definitions:
    """Build the code location for an environment (``local`` or ``production``).

    ``resources`` replaces the environment's resource dict (tests point the same code location
    at temporary directories, an emulator, a test database); ``registry`` the job types of
    job_configs/ (tests load other configs).
    """
    registry = list(load_registry().values()) if registry is None else registry
    parts = [build_job_type_definitions(r) for r in registry]
    requested = {name(r.name) for r in registry for name in (finish_job_name, fallback_job_name)}
    sensor_jobs = [job for part in parts for job in part.jobs or [] if job.name in requested]
    resources = resources if resources is not None else build_resources(environment)
    engine = resources.get("batch_engine")
    kind = engine.kind if isinstance(engine, BatchEngineResource) else "local"
    return dg.Definitions.merge(
        *parts,
        dg.Definitions(
            sensors=[build_batch_job_sensor(registry, sensor_jobs, engine_kind=kind)],
            resources=resources,
        ),
    )


defs = build_definitions()
