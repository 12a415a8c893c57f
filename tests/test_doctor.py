"""``robotoff-batch doctor`` against the GCS emulator, the fake Batch service and a fake IAM
endpoint: every check passes on a good deployment, and each failure is reported with its fix."""

from __future__ import annotations

import json
from collections.abc import Iterator
from typing import Any

import grpc
import pytest
import requests
import typer

from robotoff_batch.config.models import JobConfig
from robotoff_batch.doctor.checks import run_checks
from robotoff_batch.doctor.context import DoctorContext, IamClient, load_configs
from robotoff_batch.doctor.locations import regions_served
from tests.fakes.fake_batch_service import FakeBatchService, running_fake_batch_service
from tests.fakes.fake_iam import FakeIam, running_fake_iam
from tests.fakes.gcs_emulator import RunningEmulator
from tests.fakes.settings import STAGING_BUCKET
from tests.test_cloud_batch import _b64, _service_account_info

pytest_plugins = ["tests.gcp_fixtures"]  # also registered by tests/conftest.py

JOB_SA = "robotoff-batch-jobs@robotoff.iam.gserviceaccount.com"


@pytest.fixture
def batch_service() -> Iterator[FakeBatchService]:
    with running_fake_batch_service(backend=None) as service:
        yield service


@pytest.fixture
def iam() -> Iterator[FakeIam]:
    with running_fake_iam() as fake:
        fake.accounts[JOB_SA] = {"iam.serviceAccounts.actAs"}
        fake.policies["robotoff"] = {
            "roles/logging.logWriter": {f"serviceAccount:{JOB_SA}"},
            "roles/batch.agentReporter": {f"serviceAccount:{JOB_SA}"},
        }
        yield fake


@pytest.fixture
def env(gcs_emulator: RunningEmulator) -> dict[str, str]:
    return {
        "GOOGLE_CREDENTIALS": _b64(json.dumps(_service_account_info()).encode()),
        "ROBOTOFF_BATCH_GCP_PROJECT": "robotoff",
        "ROBOTOFF_BATCH_GCP_LOCATION": "europe-west4",
        "ROBOTOFF_BATCH_STAGING_URI": f"gs://{STAGING_BUCKET}/batch",
        "STORAGE_EMULATOR_HOST": gcs_emulator.url,
    }


def context(
    env: dict[str, str],
    gcs_client: Any,
    batch_service: FakeBatchService,
    iam: FakeIam,
    configs: dict[str, JobConfig] | None = None,
) -> DoctorContext:
    return DoctorContext(
        env=env,
        configs=configs if configs is not None else load_configs(),
        storage_client=gcs_client,
        batch_client=batch_service.client(),
        iam=IamClient(
            session=requests.Session(), endpoint=iam.url, resource_manager_endpoint=iam.url
        ),
    )


def by_name(checks: list[Any]) -> dict[str, Any]:
    return {c.name: c for c in checks}


def with_resources(**changes: Any) -> dict[str, JobConfig]:
    data = load_configs()["ingredients-spellcheck"].model_dump()
    data["resources"].update(changes)
    return {"ingredients-spellcheck": JobConfig.model_validate(data)}


REVISION = "0123456789abcdef0123456789abcdef01234567"
MARKER = f"batch/models/openfoodfacts/spellcheck-mistral-7b/{REVISION}/STAGED.json"


def pinned(revision: str = REVISION) -> dict[str, JobConfig]:
    data = load_configs()["ingredients-spellcheck"].model_dump()
    data["resources"]["environment"]["SPELLCHECK_MODEL_REVISION"] = revision
    return {"ingredients-spellcheck": JobConfig.model_validate(data)}


