"""Resources per environment, chosen by one variable (``ROBOTOFF_BATCH_ENV``).

``local`` (default): sample dump, file:// staging, local runner, embedded PostgreSQL.
``production``: everything from environment variables (see docs/production.md).
"""

from __future__ import annotations

import os
from typing import Any

import dagster as dg

from robotoff_batch.resources.resources import (
    BatchEngineResource,
    CloudBatchEngineResource,
    GCSStagingResource,
    LocalBatchEngineResource,
    LocalStagingResource,
    PostgresPredictionStoreResource,
    PredictionStoreResource,
    ProductDumpResource,
    RobotoffApiPredictionStoreResource,
    StagingResource,
    staging_resource,
)

ENVIRONMENTS = ("local", "production")


def _prediction_store(*, database_url: Any) -> PredictionStoreResource:
    """The import target from ROBOTOFF_BATCH_IMPORT_TARGET (postgres | robotoff_api); the
    key of Robotoff's endpoint only ever as an EnvVar."""
    target = os.environ.get("ROBOTOFF_BATCH_IMPORT_TARGET", "postgres")
    if target == "robotoff_api":
        return RobotoffApiPredictionStoreResource(
            database_url=database_url,
            robotoff_url=dg.EnvVar("ROBOTOFF_BATCH_ROBOTOFF_URL"),
            robotoff_bucket_uri=os.environ.get(
                "ROBOTOFF_BATCH_ROBOTOFF_BUCKET_URI", "gs://robotoff-batch"
            ),
            batch_job_key=dg.EnvVar("ROBOTOFF_BATCH_JOB_KEY"),
        )
    if target != "postgres":
        raise ValueError(
            f"ROBOTOFF_BATCH_IMPORT_TARGET must be postgres or robotoff_api, not {target!r}"
        )
    return PostgresPredictionStoreResource(database_url=database_url)


def build_resources(environment: str | None = None) -> dict[str, Any]:
    """The resource dict of an environment."""
    env = environment or os.environ.get("ROBOTOFF_BATCH_ENV", "local")
    if env == "local":
        from robotoff_batch.job_types import local_commands

        return {
            "product_dump": ProductDumpResource(
                path=os.environ.get("ROBOTOFF_BATCH_DUMP_PATH") or ProductDumpResource().path
            ),
            "staging": staging_resource(os.environ.get("ROBOTOFF_BATCH_STAGING_URI")),
            "batch_engine": LocalBatchEngineResource(job_type_commands=local_commands()),
            # An EnvVar, never the value: resource config lands in Dagster's run storage.
            "prediction_store": _prediction_store(
                database_url=dg.EnvVar("ROBOTOFF_DATABASE_URL")
                if os.environ.get("ROBOTOFF_DATABASE_URL")
                else None
            ),
        }
    if env == "production":
        return {
            "product_dump": ProductDumpResource(path=dg.EnvVar("ROBOTOFF_BATCH_DUMP_PATH")),
            "staging": GCSStagingResource(
                root_uri=dg.EnvVar("ROBOTOFF_BATCH_STAGING_URI"),
                gcp_project=dg.EnvVar("ROBOTOFF_BATCH_GCP_PROJECT"),
            ),
            "batch_engine": CloudBatchEngineResource(
                gcp_project=dg.EnvVar("ROBOTOFF_BATCH_GCP_PROJECT"),
                gcp_location=os.environ.get("ROBOTOFF_BATCH_GCP_LOCATION", "europe-west4"),
            ),
            "prediction_store": _prediction_store(database_url=dg.EnvVar("ROBOTOFF_DATABASE_URL")),
        }
    raise ValueError(f"ROBOTOFF_BATCH_ENV must be one of {ENVIRONMENTS}, not {env!r}")


def initialized(resource: Any) -> Any:
    """The resource with its ``dg.EnvVar`` fields read from the environment, ready to use
    outside a run (the CLI).

    What ``process_config_and_initialize`` does for these plain resources (none has a setup
    hook), without the ephemeral Dagster instance it builds (~1 s per call). An unset variable
    is a clear error naming it.
    """
    update = {}
    for name in type(resource).model_fields:
        value = getattr(resource, name)
        if isinstance(value, dg.EnvVar):
            resolved = value.get_value()
            if resolved is None:
                raise ValueError(
                    f"environment variable {value.env_var_name} is not set "
                    f"({type(resource).__name__}.{name}; see docs/production.md)"
                )
            update[name] = resolved
    return resource.model_copy(update=update) if update else resource


__all__ = [
    "BatchEngineResource",
    "CloudBatchEngineResource",
    "GCSStagingResource",
    "LocalBatchEngineResource",
    "LocalStagingResource",
    "PostgresPredictionStoreResource",
    "PredictionStoreResource",
    "ProductDumpResource",
    "RobotoffApiPredictionStoreResource",
    "StagingResource",
    "build_resources",
    "initialized",
    "staging_resource",
]
