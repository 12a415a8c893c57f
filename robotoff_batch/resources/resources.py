"""Dagster resources: thin, configurable wrappers over the plain-Python parts.

Each resource picks its implementation from configuration (embedded default or production),
never from an ``if testing:`` inside business code. Secrets arrive as ``dg.EnvVar`` so the UI
shows the variable's name, never its value.
"""

from __future__ import annotations

import logging
import os
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal, cast

import dagster as dg
from pydantic import Field, PrivateAttr

from robotoff_batch.batch.engine import BatchEngine
from robotoff_batch.paths import SAMPLE_DATA_DIR, home_dir
from robotoff_batch.staging import Staging

if TYPE_CHECKING:
    from robotoff_batch.predictions.store import PredictionStore

logger = logging.getLogger(__name__)

DEFAULT_DUMP = SAMPLE_DATA_DIR / "food_sample_2026.parquet"


class ProductDumpResource(dg.ConfigurableResource):
    """The OFF Parquet dump products are extracted from."""

    path: str = Field(
        default=str(DEFAULT_DUMP),
        description="Path of the OFF Parquet dump (food.parquet). Default: the 1,000-product "
        "real sample shipped in data/off/.",
    )


class StagingResource(dg.ConfigurableResource):
    """Where job inputs are staged and outputs read: file:// (default) or gs://."""

    root_uri: str | None = Field(
        default=None,
        description="file:///abs/dir or gs://bucket/prefix; default: "
        "file://<ROBOTOFF_BATCH_HOME>/staging.",
    )
    gcp_project: str | None = Field(default=None, description="GCP project of the bucket.")

    def get_staging(self) -> Staging:
        from robotoff_batch.staging import staging_from_uri

        root = self.root_uri or (home_dir() / "staging").as_uri()
        if root.startswith("file://"):
            Path(root.removeprefix("file://")).mkdir(parents=True, exist_ok=True)
            return staging_from_uri(root)
        from dagster_gcp import GCSResource
        from google.cloud import storage

        from robotoff_batch.gcp_credentials import load_credentials

        if os.environ.get("STORAGE_EMULATOR_HOST"):  # the emulator takes no credentials
            from google.auth.credentials import AnonymousCredentials

            client = storage.Client(
                project=self.gcp_project or "emulator", credentials=AnonymousCredentials()
            )
        elif "GOOGLE_CREDENTIALS" in os.environ:  # Robotoff's deployment, decoded in memory
            credentials, project = load_credentials()
            client = storage.Client(project=self.gcp_project or project, credentials=credentials)
        else:  # Application Default Credentials, as dagster-gcp does it
            client = GCSResource(project=self.gcp_project).get_client()
        return staging_from_uri(root, gcs_client=client)


class BatchEngineResource(dg.ConfigurableResource):
    """What the assets, the sensor and the CLI need of a batch engine; one subclass per engine
    (:class:`LocalBatchEngineResource`, :class:`CloudBatchEngineResource`)."""

    _engine: Any = PrivateAttr(default=None)

    @property
    def kind(self) -> str:
        raise NotImplementedError

    @property
    def project(self) -> str:
        """The project of the requests' ``parent`` (``local`` on the local runner)."""
        return "local"

    def get_engine(self) -> BatchEngine:
        """The engine, built once per resource instance."""
        if self._engine is None:
            self._engine = self.build_engine()
        return self._engine  # type: ignore[no-any-return]

    def build_engine(self) -> BatchEngine:
        raise NotImplementedError

    def local_argv(self, image: str) -> list[str] | None:
        """The command that plays ``image`` on the local runner; None on another engine."""
        return None


class LocalBatchEngineResource(BatchEngineResource):
    """The local runner: each task of a job is a local process playing the job type's image."""

    state_dir: str | None = Field(
        default=None,
        description="Local runner state directory; default <ROBOTOFF_BATCH_HOME>/local-batch.",
    )
    job_type_commands: dict[str, list[str]] = Field(
        default_factory=dict,
        description="Image URI -> argv that plays it: each job type's local_command, given by "
        "the composition root (build_resources, from the job-type registry).",
    )
    local_commands: dict[str, list[str]] | None = Field(
        default=None,
        description="Image URI -> argv that plays it, overriding the job types' own local "
        "commands (e.g. to debug a container).",
    )

    @property
    def kind(self) -> str:
        return "local"

    def local_argv(self, image: str) -> list[str] | None:
        return self._commands().get(image)

    def _commands(self) -> dict[str, list[str]]:
        return {**self.job_type_commands, **(self.local_commands or {})}

    def build_engine(self) -> BatchEngine:
        from robotoff_batch.batch.local import LocalBatchEngine

        state = Path(self.state_dir) if self.state_dir else home_dir() / "local-batch"
        return LocalBatchEngine(state_dir=state, commands_by_image=self._commands())