def test_a_good_deployment_passes_every_check_and_leaves_nothing(
    env: dict[str, str], gcs_client: Any, batch_service: FakeBatchService, iam: FakeIam
) -> None:
    gcs_client.bucket(STAGING_BUCKET).blob(MARKER).upload_from_string(b"{}")
    checks = run_checks(context(env, gcs_client, batch_service, iam, configs=pinned()))
    assert [c.name for c in checks] == [
        "credentials",
        "project",
        "region",
        "bucket",
        "bucket location",
        "staged weights (ingredients-spellcheck)",
        "ListJobs (europe-west4)",
        "act as (ingredients-spellcheck)",
        "logs writer (jobs' account)",
        "image (ingredients-spellcheck, europe-west4)",
    ]
    assert all(c.ok for c in checks), "\n".join(c.render() for c in checks)
    assert "robotoff-batch@off-robotoff.iam.gserviceaccount.com" in checks[0].detail
    # the probe is gone; only the staged weights' marker remains
    assert [b.name for b in gcs_client.list_blobs(STAGING_BUCKET)] == [MARKER]
    assert batch_service.calls["ListJobs"] == 1 and batch_service.calls["CreateJob"] == 0
    assert iam.calls == [(JOB_SA, ["iam.serviceAccounts.actAs"])]


def test_bad_credentials_project_and_region_are_reported_with_the_fix(
    env: dict[str, str], gcs_client: Any, batch_service: FakeBatchService, iam: FakeIam
) -> None:
    env = {
        **env,
        "GOOGLE_CREDENTIALS": "%%%not-base64%%%",
        "ROBOTOFF_BATCH_GCP_LOCATION": "us-central1",
    }
    del env["ROBOTOFF_BATCH_GCP_PROJECT"]
    checks = by_name(run_checks(context(env, gcs_client, batch_service, iam)))
    assert not checks["credentials"].ok and "GOOGLE_CREDENTIALS" in checks["credentials"].fix
    assert "not-base64" not in checks["credentials"].render()  # never echoes the secret
    assert not checks["project"].ok and "ROBOTOFF_BATCH_GCP_PROJECT" in checks["project"].fix
    assert not checks["region"].ok and "ingredients-spellcheck (europe-west4)" in (
        checks["region"].detail
    )
    # the engine's region and the config's are both listed; the image is checked where the
    # config runs
    assert {"ListJobs (us-central1)", "ListJobs (europe-west4)"} <= set(checks)
    assert checks["image (ingredients-spellcheck, europe-west4)"].ok


def test_staged_weights_of_the_pinned_revision_are_checked(
    env: dict[str, str], gcs_client: Any, batch_service: FakeBatchService, iam: FakeIam
) -> None:
    def weights_check(configs: dict[str, JobConfig]) -> Any:
        checks = run_checks(context(env, gcs_client, batch_service, iam, configs=configs))
        return by_name(checks)["staged weights (ingredients-spellcheck)"]

    unpinned = weights_check(pinned(""))  # a config that pins none
    assert not unpinned.ok and "SPELLCHECK_MODEL_REVISION is not set" in unpinned.detail
    # the exact command that fixes it
    assert "`robotoff-batch stage-weights ingredients-spellcheck --revision main`" in (
        unpinned.detail
    )
    branch = weights_check(pinned("main"))  # a branch can move: refused
    assert not branch.ok and "pin openfoodfacts/spellcheck-mistral-7b to a commit" in branch.detail
    missing = weights_check(pinned())
    assert not missing.ok and f"gs://{STAGING_BUCKET}/{MARKER} is missing" in missing.detail
    assert missing.fix == "robotoff-batch stage-weights ingredients-spellcheck"
    # another revision staged is not this one
    other = MARKER.replace(REVISION, "f" * 40)
    gcs_client.bucket(STAGING_BUCKET).blob(other).upload_from_string(b"{}")
    assert not weights_check(pinned()).ok
    gcs_client.bucket(STAGING_BUCKET).blob(MARKER).upload_from_string(b"{}")
    assert weights_check(pinned()).ok
    # a CPU-engine config needs no weights: no check
    data = pinned("")["ingredients-spellcheck"].model_dump()
    data["resources"]["environment"]["SPELLCHECK_ENGINE"] = "lexicon-cpu"
    cpu = {"ingredients-spellcheck": JobConfig.model_validate(data)}
    checks = run_checks(context(env, gcs_client, batch_service, iam, configs=cpu))
    assert "staged weights (ingredients-spellcheck)" not in by_name(checks)


