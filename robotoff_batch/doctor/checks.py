"""The doctor's checks, in order: credentials, project, region, bucket, ListJobs, actAs, the
jobs' account writing logs, images
(ListJobs and images once per location: :mod:`robotoff_batch.doctor.locations`)."""

from __future__ import annotations

import uuid
from typing import Any

from robotoff_batch.doctor.context import (
    ACT_AS,
    IAM_ENDPOINT,
    IAM_ENDPOINT_ENV,
    LOCATION_ENV,
    PROJECT_ENV,
    RESOURCE_MANAGER_ENDPOINT,
    RESOURCE_MANAGER_ENDPOINT_ENV,
    STAGING_ENV,
    Check,
    DoctorContext,
    IamClient,
    IamError,
)
from robotoff_batch.doctor.locations import (
    check_bucket_location,
    check_images,
    check_list_jobs,
    followed_locations,
)


def run_checks(ctx: DoctorContext) -> list[Check]:
    """Every check, in order; a check whose prerequisite failed says so and fails too."""
    checks: list[Check] = []
    credentials, key_project = _check_credentials(ctx, checks)
    project = _check_project(ctx, checks, key_project)
    location = _check_location(ctx, checks)
    locations = followed_locations(ctx, location)
    _check_bucket(ctx, checks, credentials, project, locations)
    _check_staged_prerequisites(ctx, checks, credentials, project)
    check_list_jobs(ctx, checks, credentials, project, locations)
    _check_act_as(ctx, checks, credentials)
    _check_log_writer(ctx, checks, credentials, project)
    check_images(ctx, checks, project)
    return checks


# -- the checks ----------------------------------------------------------------------------


def _check_credentials(ctx: DoctorContext, checks: list[Check]) -> tuple[Any, str | None]:
    from robotoff_batch.gcp_credentials import CredentialsError, load_credentials

    loader = ctx.load_credentials or load_credentials
    try:
        credentials, project = loader(env=ctx.env)
    except CredentialsError as exc:
        checks.append(
            Check(
                "credentials",
                False,
                str(exc),
                "set GOOGLE_CREDENTIALS to the base64 of the orchestrator's key "
                "(base64 -w0 key.json), or run where Application Default Credentials exist",
            )
        )
        return None, None
    except Exception as exc:  # google.auth's DefaultCredentialsError and kin
        checks.append(
            Check(
                "credentials",
                False,
                f"{type(exc).__name__}: {str(exc).splitlines()[0] if str(exc) else ''}",
                "set GOOGLE_CREDENTIALS (base64 key) or GOOGLE_APPLICATION_CREDENTIALS",
            )
        )
        return None, None
    who = getattr(credentials, "service_account_email", None) or type(credentials).__name__
    checks.append(Check("credentials", True, f"loaded ({who})"))
    return credentials, project


def _check_project(ctx: DoctorContext, checks: list[Check], key_project: str | None) -> str:
    project = ctx.env.get(PROJECT_ENV, "").strip()
    if not project:
        checks.append(
            Check(
                "project",
                False,
                f"{PROJECT_ENV} is not set (the key's project is {key_project or 'unknown'})",
                f"export {PROJECT_ENV}=<the jobs' project>: it names the project of the jobs, "
                "the bucket, the jobs' service account and the image",
            )
        )
        return key_project or ""
    checks.append(Check("project", True, project))
    return project


def _check_location(ctx: DoctorContext, checks: list[Check]) -> str:
    from robotoff_batch.config.catalog import load_catalog

    location = ctx.env.get(LOCATION_ENV, "").strip() or "europe-west4"
    if location not in load_catalog().batch_regions:
        checks.append(
            Check(
                "region",
                False,
                f"{LOCATION_ENV}={location} is not a Cloud Batch region",
                "set it to the region of the job configs (e.g. europe-west4)",
            )
        )
        return location
    outside = {t: c.resources.location for t, c in ctx.configs.items()}
    outside = {t: where for t, where in outside.items() if where != location}
    if outside:
        listed = ", ".join(f"{t} ({where})" for t, where in sorted(outside.items()))
        checks.append(
            Check(
                "region",
                False,
                f"the engine runs in {location} but these job configs run elsewhere: {listed}",
                f"set {LOCATION_ENV} to their location, or move their location",
            )
        )
        return location
    elsewhere = [where for where in followed_locations(ctx, location) if where != location]
    fallbacks = f"; fallbacks also in {', '.join(elsewhere)}" if elsewhere else ""
    checks.append(Check("region", True, f"{location} (every job config runs there{fallbacks})"))
    return location


