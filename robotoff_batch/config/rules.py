"""The job configuration's patterns, bounds and shared helpers (durations, field errors)."""

from __future__ import annotations

import enum
import re
from typing import Annotated

from pydantic import Field
from pydantic_core import PydanticCustomError

JOB_TYPE_PATTERN = r"^[a-z][a-z0-9-]{0,38}[a-z0-9]$"
ENV_NAME_PATTERN = r"^[A-Z_][A-Z0-9_]{0,127}$"
SECRET_REF_PATTERN = r"^projects/[a-z0-9-]+/secrets/[A-Za-z0-9_-]+/versions/([0-9]+|latest)$"
# GCP label keys/values: lowercase letters, digits, '_' and '-', at most 63 characters.
LABEL_KEY_PATTERN = r"^[a-z][a-z0-9_-]{0,62}$"
LABEL_VALUE_PATTERN = r"^[a-z0-9_-]{0,63}$"
IMAGE_URI_PATTERN = (
    r"^[a-z0-9.-]+(:[0-9]+)?(/[a-z0-9._-]+)+(:[A-Za-z0-9._-]{1,128}|@sha256:[a-f0-9]{64})?$"
)
DURATION_PATTERN = re.compile(r"^(?:(\d+)d)?(?:(\d+)h)?(?:(\d+)m)?(?:(\d+)s)?$")
MIN_RUN_DURATION_S = 60
MAX_RUN_DURATION_S = 7 * 24 * 3600
# Plain environment variables are visible in the Cloud console and in job descriptions.
SECRET_LOOKING_NAME = re.compile(r"(KEY|SECRET|TOKEN|PASSWORD|CREDENTIALS)", re.IGNORECASE)
# Batch's own exit code for a preempted Spot VM.
SPOT_PREEMPTION_EXIT_CODE = 50001
# Batch's own exit codes for a VM lost under the task (preempted, stopped reporting, rebooted,
# recreated): never the container's fault, always worth a retry (dsub, Nextflow and Cromwell
# retry these). They cannot be listed in ``fail_fast_exit_codes``.
VM_LOST_EXIT_CODES = (50001, 50002, 50003, 50006)
# The container's own exit code for a configuration or input error (see the containers'
# entrypoints): the same input fails the same way, a retry only costs money.
CONTAINER_INPUT_ERROR_EXIT_CODE = 2
# Label keys Google reserves (``goog-`` and ``google-`` are set by Google's own services).
RESERVED_LABEL_PREFIXES = ("goog",)
BATCH_BOOT_IMAGES = ("batch-debian", "batch-cos", "batch-hpc-rocky")
BOOT_IMAGE_PATTERN = (
    r"^(batch-debian|batch-cos|batch-hpc-rocky|"
    r"projects/[a-z][a-z0-9-]{4,28}[a-z0-9]/global/images/(family/)?[a-z][a-z0-9-]{0,62})$"
)
NETWORK_PATTERN = r"^(projects/[a-z][a-z0-9-]{4,28}[a-z0-9]/)?global/networks/[a-z][a-z0-9-]{0,62}$"
SUBNETWORK_PATTERN = (
    r"^(projects/[a-z][a-z0-9-]{4,28}[a-z0-9]/)?regions/(?P<region>[a-z]+-[a-z]+[0-9]{1,2})"
    r"/subnetworks/[a-z][a-z0-9-]{0,62}$"
)
# Artifact Registry hosts: <region>-docker.pkg.dev or a multi-region (europe-, us-, asia-).
_ARTIFACT_REGISTRY_HOST = re.compile(r"^(?P<where>[a-z0-9-]+)-docker\.pkg\.dev$")
_MULTI_REGIONS = {"europe": "europe-", "us": "us-", "asia": "asia-"}


def registry_serves(where: str, location: str) -> bool:
    """Whether Artifact Registry ``where`` (a region or a multi-region) is the jobs' region
    ``location`` or a multi-region covering it: their VMs pull from it without egress."""
    prefix = _MULTI_REGIONS.get(where)
    return where == location or bool(prefix and location.startswith(prefix))


class ProvisioningModel(enum.StrEnum):
    STANDARD = "STANDARD"
    SPOT = "SPOT"


def _field_error(field: str, message: str) -> PydanticCustomError:
    """A cross-field error that still names the field (and so its YAML line)."""
    return PydanticCustomError("config_rule", "{message}", {"message": message, "field": field})


def parse_duration_s(value: str) -> int:
    """``"24h"``, ``"1h30m"``, ``"86400s"`` -> seconds. Raises ValueError on anything else."""
    match = DURATION_PATTERN.match(value)
    if not value or match is None:
        raise ValueError(
            f"{value!r} is not a duration: write it like '86400s', '24h', '90m' or '1h30m'"
        )
    days, hours, minutes, seconds = (int(g) if g else 0 for g in match.groups())
    return ((days * 24 + hours) * 60 + minutes) * 60 + seconds


StrictCount = Annotated[int, Field(strict=True)]