def test_missing_and_denied_bucket(
    env: dict[str, str],
    gcs_client: Any,
    gcs_emulator: RunningEmulator,
    batch_service: FakeBatchService,
    iam: FakeIam,
) -> None:
    missing = {**env, "ROBOTOFF_BATCH_STAGING_URI": "gs://no-such-bucket/x"}
    bucket = by_name(run_checks(context(missing, gcs_client, batch_service, iam)))["bucket"]
    assert not bucket.ok and "does not exist" in bucket.detail and "buckets create" in bucket.fix

    gcs_emulator.faults.fail_next(1, status=403, method="POST")
    bucket = by_name(run_checks(context(env, gcs_client, batch_service, iam)))["bucket"]
    assert not bucket.ok and "denied" in bucket.detail and "Storage Object Admin" in bucket.fix

    local = {**env, "ROBOTOFF_BATCH_STAGING_URI": "file:///tmp/x"}
    bucket = by_name(run_checks(context(local, gcs_client, batch_service, iam)))["bucket"]
    assert not bucket.ok and "gs://" in bucket.fix


def test_list_jobs_denied(
    env: dict[str, str], gcs_client: Any, batch_service: FakeBatchService, iam: FakeIam
) -> None:
    batch_service.fail_next("ListJobs", grpc.StatusCode.PERMISSION_DENIED)
    checks = by_name(run_checks(context(env, gcs_client, batch_service, iam)))
    check = checks["ListJobs (europe-west4)"]
    assert not check.ok and "roles/batch.jobsEditor" in check.fix


@pytest.mark.parametrize(
    ("accounts", "deny", "words", "fix"),
    [
        ({JOB_SA: set()}, False, "may not act as", "roles/iam.serviceAccountUser"),
        ({}, False, "does not exist", "service-accounts create robotoff-batch-jobs"),
        ({JOB_SA: {"iam.serviceAccounts.actAs"}}, True, "HTTP 403", "serviceAccountUser"),
    ],
    ids=["not-granted", "unknown-account", "denied"],
)
def test_acting_as_the_jobs_service_account(
    env: dict[str, str],
    gcs_client: Any,
    batch_service: FakeBatchService,
    iam: FakeIam,
    accounts: dict[str, set[str]],
    deny: bool,
    words: str,
    fix: str,
) -> None:
    iam.accounts = accounts
    iam.deny_all = deny
    check = by_name(run_checks(context(env, gcs_client, batch_service, iam)))[
        "act as (ingredients-spellcheck)"
    ]
    assert not check.ok and words in check.detail and fix in check.fix


def test_a_config_without_service_account_fails_the_act_as_check(
    env: dict[str, str], gcs_client: Any, batch_service: FakeBatchService, iam: FakeIam
) -> None:
    configs = with_resources(service_account_email=None)
    check = by_name(run_checks(context(env, gcs_client, batch_service, iam, configs)))[
        "act as (ingredients-spellcheck)"
    ]
    assert not check.ok and "Compute Engine default account" in check.detail
    assert iam.calls == []


@pytest.mark.parametrize(
    ("image", "words"),
    [
        ("docker.io/library/spellcheck:1", "not in Artifact Registry"),
        ("europe-west4-docker.pkg.dev/robotoff/robotoff-batch/ingredients-spellcheck", "pinned"),
        ("europe-west4-docker.pkg.dev/robotoff/robotoff-batch/x:latest", "pinned"),
        ("europe-west4-docker.pkg.dev/other-project/robotoff-batch/x:1", "not robotoff"),
    ],
)
def test_image_references(
    env: dict[str, str],
    gcs_client: Any,
    batch_service: FakeBatchService,
    iam: FakeIam,
    image: str,
    words: str,
) -> None:
    configs = with_resources(container_image_uri=image)
    check = by_name(run_checks(context(env, gcs_client, batch_service, iam, configs)))[
        "image (ingredients-spellcheck, europe-west4)"
    ]
    assert not check.ok and words in check.detail, check.render()
    assert "make push-image JOB=ingredients-spellcheck" in check.fix


