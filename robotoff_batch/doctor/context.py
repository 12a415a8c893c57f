"""What the doctor checks with: the production settings, the clients (injected in tests) and
the result of one check."""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any, Protocol
from urllib.parse import quote

from robotoff_batch.config.models import JobConfig

PROJECT_ENV = "ROBOTOFF_BATCH_GCP_PROJECT"
LOCATION_ENV = "ROBOTOFF_BATCH_GCP_LOCATION"
STAGING_ENV = "ROBOTOFF_BATCH_STAGING_URI"
IAM_ENDPOINT_ENV = "ROBOTOFF_BATCH_IAM_ENDPOINT"
IAM_ENDPOINT = "https://iam.googleapis.com"
ACT_AS = "iam.serviceAccounts.actAs"
RESOURCE_MANAGER_ENDPOINT_ENV = "ROBOTOFF_BATCH_RESOURCE_MANAGER_ENDPOINT"
RESOURCE_MANAGER_ENDPOINT = "https://cloudresourcemanager.googleapis.com"


@dataclass(frozen=True)
class Check:
    """One line of the doctor's report."""

    name: str
    ok: bool
    detail: str
    fix: str = ""

    def render(self) -> str:
        head = f"{'ok    ' if self.ok else 'FAILED'}  {self.name}: {self.detail}"
        return head if self.ok or not self.fix else f"{head}\n        fix: {self.fix}"


class IamPermissions(Protocol):
    def test_permissions(self, service_account: str, permissions: list[str]) -> set[str]:
        """The subset of ``permissions`` the caller holds on ``service_account``."""
        ...

    def project_bindings(self, project: str) -> list[dict[str, Any]]:
        """The project's IAM policy bindings (``role``, ``members``, ``condition``)."""
        ...


class IamError(RuntimeError):
    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status = status


class IamClient:
    """IAM ``projects.serviceAccounts.testIamPermissions`` over an HTTP session (an
    ``AuthorizedSession`` in production; a plain session against a fake in tests)."""

    def __init__(
        self,
        *,
        session: Any,
        endpoint: str = IAM_ENDPOINT,
        timeout: float = 15.0,
        resource_manager_endpoint: str = RESOURCE_MANAGER_ENDPOINT,
    ):
        self.session = session
        self.endpoint = endpoint.rstrip("/")
        self.timeout = timeout
        self.resource_manager_endpoint = resource_manager_endpoint.rstrip("/")

    def project_bindings(self, project: str) -> list[dict[str, Any]]:
        """The project's IAM policy bindings (Resource Manager ``projects.getIamPolicy``,
        policy version 3: conditional bindings included)."""
        url = f"{self.resource_manager_endpoint}/v1/projects/{quote(project, safe='')}:getIamPolicy"
        body = {"options": {"requestedPolicyVersion": 3}}
        response = self.session.post(url, json=body, timeout=self.timeout)
        if response.status_code != 200:
            try:
                message = response.json()["error"]["message"]
            except (ValueError, KeyError, TypeError):
                message = response.text[:200]
            raise IamError(response.status_code, message)
        return list(response.json().get("bindings", []))

    def test_permissions(self, service_account: str, permissions: list[str]) -> set[str]:
        url = (
            f"{self.endpoint}/v1/projects/-/serviceAccounts/{quote(service_account, safe='@.')}"
            ":testIamPermissions"
        )
        response = self.session.post(url, json={"permissions": permissions}, timeout=self.timeout)
        if response.status_code != 200:
            try:
                message = response.json()["error"]["message"]
            except (ValueError, KeyError, TypeError):
                message = response.text[:200]
            raise IamError(response.status_code, message)
        return set(response.json().get("permissions", []))


@dataclass
class DoctorContext:
    """What the checks run with. A client left None is built from the credentials."""

    env: Mapping[str, str]
    configs: Mapping[str, JobConfig]
    storage_client: Any = None
    batch_client: Any = None
    iam: IamPermissions | None = None
    load_credentials: Callable[..., tuple[Any, str | None]] | None = None


def load_configs() -> dict[str, JobConfig]:
    """Every job type's validated config (the files under job_configs/)."""
    from robotoff_batch.config.loader import load_job_config
    from robotoff_batch.job_types import job_config_paths

    return {item.job_type: item.config for item in map(load_job_config, job_config_paths())}


def context_from_env(env: Mapping[str, str]) -> DoctorContext:
    """The production context; emulators where their variables say so (tests, rehearsals):
    ``STORAGE_EMULATOR_HOST`` and an ``http://`` ``ROBOTOFF_BATCH_IAM_ENDPOINT`` take no
    credentials (that emulator also serves Resource Manager's getIamPolicy, unless
    ``ROBOTOFF_BATCH_RESOURCE_MANAGER_ENDPOINT`` names another). The Batch client is built
    from the credentials (a caller may set one)."""
    ctx = DoctorContext(env=env, configs=load_configs())
    if env.get("STORAGE_EMULATOR_HOST"):
        from google.auth.credentials import AnonymousCredentials
        from google.cloud import storage

        ctx.storage_client = storage.Client(
            project=env.get(PROJECT_ENV) or "emulator", credentials=AnonymousCredentials()
        )
    endpoint = env.get(IAM_ENDPOINT_ENV, "")
    if endpoint.startswith("http://"):
        import requests

        ctx.iam = IamClient(
            session=requests.Session(),
            endpoint=endpoint,
            resource_manager_endpoint=env.get(RESOURCE_MANAGER_ENDPOINT_ENV) or endpoint,
        )
    return ctx