class CloudBatchEngineResource(BatchEngineResource):
    """Google Cloud Batch, in one project and region (the sensor lists that region)."""

    gcp_project: str | None = Field(default=None, description="Cloud Batch project.")
    gcp_location: str = Field(default="europe-west4", description="Cloud Batch region.")
    api_endpoint: str | None = Field(
        default=None, description="Override of the Batch API endpoint (e.g. a regional one)."
    )
    extra_locations: list[str] | None = Field(
        default=None,
        description="Other regions the sensor lists (one ListJobs each). Default: every "
        "location of the job configs (resources and fallbacks), so no job runs unfollowed.",
    )

    def followed_locations(self) -> list[str]:
        """gcp_location first, then the other regions jobs may run in."""
        extra = self.extra_locations
        if extra is None:
            from robotoff_batch.job_types import load_registry

            extra = [where for r in load_registry().values() for where in r.config.locations]
        return list(dict.fromkeys([self.gcp_location, *extra]))

    @property
    def kind(self) -> str:
        return "cloud-batch"

    @property
    def project(self) -> str:
        """The engine's own project (the one its requests' ``parent`` and listing use)."""
        from robotoff_batch.batch.cloud_batch import CloudBatchEngine

        return cast(CloudBatchEngine, self.get_engine()).project

    def build_engine(self) -> BatchEngine:
        from robotoff_batch.batch.cloud_batch import CloudBatchEngine
        from robotoff_batch.gcp_credentials import load_credentials

        credentials, project = load_credentials()
        project = self.gcp_project or project
        if not project:
            raise dg.Failure("Cloud Batch needs a GCP project: set ROBOTOFF_BATCH_GCP_PROJECT")
        return CloudBatchEngine.from_settings(
            project=project,
            location=self.gcp_location,
            api_endpoint=self.api_endpoint,
            credentials=credentials,
            locations=self.followed_locations(),
        )


class PredictionStoreResource(dg.ConfigurableResource):
    """Where a job's output goes: Robotoff's PostgreSQL (``postgres``: a configured URL, else
    an embedded PostgreSQL), or Robotoff's own importer (``robotoff_api``). The ledger of
    imported jobs is in the PostgreSQL either way. Pass secrets as ``dg.EnvVar``."""

    max_bad_row_fraction: float = Field(
        default=0.01,
        ge=0.0,
        le=1.0,
        description="Share of an output's rows that may be held back (quarantined: "
        "conflicting rows of a product, NUL byte, empty code...) with the rest imported; "
        "more refuses the whole output.",
    )
    database_url: str | None = Field(
        default=None,
        description="Robotoff's PostgreSQL (postgresql://...), as EnvVar('ROBOTOFF_DATABASE_URL'). "
        "Default: an embedded server under <ROBOTOFF_BATCH_HOME>/postgres.",
    )
    target: Literal["postgres", "robotoff_api"] = Field(
        default="postgres",
        description="postgres: write Robotoff's prediction and product_insight rows directly. "
        "robotoff_api: write postprocessed_data.parquet into Robotoff's bucket and POST "
        "/api/v1/batch/import once the job SUCCEEDED.",
    )
    robotoff_url: str | None = Field(
        default=None, description="robotoff_api: Robotoff's base URL (https://robotoff...)."
    )
    robotoff_bucket_uri: str = Field(
        default="gs://robotoff-batch",
        description="robotoff_api: the bucket Robotoff's importer reads (its code hard-codes "
        "robotoff-batch); batch_dir is relative to it.",
    )
    batch_job_key: str | None = Field(
        default=None,
        description="robotoff_api: Robotoff's BATCH_JOB_KEY, as EnvVar('ROBOTOFF_BATCH_JOB_KEY').",
    )

    _store: Any = PrivateAttr(default=None)

    def get_store(self) -> Any:
        """The store, its schema created or upgraded (once per resource instance)."""
        if self._store is None:
            if self.database_url:
                conninfo = self.database_url
            else:
                from robotoff_batch.predictions.embedded import ensure_embedded_postgres

                conninfo = ensure_embedded_postgres(home_dir() / "postgres")
            from robotoff_batch.predictions.store import PredictionStore

            store = PredictionStore(conninfo=conninfo)
            store.ensure_schema()
            self._store = store
            if self.target == "robotoff_api":
                self._store = self._api_store(store)
        return self._store

    def _api_store(self, ledger: PredictionStore) -> Any:
        from robotoff_batch.predictions.robotoff_api import RobotoffApi, RobotoffApiStore

        if not self.robotoff_url or not self.batch_job_key:
            raise dg.Failure(
                "the robotoff_api target needs robotoff_url and batch_job_key "
                "(ROBOTOFF_BATCH_ROBOTOFF_URL, ROBOTOFF_BATCH_JOB_KEY)"
            )
        bucket = StagingResource(root_uri=self.robotoff_bucket_uri).get_staging()
        api = RobotoffApi(base_url=self.robotoff_url, key=self.batch_job_key, bucket_staging=bucket)
        return RobotoffApiStore(ledger=ledger, api=api)