def with_fallback(image: str | None = None) -> dict[str, JobConfig]:
    """The spellcheck config on a multi-region image, with one fallback in europe-west1 (on
    its own image when ``image`` is given)."""
    data = load_configs()["ingredients-spellcheck"].model_dump()
    data["resources"]["container_image_uri"] = MULTI_REGION_IMAGE
    fallback = {
        "location": "europe-west1",
        "subnetwork": "projects/robotoff/regions/europe-west1/subnetworks/default",
    }
    if image:
        fallback["container_image_uri"] = image
    data["fallbacks"] = [fallback]
    return {"ingredients-spellcheck": JobConfig.model_validate(data)}


MULTI_REGION_IMAGE = "europe-docker.pkg.dev/robotoff/robotoff-batch/ingredients-spellcheck:0.1.0"


def test_every_location_of_every_config_is_checked(
    env: dict[str, str], gcs_client: Any, batch_service: FakeBatchService, iam: FakeIam
) -> None:
    """A capacity fallback's region is listed and its image checked there, each named."""
    checks = run_checks(context(env, gcs_client, batch_service, iam, with_fallback()))
    assert [c.name for c in checks if c.name.startswith(("ListJobs", "image"))] == [
        "ListJobs (europe-west4)",
        "ListJobs (europe-west1)",
        "image (ingredients-spellcheck, europe-west4)",
        "image (ingredients-spellcheck, europe-west1)",
    ]
    others = [c for c in checks if not c.name.startswith("staged weights")]  # checked above
    assert all(c.ok for c in others), "\n".join(c.render() for c in checks)
    assert "fallbacks also in europe-west1" in by_name(checks)["region"].detail
    assert batch_service.calls["ListJobs"] == 2

    # ListJobs denied in one region: that region's check fails, the other's passes
    batch_service.fail_next("ListJobs", grpc.StatusCode.PERMISSION_DENIED)
    listed = by_name(run_checks(context(env, gcs_client, batch_service, iam, with_fallback())))
    assert not listed["ListJobs (europe-west4)"].ok and listed["ListJobs (europe-west1)"].ok

    # a fallback on its own image: that image is checked in the fallback's region
    other = "europe-west1-docker.pkg.dev/other-project/robotoff-batch/ingredients-spellcheck:1"
    configs = with_fallback(image=other)
    images = by_name(run_checks(context(env, gcs_client, batch_service, iam, configs)))
    assert images["image (ingredients-spellcheck, europe-west4)"].ok
    fallback = images["image (ingredients-spellcheck, europe-west1)"]
    assert not fallback.ok and other in fallback.detail and "not robotoff" in fallback.detail


def test_the_staging_bucket_must_serve_every_job_location(
    env: dict[str, str],
    gcs_emulator: RunningEmulator,
    gcs_client: Any,
    batch_service: FakeBatchService,
    iam: FakeIam,
) -> None:
    """A regional bucket is read across regions by a fallback elsewhere; a multi-region one
    serves both (the emulator's buckets carry the location they were created with)."""
    gcs_emulator.create_bucket("regional", location="europe-west4")
    regional = {**env, "ROBOTOFF_BATCH_STAGING_URI": "gs://regional/batch"}
    alone = by_name(run_checks(context(regional, gcs_client, batch_service, iam)))
    assert alone["bucket location"].ok, alone["bucket location"].render()
    assert "EUROPE-WEST4" in alone["bucket location"].detail
    with_elsewhere = run_checks(context(regional, gcs_client, batch_service, iam, with_fallback()))
    location = by_name(with_elsewhere)["bucket location"]
    assert not location.ok and "jobs in europe-west1 read it across regions" in location.detail
    assert "--location EU" in location.fix
    multi = by_name(run_checks(context(env, gcs_client, batch_service, iam, with_fallback())))
    assert (
        multi["bucket location"].ok
        and "europe-west4, europe-west1" in multi["bucket location"].detail
    )


