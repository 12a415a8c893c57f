"""The doctor's checks made once per location: every region a job may run in, the engine's
(``ROBOTOFF_BATCH_GCP_LOCATION``) and each job config's, its capacity fallbacks' included
(``JobConfig.locations``, docs/capacity-fallback.md), each named in its check."""

from __future__ import annotations

import re
from typing import Any

from robotoff_batch.config.models import IMAGE_URI_PATTERN
from robotoff_batch.config.resources_models import BatchResources
from robotoff_batch.config.rules import registry_serves
from robotoff_batch.doctor.context import Check, DoctorContext
from robotoff_batch.names import APP_LABEL

_AR_IMAGE = re.compile(
    r"^(?P<where>[a-z0-9-]+)-docker\.pkg\.dev/(?P<project>[a-z0-9-]+)/(?P<repo>[a-z0-9._-]+)/"
)


def followed_locations(ctx: DoctorContext, engine_location: str) -> list[str]:
    """The engine's location, then every location of every job config (main first), once."""
    found = [engine_location]
    for _, config in sorted(ctx.configs.items()):
        found += config.locations
    return list(dict.fromkeys(found))


def check_list_jobs(
    ctx: DoctorContext, checks: list[Check], credentials: Any, project: str, locations: list[str]
) -> None:
    """``ListJobs`` in each location: the follower lists every one on each tick."""
    for location in locations:
        checks.append(_list_jobs(ctx, credentials, project, location))


def _list_jobs(ctx: DoctorContext, credentials: Any, project: str, location: str) -> Check:
    from robotoff_batch.batch.cloud_batch import CloudBatchEngine
    from robotoff_batch.batch.engine import BatchEngineError

    name = f"ListJobs ({location})"
    if not project:
        return Check(name, False, "not checked: no project", "")
    if ctx.batch_client is not None:
        engine = CloudBatchEngine(project=project, location=location, client=ctx.batch_client)
    elif credentials is not None:
        engine = CloudBatchEngine.from_settings(
            project=project, location=location, credentials=credentials
        )
    else:
        return Check(name, False, "not checked: no credentials", "")
    try:
        jobs = engine.list_jobs(labels=dict([APP_LABEL]))
    except BatchEngineError as exc:
        denied = "403" in str(exc) or "PERMISSION" in str(exc).upper()
        fix = (
            "grant the orchestrator Batch Job Editor (roles/batch.jobsEditor) on the project"
            if denied
            else f"enable batch.googleapis.com in the project and check the region {location}"
        )
        return Check(name, False, str(exc), fix)
    return Check(name, True, f"permitted in {project}/{location} ({len(jobs)} jobs listed)")


def check_images(ctx: DoctorContext, checks: list[Check], project: str) -> None:
    """Each job config's image in each location it runs in (its fallbacks' own image, where
    one sets ``container_image_uri``)."""
    for job_type, config in sorted(ctx.configs.items()):
        seen: dict[str, str] = {}  # check name -> image
        for resources in [config.resources, *config.alternatives()]:
            name = f"image ({job_type}, {resources.location})"
            image = resources.container_image_uri
            if seen.get(name) == image:
                continue
            if name in seen:
                name = f"{name[:-1]}, {image.rsplit('/', 1)[-1]})"
            seen[name] = image
            checks.append(_image(job_type, resources, name, project))


def _image(job_type: str, resources: BatchResources, name: str, project: str) -> Check:
    image, location = resources.container_image_uri, resources.location
    problems = []
    if not re.match(IMAGE_URI_PATTERN, image):
        problems.append("is not a well-formed image reference")
    last = image.rsplit("/", 1)[-1]
    if "@sha256:" not in last and (":" not in last or last.endswith(":latest")):
        problems.append("is not pinned (give a tag other than latest, or a digest)")
    match = _AR_IMAGE.match(image)
    if match is None:
        problems.append(
            f"is not in Artifact Registry ({location}-docker.pkg.dev/...), where the jobs' "
            "account reads it"
        )
    else:
        if not registry_serves(match["where"], location):
            problems.append(f"is in {match['where']}, the jobs run in {location}")
        if project and match["project"] != project:
            problems.append(f"belongs to project {match['project']}, not {project}")
    if problems:
        return Check(
            name,
            False,
            f"{image} " + "; ".join(problems),
            f"make push-image JOB={job_type} to "
            f"{location}-docker.pkg.dev/{project or '<project>'}/robotoff-batch/"
            f"{job_type}:<tag>, and set container_image_uri to it",
        )
    return Check(name, True, f"{image} (this project's, readable in {location})")


# Predefined dual-regions (cloud.google.com/storage/docs/locations#predefined); a multi-region
# (EU, US, ASIA) serves every region of its continent; a configurable dual-region lists its
# regions in the bucket's dataLocations.
_DUAL_REGIONS = {
    "EUR4": ("europe-north1", "europe-west4"),
    "NAM4": ("us-central1", "us-east1"),
    "ASIA1": ("asia-northeast1", "asia-northeast2"),
}
_MULTI_REGIONS = {"EU": "europe-", "US": "us-", "ASIA": "asia-"}


def regions_served(location: str, data_locations: list[str] | None = None) -> str | tuple[str, ...]:
    """What a bucket in ``location`` serves without a cross-region read: a region prefix
    (multi-region, e.g. ``"europe-"``) or the regions themselves."""
    upper = location.upper()
    if data_locations:
        return tuple(d.lower() for d in data_locations)
    if upper in _MULTI_REGIONS:
        return _MULTI_REGIONS[upper]
    return _DUAL_REGIONS.get(upper, (location.lower(),))


def check_bucket_location(
    checks: list[Check], bucket: Any, bucket_name: str, locations: list[str]
) -> None:
    """The staging bucket should serve every region a job may run in (fallbacks included):
    a job elsewhere reads its input across regions (egress, slower)."""
    from google.api_core import exceptions as api_exceptions

    name = "bucket location"
    try:
        bucket.reload()
    except (api_exceptions.Forbidden, api_exceptions.Unauthorized) as exc:
        detail = f"not checked: gs://{bucket_name}'s metadata is not readable ({exc.message})"
        fix = "grant storage.buckets.get on the bucket, or check its location by hand"
        checks.append(Check(name, False, detail, fix))
        return
    served = regions_served(bucket.location or "", list(bucket.data_locations or []))
    outside = [
        where
        for where in locations
        if not (where.startswith(served) if isinstance(served, str) else where in served)
    ]
    where_it_is = f"gs://{bucket_name} is in {bucket.location}"
    if outside:
        detail = f"{where_it_is}: jobs in {', '.join(outside)} read it across regions"
        fix = (
            "stage on a multi-region bucket covering every job location (gcloud storage "
            "buckets create --location EU), or drop the alternatives elsewhere"
        )
        checks.append(Check(name, False, detail, fix))
        return
    checks.append(Check(name, True, f"{where_it_is}: serves {', '.join(locations)}"))