def _check_bucket(
    ctx: DoctorContext, checks: list[Check], credentials: Any, project: str, locations: list[str]
) -> None:
    """The staging bucket: a probe written, read back and removed; then its location."""
    from google.api_core import exceptions as api_exceptions

    from robotoff_batch.staging import StagingError
    from robotoff_batch.staging.gcs import parse_gs_uri

    root = ctx.env.get(STAGING_ENV, "").strip()
    if not root.startswith("gs://"):
        checks.append(
            Check(
                "bucket",
                False,
                f"{STAGING_ENV} is {root or 'not set'}: production stages on gs://",
                f"export {STAGING_ENV}=gs://<bucket>/<prefix> (a bucket in the jobs' region)",
            )
        )
        return
    try:
        bucket_name, prefix = parse_gs_uri(root.rstrip("/"))
    except StagingError as exc:
        checks.append(Check("bucket", False, str(exc), f"fix {STAGING_ENV}"))
        return
    client = ctx.storage_client
    if client is None:
        if credentials is None:
            checks.append(Check("bucket", False, "not checked: no credentials", ""))
            return
        from google.cloud import storage

        client = storage.Client(project=project or None, credentials=credentials)
    name = "/".join(p for p in (prefix.strip("/"), f".doctor-probe-{uuid.uuid4().hex}") if p)
    where = f"gs://{bucket_name}/{name}"
    payload = f"robotoff-batch doctor probe {uuid.uuid4()}".encode()
    blob = client.bucket(bucket_name).blob(name)
    grant = (
        "grant the orchestrator Storage Object Admin on the bucket "
        f"(gcloud storage buckets add-iam-policy-binding gs://{bucket_name} ...)"
    )
    try:
        blob.upload_from_string(payload, if_generation_match=0, checksum="crc32c")
        try:
            read = blob.download_as_bytes()
        finally:
            blob.delete()
    except api_exceptions.NotFound:
        checks.append(
            Check(
                "bucket",
                False,
                f"gs://{bucket_name} does not exist",
                f"gcloud storage buckets create gs://{bucket_name} --location <the jobs' region>",
            )
        )
        return
    except (api_exceptions.Forbidden, api_exceptions.Unauthorized) as exc:
        checks.append(Check("bucket", False, f"{where}: denied ({exc.message})", grant))
        return
    except api_exceptions.GoogleAPICallError as exc:
        checks.append(Check("bucket", False, f"{where}: {exc.code} {exc.message}", grant))
        return
    if read != payload:
        checks.append(Check("bucket", False, f"{where} read back other bytes", ""))
        return
    checks.append(
        Check("bucket", True, f"gs://{bucket_name} writable and readable (probe removed)")
    )
    check_bucket_location(checks, client.bucket(bucket_name), bucket_name, locations)


def _check_staged_prerequisites(
    ctx: DoctorContext, checks: list[Check], credentials: Any, project: str
) -> None:
    """What a job type's tasks read that is staged once, not per job (a GPU job's pinned
    model weights: their STAGED.json marker, written last)."""
    from robotoff_batch.job_types import load_registry
    from robotoff_batch.staging.gcs import parse_gs_uri

    registry = load_registry()
    root = ctx.env.get(STAGING_ENV, "").strip().rstrip("/")
    for job_type, config in sorted(ctx.configs.items()):
        registered = registry.get(job_type)
        if registered is None:
            continue
        for path, fix in registered.job_type.staged_prerequisites(config):
            name = f"staged weights ({job_type})"
            if not path:  # the config itself cannot be used
                checks.append(Check(name, False, fix, f"edit job_configs/{job_type}.yaml"))
                continue
            if not root.startswith("gs://"):
                checks.append(Check(name, False, f"not checked: {STAGING_ENV} is not gs://", ""))
                continue
            bucket_name, prefix = parse_gs_uri(root)
            key = "/".join(p for p in (prefix.strip("/"), path) if p)
            client = ctx.storage_client
            if client is None:
                if credentials is None:
                    checks.append(Check(name, False, "not checked: no credentials", ""))
                    continue
                from google.cloud import storage

                client = storage.Client(project=project or None, credentials=credentials)
            where = f"gs://{bucket_name}/{key}"
            try:
                found = client.bucket(bucket_name).blob(key).exists()
            except Exception as exc:  # denied, unreachable: say it, never crash the report
                checks.append(Check(name, False, f"{where}: {type(exc).__name__}: {exc}", fix))
                continue
            if found:
                checks.append(Check(name, True, f"{where} exists"))
            else:
                checks.append(Check(name, False, f"{where} is missing: not staged", fix))


