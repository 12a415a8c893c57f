"""Dagster resources: thin, configurable wrappers over the plain-Python parts.

Each resource picks its implementation from configuration (embedded default or production),
never from an ``if testing:`` inside business code. Secrets arrive as ``dg.EnvVar`` so the UI
shows the variable's name, never its value.
"""

from __future__ import annotations

import logging
import os
from pathlib import Path
from typing import TYPE_CHECKING, Any, cast

import dagster as dg
from pydantic import Field, PrivateAttr

from robotoff_batch.batch.engine import BatchEngine
from robotoff_batch.paths import SAMPLE_DATA_DIR, home_dir
from robotoff_batch.staging import Staging

if TYPE_CHECKING:
    from robotoff_batch.predictions.store import PredictionStore
    from robotoff_batch.predictions.target import PredictionTarget

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
    """Where job inputs are staged and outputs read; one subclass per backend
    (LocalStagingResource, GCSStagingResource), chosen in build_resources."""

    def get_staging(self) -> Staging:
        raise NotImplementedError


class LocalStagingResource(StagingResource):
    """A local directory (file://): the embedded default."""

    root_uri: str | None = Field(
        default=None,
        description="file:///abs/dir; default: file://<ROBOTOFF_BATCH_HOME>/staging.",
    )

    def get_staging(self) -> Staging:
        from robotoff_batch.staging.local import LocalStaging

        root = self.root_uri or (home_dir() / "staging").as_uri()
        if not root.startswith("file://"):
            raise dg.Failure(f"local staging takes a file:// URI, not {root!r}")
        Path(root.removeprefix("file://")).mkdir(parents=True, exist_ok=True)
        return LocalStaging(root_uri=root)


class GCSStagingResource(StagingResource):
    """A Cloud Storage bucket and prefix (gs://): what Cloud Batch jobs read and write."""

    root_uri: str = Field(description="gs://bucket/prefix")
    gcp_project: str | None = Field(default=None, description="GCP project of the bucket.")

    def get_staging(self) -> Staging:
        from dagster_gcp import GCSResource
        from google.cloud import storage

        from robotoff_batch.gcp_credentials import load_credentials
        from robotoff_batch.staging.gcs import GCSStaging

        if not self.root_uri.startswith("gs://"):
            raise dg.Failure(f"GCS staging takes a gs:// URI, not {self.root_uri!r}")
        if os.environ.get("STORAGE_EMULATOR_HOST"):  # the client library's emulator: no auth
            from google.auth.credentials import AnonymousCredentials

            client = storage.Client(
                project=self.gcp_project or "emulator", credentials=AnonymousCredentials()
            )
        elif "GOOGLE_CREDENTIALS" in os.environ:  # Robotoff's deployment, decoded in memory
            credentials, project = load_credentials()
            client = storage.Client(project=self.gcp_project or project, credentials=credentials)
        else:  # Application Default Credentials, as dagster-gcp does it
            client = GCSResource(project=self.gcp_project).get_client()
        return GCSStaging(root_uri=self.root_uri, client=client)


def staging_resource(root_uri: str | Any, *, gcp_project: Any = None) -> StagingResource:
    """The staging resource of a root URI (``gs://`` or ``file://``; None: the default
    directory). ``root_uri`` may be a ``dg.EnvVar``: its value decides the backend."""
    value = root_uri.get_value() if isinstance(root_uri, dg.EnvVar) else root_uri
    if value and str(value).startswith("gs://"):
        return GCSStagingResource(root_uri=root_uri, gcp_project=gcp_project)
    return LocalStagingResource(root_uri=root_uri)


class BatchEngineResource(dg.ConfigurableResource):
    """What the assets, the sensor and the CLI need of a batch engine; one subclass per engine
    (LocalBatchEngineResource, CloudBatchEngineResource)."""

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
    logging_endpoint: str | None = Field(
        default=None,
        description="Override of the Cloud Logging API endpoint, where failed tasks' log "
        "lines are read.",
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
            logging_endpoint=self.logging_endpoint,
        )


class PredictionStoreResource(dg.ConfigurableResource):
    """Where a job's output goes; one subclass per target (PostgresPredictionStoreResource,
    RobotoffApiPredictionStoreResource), chosen in build_resources. The ledger of imported
    jobs is in the PostgreSQL either way. Pass secrets as dg.EnvVar (the Launchpad shows this
    text as it is: no reST markup)."""

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

    _store: Any = PrivateAttr(default=None)

    def get_store(self) -> PredictionTarget:
        """The target, its ledger's schema created or upgraded (once per resource instance)."""
        if self._store is None:
            self._store = self.build_store(self._ledger())
        return self._store  # type: ignore[no-any-return]

    def _ledger(self) -> PredictionStore:
        if self.database_url:
            conninfo = self.database_url
        else:
            from robotoff_batch.predictions.embedded import ensure_embedded_postgres

            conninfo = ensure_embedded_postgres(home_dir() / "postgres")
        from robotoff_batch.predictions.store import PredictionStore

        store = PredictionStore(conninfo=conninfo)
        store.ensure_schema()
        return store

    def build_store(self, ledger: PredictionStore) -> PredictionTarget:
        raise NotImplementedError


class PostgresPredictionStoreResource(PredictionStoreResource):
    """Robotoff's PostgreSQL: its prediction and product_insight rows written directly."""

    def build_store(self, ledger: PredictionStore) -> PredictionTarget:
        return ledger


class RobotoffApiPredictionStoreResource(PredictionStoreResource):
    """Robotoff's own importer: postprocessed_data.parquet written into Robotoff's bucket, then
    POST /api/v1/batch/import once the job SUCCEEDED (the ledger in the PostgreSQL)."""

    robotoff_url: str = Field(description="Robotoff's base URL (https://robotoff...).")
    robotoff_bucket_uri: str = Field(
        default="gs://robotoff-batch",
        description="The bucket Robotoff's importer reads (its code hard-codes robotoff-batch); "
        "batch_dir is relative to it.",
    )
    batch_job_key: str = Field(
        description="Robotoff's BATCH_JOB_KEY, as EnvVar('ROBOTOFF_BATCH_JOB_KEY')."
    )

    def build_store(self, ledger: PredictionStore) -> PredictionTarget:
        from robotoff_batch.predictions.robotoff_api import RobotoffApi, RobotoffApiStore

        bucket = staging_resource(self.robotoff_bucket_uri).get_staging()
        api = RobotoffApi(base_url=self.robotoff_url, key=self.batch_job_key, bucket_staging=bucket)
        return RobotoffApiStore(ledger=ledger, api=api)