@pytest.mark.parametrize(
    ("location", "data_locations", "served"),
    [
        ("EU", None, "europe-"),
        ("EUR4", None, ("europe-north1", "europe-west4")),
        ("EU", ["EUROPE-WEST1", "EUROPE-WEST4"], ("europe-west1", "europe-west4")),
        ("EUROPE-WEST4", None, ("europe-west4",)),
    ],
)
def test_regions_a_bucket_location_serves(
    location: str, data_locations: list[str] | None, served: Any
) -> None:
    assert regions_served(location, data_locations) == served


def test_cli_doctor_report_against_the_emulators(
    env: dict[str, str],
    batch_service: FakeBatchService,
    iam: FakeIam,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    """The command's report on the production context, its Batch client the fake's (the
    production code has no emulator switch for Batch)."""
    from robotoff_batch.cli.doctor import report
    from robotoff_batch.doctor.context import context_from_env

    assert batch_service.address
    full = {
        **env,
        "ROBOTOFF_BATCH_IAM_ENDPOINT": iam.url,
        "ROBOTOFF_BATCH_RESOURCE_MANAGER_ENDPOINT": iam.url,
    }
    for key, value in full.items():
        monkeypatch.setenv(key, value)

    def context() -> DoctorContext:
        ctx = context_from_env(full)
        ctx.batch_client = batch_service.client()
        return ctx

    # The shipped config pins no model revision yet: the one check an operator must fix.
    with pytest.raises(typer.Exit):
        report(context())
    output = capsys.readouterr().out
    assert output.count("ok    ") == 9 and "9 ok, 1 failed" in output
    assert "ok      logs writer (jobs' account): " + JOB_SA in output
    assert "FAILED  staged weights (ingredients-spellcheck)" in output

    iam.accounts = {}
    with pytest.raises(typer.Exit):
        report(context())
    output = capsys.readouterr().out
    assert "FAILED  act as (ingredients-spellcheck)" in output
    assert "fix: gcloud iam service-accounts create" in output


def test_a_jobs_account_that_cannot_write_logs_is_reported(
    env: dict[str, str], gcs_client: Any, batch_service: FakeBatchService, iam: FakeIam
) -> None:
    """Without roles/logging.logWriter a failed task's lines never reach Cloud Logging: the
    doctor says so with the grant; an unreadable policy says it was not checked, and how."""
    good = by_name(run_checks(context(env, gcs_client, batch_service, iam)))
    assert good["logs writer (jobs' account)"].ok
    assert "roles/logging.logWriter" in good["logs writer (jobs' account)"].detail
    assert iam.policy_calls == [("robotoff", {"options": {"requestedPolicyVersion": 3}})]
    iam.policies["robotoff"]["roles/logging.logWriter"] = {"serviceAccount:someone-else@x.com"}
    checks = by_name(run_checks(context(env, gcs_client, batch_service, iam)))
    check = checks["logs writer (jobs' account)"]
    assert not check.ok and f"{JOB_SA} holds no logs writer role in robotoff" in check.detail
    assert check.fix == (
        f"gcloud projects add-iam-policy-binding robotoff --member serviceAccount:{JOB_SA} "
        "--role roles/logging.logWriter"
    )
    iam.policies["robotoff"]["roles/editor"] = {f"serviceAccount:{JOB_SA}"}
    assert by_name(run_checks(context(env, gcs_client, batch_service, iam)))[
        "logs writer (jobs' account)"
    ].ok
    iam.policy_denied = True
    denied = by_name(run_checks(context(env, gcs_client, batch_service, iam)))
    check = denied["logs writer (jobs' account)"]
    assert not check.ok and check.detail.startswith("not checked: the project's IAM policy")
    assert "HTTP 403" in check.detail and "gcloud projects get-iam-policy robotoff" in check.fix