def _check_act_as(ctx: DoctorContext, checks: list[Check], credentials: Any) -> None:
    iam = _iam_client(ctx, credentials)
    for job_type, config in sorted(ctx.configs.items()):
        name = f"act as ({job_type})"
        account = config.resources.service_account_email
        if account is None:
            checks.append(
                Check(
                    name,
                    False,
                    "the job config sets no service_account_email: its VMs would run as the "
                    "Compute Engine default account, which docs/production.md grants nothing",
                    f"set resources.service_account_email in job_configs/{job_type}.yaml to the "
                    "jobs' account (robotoff-batch-jobs@PROJECT.iam.gserviceaccount.com)",
                )
            )
            continue
        if iam is None:
            checks.append(Check(name, False, "not checked: no credentials", ""))
            continue
        grant = (
            f"gcloud iam service-accounts add-iam-policy-binding {account} --member "
            "serviceAccount:<orchestrator> --role roles/iam.serviceAccountUser"
        )
        try:
            granted = iam.test_permissions(account, [ACT_AS])
        except IamError as exc:
            if exc.status == 404:
                checks.append(
                    Check(
                        name,
                        False,
                        f"{account} does not exist",
                        f"gcloud iam service-accounts create {account.split('@')[0]}",
                    )
                )
            else:
                checks.append(Check(name, False, f"{account}: HTTP {exc.status} {exc}", grant))
            continue
        except Exception as exc:  # a network error: say it, never crash the report
            checks.append(Check(name, False, f"{account}: {type(exc).__name__}: {exc}", ""))
            continue
        if ACT_AS not in granted:
            checks.append(
                Check(
                    name,
                    False,
                    f"the launcher may not act as {account}: CreateJob would be refused",
                    grant,
                )
            )
            continue
        checks.append(Check(name, True, f"the launcher may act as {account}"))


# Roles that hold logging.logEntries.create on a project (what a task needs for its log lines
# to reach Cloud Logging): the one docs/production.md grants, and the broad ones.
LOG_WRITER_ROLES = ("roles/logging.logWriter", "roles/logging.admin", "roles/editor", "roles/owner")


def _iam_client(ctx: DoctorContext, credentials: Any) -> Any:
    if ctx.iam is not None or credentials is None:
        return ctx.iam
    from google.auth.transport.requests import AuthorizedSession

    return IamClient(
        session=AuthorizedSession(credentials),
        endpoint=ctx.env.get(IAM_ENDPOINT_ENV) or IAM_ENDPOINT,
        resource_manager_endpoint=ctx.env.get(RESOURCE_MANAGER_ENDPOINT_ENV)
        or RESOURCE_MANAGER_ENDPOINT,
    )


def _check_log_writer(
    ctx: DoctorContext, checks: list[Check], credentials: Any, project: str | None
) -> None:
    """Each jobs' account holds a role that writes logs (roles/logging.logWriter) in the
    project's IAM policy: without it a failed task's lines never reach Cloud Logging, and the
    check, the partition and ``status JOB`` have no log tail. What it cannot see: grants on a
    folder or the organization, through a group, or by a custom role (then it says so)."""
    accounts = {
        c.resources.service_account_email
        for c in ctx.configs.values()
        if c.resources.service_account_email
    }
    if not accounts:
        return  # the act-as check already says the config sets no account
    name = "logs writer (jobs' account)"
    iam = _iam_client(ctx, credentials)
    if iam is None or not project:
        checks.append(Check(name, False, "not checked: no credentials or no project", ""))
        return
    grant = (
        f"gcloud projects add-iam-policy-binding {project} --member serviceAccount:{{account}} "
        "--role roles/logging.logWriter"
    )
    try:
        bindings = iam.project_bindings(project)
    except IamError as exc:
        checks.append(
            Check(
                name,
                False,
                f"not checked: the project's IAM policy is unreadable (HTTP {exc.status} "
                f"{exc}); the orchestrator needs resourcemanager.projects.getIamPolicy "
                "(roles/browser) for this check",
                f"gcloud projects get-iam-policy {project} --flatten=bindings "
                "--filter=bindings.role:roles/logging.logWriter",
            )
        )
        return
    except Exception as exc:  # a network error: say it, never crash the report
        checks.append(Check(name, False, f"not checked: {type(exc).__name__}: {exc}", ""))
        return
    for account in sorted(accounts):
        member = f"serviceAccount:{account}"
        roles = sorted(
            b.get("role", "")
            for b in bindings
            if b.get("role") in LOG_WRITER_ROLES and member in b.get("members", [])
        )
        if roles:
            checks.append(
                Check(name, True, f"{account} writes logs in {project} ({', '.join(roles)})")
            )
            continue
        checks.append(
            Check(
                name,
                False,
                f"{account} holds no logs writer role in {project}'s IAM policy: its tasks' "
                "lines would not reach Cloud Logging (no log tail for a failed job). Granted "
                "on a folder, the organization, a group or by a custom role? Then it is fine",
                grant.format(account=account),
            )
        )
