"""The job-type configuration: one YAML file per job type, validated by Pydantic.

Robotoff's model (robotoff/batch/launch.py) typed counts as strings and let two fields fall on
the floor when building the request. Here counts are strict ints, every field has bounds and a
description, cross-field rules (GPU fits the machine family and the region, parallelism within
task count, resources within the machine) are checked, and the worst-case cost must stay under
the file's own ceiling.
"""

from __future__ import annotations

import difflib
import enum
import re
from dataclasses import dataclass
from typing import Annotated

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator
from pydantic_core import PydanticCustomError

from robotoff_batch.config.catalog import load_catalog, machine_family

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


class BatchResources(BaseModel):
    """What Cloud Batch runs: every field here reaches the CreateJobRequest."""

    model_config = ConfigDict(extra="forbid", frozen=True, allow_inf_nan=False)

    location: str = Field(
        description="Cloud Batch region the job runs in (e.g. europe-west4).",
        pattern=r"^[a-z]+-[a-z]+[0-9]{1,2}$",
        max_length=30,
    )
    machine_type: str = Field(
        description="Compute Engine machine type of each task's VM (e.g. g2-standard-8). "
        "Must be listed in robotoff_batch/config/data/prices.yaml so that its cost is known.",
        pattern=r"^[a-z][a-z0-9]*-[a-z0-9-]+$",
        max_length=40,
    )
    accelerators_type: str | None = Field(
        default=None,
        description="GPU type attached to each VM (e.g. nvidia-l4); must fit the machine "
        "family and be offered in the location. Null for a CPU job.",
        pattern=r"^nvidia-[a-z0-9-]+$",
        max_length=40,
    )
    accelerators_count: StrictCount = Field(
        default=0, ge=0, le=8, description="Number of GPUs per VM (0 for a CPU job)."
    )
    install_gpu_drivers: bool = Field(
        default=False,
        strict=True,
        description="Let Batch install the NVIDIA driver on the VM; required with GPUs.",
    )
    provisioning_model: ProvisioningModel = Field(
        default=ProvisioningModel.STANDARD,
        description="STANDARD (on-demand) or SPOT (cheaper, may be preempted; preempted "
        "tasks are retried by a lifecycle policy on exit code 50001).",
    )
    cpu_milli: StrictCount = Field(
        ge=250, le=416_000, description="CPU per task in thousandths of a vCPU (1000 = 1 vCPU)."
    )
    memory_mib: StrictCount = Field(ge=256, le=2_000_000, description="Memory per task, MiB.")
    boot_disk_gb: StrictCount | None = Field(
        default=None,
        ge=30,
        le=1000,
        description="Size of each VM's boot disk in GB, set exactly on the instance policy "
        "(policy.boot_disk), where the container image is pulled: the vLLM image is ~24 GB, "
        "give it ~100. Null lets Batch size it (image + task needs).",
    )
    boot_image: str = Field(
        default="batch-debian",
        description="VM image the boot disk is created from, pinned rather than left to Batch's "
        "default: batch-debian (Batch's Debian with Docker and, with install_gpu_drivers, the "
        "NVIDIA driver and container toolkit), batch-cos, batch-hpc-rocky, or an exact image "
        "projects/P/global/images/NAME (or .../images/family/F).",
        pattern=BOOT_IMAGE_PATTERN,
        max_length=200,
    )
    task_count: StrictCount = Field(
        ge=1, le=10_000, description="Number of tasks; each gets BATCH_TASK_INDEX."
    )
    parallelism: StrictCount = Field(
        ge=1, le=10_000, description="Tasks running at the same time (at most task_count)."
    )
    max_retry_count: StrictCount = Field(
        ge=0,
        le=10,
        description="Retries of a failed task (Cloud Batch allows 0 to 10): any failure, "
        "Batch's own VM-lost codes 50001/50002/50003/50006 included, is retried up to this "
        "many times, except the exit codes in fail_fast_exit_codes.",
    )
    fail_fast_exit_codes: list[StrictCount] = Field(
        default_factory=lambda: [CONTAINER_INPUT_ERROR_EXIT_CODE],
        max_length=20,
        description="Exit codes a task is never retried on (a FAIL_TASK lifecycle policy): "
        "the container's permanent errors (2: bad configuration or input). Every other "
        "failure is retried up to max_retry_count. Cannot list 0 nor the VM-lost codes "
        "50001/50002/50003/50006. Empty: every failure is retried.",
    )
    max_run_duration: str = Field(
        description="Longest a task may run, e.g. '24h', '90m', '86400s' (1 minute to 7 days).",
        max_length=20,
    )
    container_image_uri: str = Field(
        description="The job type's container image, built by `make image` from "
        "containers/<job-type>/: this project's Artifact Registry in the jobs' region "
        "(<location>-docker.pkg.dev/<project>/robotoff-batch/<job-type>:<tag>), tag or digest. "
        "An Artifact Registry image in another region is refused.",
        pattern=IMAGE_URI_PATTERN,
        max_length=512,
    )
    entrypoint: str | None = Field(
        default=None,
        description="Overrides the image's ENTRYPOINT; null keeps the image's own.",
        max_length=512,
    )
    commands: list[Annotated[str, Field(max_length=1000)]] = Field(
        default_factory=list,
        max_length=100,
        description="Arguments passed to the entrypoint (Cloud Batch 'commands').",
    )
    environment: dict[
        Annotated[str, Field(pattern=ENV_NAME_PATTERN)], Annotated[str, Field(max_length=4096)]
    ] = Field(
        default_factory=dict,
        description="Plain (non-secret) environment variables for every task.",
    )
    secret_environment: dict[
        Annotated[str, Field(pattern=ENV_NAME_PATTERN)],
        Annotated[str, Field(pattern=SECRET_REF_PATTERN)],
    ] = Field(
        default_factory=dict,
        description="Secret variables as Secret Manager references "
        "(projects/P/secrets/NAME/versions/latest); Batch resolves them on the VM.",
    )
    labels: dict[
        Annotated[str, Field(pattern=LABEL_KEY_PATTERN)],
        Annotated[str, Field(pattern=LABEL_VALUE_PATTERN)],
    ] = Field(
        default_factory=dict,
        max_length=48,
        description="Extra labels on the Cloud Batch job and on its VMs, disks and GPUs "
        "(billing, filtering); keys starting with 'goog' are Google's and refused.",
    )
    service_account_email: str | None = Field(
        default=None,
        description="Service account the VMs run as (production: the dedicated jobs' account "
        "of docs/production.md, on which the launcher has Service Account User). Null uses "
        "the Compute Engine default account, which the documented IAM does not cover.",
        pattern=r"^[a-z0-9-]+@[a-z0-9-]+\.iam\.gserviceaccount\.com$",
    )
    network: str | None = Field(
        default=None,
        description="VPC network of the VMs (projects/P/global/networks/N or "
        "global/networks/N); null: the project's 'default' network, which must then exist. "
        "The VMs need egress to pull the image and download the model.",
        pattern=NETWORK_PATTERN,
        max_length=200,
    )
    subnetwork: str | None = Field(
        default=None,
        description="Subnetwork of the VMs (projects/P/regions/R/subnetworks/S), in the "
        "jobs' location; null: the network's subnetwork in the location.",
        pattern=SUBNETWORK_PATTERN,
        max_length=200,
    )
    no_external_ip_address: bool = Field(
        default=False,
        strict=True,
        description="VMs without an external IP: then the subnetwork needs Cloud NAT (image "
        "pull from outside Google, model download) and Private Google Access.",
    )

    @field_validator("max_run_duration")
    @classmethod
    def _check_duration(cls, value: str) -> str:
        seconds = parse_duration_s(value)
        if not MIN_RUN_DURATION_S <= seconds <= MAX_RUN_DURATION_S:
            raise ValueError(
                f"{value!r} is {seconds} s; it must be between {MIN_RUN_DURATION_S} s "
                f"and {MAX_RUN_DURATION_S} s (7 days)"
            )
        return value

    @field_validator("environment")
    @classmethod
    def _no_secret_in_plain_env(cls, value: dict[str, str]) -> dict[str, str]:
        for name in value:
            if SECRET_LOOKING_NAME.search(name):
                raise ValueError(
                    f"{name} looks like a secret: plain variables are visible in the job "
                    "description; put it in secret_environment as a Secret Manager reference"
                )
        return value

    @model_validator(mode="before")
    @classmethod
    def _renamed_fields(cls, data: object) -> object:
        if isinstance(data, dict) and "boot_disk_mib" in data:
            raise _field_error(
                "boot_disk_mib",
                "boot_disk_mib is gone: it was Batch's *extra* per-task disk, not the VM's boot "
                "disk. Write boot_disk_gb (the VM's boot disk, in GB; 100 for the vLLM image)",
            )
        return data

    @field_validator("labels")
    @classmethod
    def _no_reserved_label(cls, value: dict[str, str]) -> dict[str, str]:
        for key in value:
            if key.startswith(RESERVED_LABEL_PREFIXES):
                raise ValueError(
                    f"label key {key!r} starts with 'goog': Google reserves goog-/google- keys"
                )
        return value

    @field_validator("fail_fast_exit_codes")
    @classmethod
    def _check_fail_fast(cls, value: list[int]) -> list[int]:
        for code in value:
            if code in VM_LOST_EXIT_CODES:
                raise ValueError(
                    f"{code} is Cloud Batch's own code for a VM lost under the task (preempted, "
                    "unreachable, rebooted, recreated): it is always retried"
                )
            if not 1 <= code <= 65535:
                raise ValueError(f"{code} is not a failure exit code (1 to 65535)")
        return sorted(set(value))

    @property
    def max_run_duration_s(self) -> int:
        return parse_duration_s(self.max_run_duration)

    def _check_image_region(self) -> None:
        host = self.container_image_uri.split("/", 1)[0]
        match = _ARTIFACT_REGISTRY_HOST.match(host)
        if match is None:
            return  # another registry (Docker Hub, ghcr.io): no region to check
        where = match["where"]
        prefix = _MULTI_REGIONS.get(where)
        if where == self.location or (prefix and self.location.startswith(prefix)):
            return
        raise _field_error(
            "container_image_uri",
            f"the image is in Artifact Registry {where!r} but the jobs run in {self.location}: "
            "every VM would pull it across regions (slow, billed egress). Push it to "
            f"{self.location}-docker.pkg.dev/<project>/robotoff-batch/<job-type> "
            "(make push-image) and point container_image_uri there",
        )

    @model_validator(mode="after")
    def _check_rules(self) -> BatchResources:
        catalog = load_catalog()
        if self.location not in catalog.batch_regions:
            close = difflib.get_close_matches(self.location, catalog.batch_regions, n=3)
            hint = f"; did you mean {', '.join(close)}?" if close else ""
            raise _field_error("location", f"unknown Cloud Batch location {self.location!r}{hint}")
        machine = catalog.machine_types.get(self.machine_type)
        if machine is None:
            raise _field_error(
                "machine_type",
                f"no price known for machine type {self.machine_type!r}, so its cost cannot be "
                "bounded; add it to robotoff_batch/config/data/prices.yaml "
                f"(known: {', '.join(sorted(catalog.machine_types))})",
            )
        if self.parallelism > self.task_count:
            raise _field_error(
                "parallelism",
                f"parallelism {self.parallelism} is above task_count {self.task_count}",
            )
        if self.cpu_milli > machine.vcpus * 1000:
            raise _field_error(
                "cpu_milli",
                f"cpu_milli {self.cpu_milli} is more than {self.machine_type} has "
                f"({machine.vcpus} vCPU = {machine.vcpus * 1000})",
            )
        if self.memory_mib > machine.memory_mib:
            raise _field_error(
                "memory_mib",
                f"memory_mib {self.memory_mib} is more than {self.machine_type} has "
                f"({machine.memory_mib} MiB)",
            )
        self._check_accelerators(machine.gpus, machine.accelerator)
        self._check_image_region()
        if self.subnetwork is not None:
            region = re.match(SUBNETWORK_PATTERN, self.subnetwork)
            if region is not None and region["region"] != self.location:
                raise _field_error(
                    "subnetwork",
                    f"subnetwork {self.subnetwork} is in {region['region']}, the jobs run in "
                    f"{self.location}",
                )
            if self.network is None:
                raise _field_error("network", "a subnetwork is set: set its network too")
        if self.no_external_ip_address and self.subnetwork is None:
            raise _field_error(
                "no_external_ip_address",
                "VMs without an external IP need an explicit network and subnetwork (with "
                "Cloud NAT and Private Google Access)",
            )
        return self

    def _check_accelerators(self, machine_gpus: int, machine_accelerator: str | None) -> None:
        catalog = load_catalog()
        family = machine_family(self.machine_type)
        if self.accelerators_type is None:
            if self.accelerators_count:
                raise _field_error(
                    "accelerators_type",
                    f"accelerators_count is {self.accelerators_count} but no accelerators_type "
                    "is set",
                )
            if machine_gpus:
                raise _field_error(
                    "accelerators_type",
                    f"{self.machine_type} carries {machine_gpus} {machine_accelerator}: set "
                    f"accelerators_type: {machine_accelerator} and accelerators_count: "
                    f"{machine_gpus}",
                )
            return
        families = catalog.accelerator_families.get(self.accelerators_type)
        if families is None:
            raise _field_error(
                "accelerators_type",
                f"unknown GPU type {self.accelerators_type!r} "
                f"(known: {', '.join(sorted(catalog.accelerator_families))})",
            )
        if family not in families:
            raise _field_error(
                "accelerators_type",
                f"{self.accelerators_type} cannot be attached to a {family} machine "
                f"({self.machine_type}); it needs a {'/'.join(families)} machine type",
            )
        regions = catalog.accelerator_regions[self.accelerators_type]
        if self.location not in regions:
            raise _field_error(
                "accelerators_type",
                f"{self.accelerators_type} is not offered in {self.location}; "
                f"regions offering it: {', '.join(regions)}",
            )
        if self.accelerators_count < 1:
            raise _field_error(
                "accelerators_count",
                f"accelerators_type is {self.accelerators_type} but accelerators_count is 0",
            )
        if machine_gpus and (
            self.accelerators_count != machine_gpus or self.accelerators_type != machine_accelerator
        ):
            raise _field_error(
                "accelerators_count",
                f"{self.machine_type} comes with exactly {machine_gpus} {machine_accelerator}; "
                f"got {self.accelerators_count} {self.accelerators_type}",
            )
        if not self.install_gpu_drivers:
            raise _field_error(
                "install_gpu_drivers",
                "a job with GPUs needs install_gpu_drivers: true (the container cannot see "
                "the GPU without the driver)",
            )


@dataclass(frozen=True)
class CostEstimate:
    """The worst case of one job configuration, with the arithmetic shown."""

    hourly_usd: float
    hours: float
    task_count: int
    attempts: int
    spot_fraction: float | None
    total_usd: float
    estimate: bool
    machine_type: str

    def explain(self) -> str:
        spot = f" x {self.spot_fraction} (SPOT)" if self.spot_fraction is not None else ""
        est = " (price is an estimate)" if self.estimate else ""
        return (
            f"${self.hourly_usd:.6f}/h ({self.machine_type}{est}){spot} x {self.hours:g} h "
            f"x {self.task_count} task(s) x {self.attempts} attempt(s) "
            f"(1 + {self.attempts - 1} retries) = ${self.total_usd:.2f}"
        )


class UnknownPriceError(KeyError):
    """A machine type or GPU the price table does not list."""


@dataclass(frozen=True)
class HourlyRate:
    """What one VM of a job costs per hour, from the price table: the one source of the
    worst-case ceiling and of a job's actual cost."""

    machine_type: str
    hourly_usd: float  # machine + attached GPUs, on-demand
    spot_fraction: float | None  # the SPOT discount factor; None for STANDARD
    estimate: bool

    @property
    def effective_usd(self) -> float:
        """The hourly price the provisioning model pays (SPOT discounted)."""
        return self.hourly_usd * (self.spot_fraction if self.spot_fraction is not None else 1.0)


def hourly_rate(
    machine_type: str,
    *,
    provisioning_model: str = "STANDARD",
    accelerators_type: str | None = None,
    accelerators_count: int = 0,
) -> HourlyRate:
    """The hourly price of one VM: the machine type, plus GPUs attached to an n1 machine
    (g2/a2/a3 carry theirs in the machine price), x the SPOT fraction for SPOT (and Batch's
    older PREEMPTIBLE). Raises :class:`UnknownPriceError` for what the table does not list."""
    catalog = load_catalog()
    machine = catalog.machine_types.get(machine_type)
    if machine is None:
        raise UnknownPriceError(f"no price for machine type {machine_type!r} in prices.yaml")
    hourly = machine.usd_per_hour
    estimate = machine.estimate
    if accelerators_type and not machine.gpus:
        # n1: GPUs are attached and billed on top of the machine.
        price = catalog.accelerator_prices.get(accelerators_type)
        if price is None:
            raise UnknownPriceError(f"no price for GPU {accelerators_type!r} in prices.yaml")
        hourly += price * accelerators_count
        estimate = estimate or catalog.accelerator_price_estimates[accelerators_type]
    spot = catalog.spot_price_fraction if provisioning_model in ("SPOT", "PREEMPTIBLE") else None
    return HourlyRate(
        machine_type=machine_type, hourly_usd=hourly, spot_fraction=spot, estimate=estimate
    )


def worst_case_cost(resources: BatchResources) -> CostEstimate:
    """Hourly price x max run duration x task count x (1 + max retries), SPOT discounted."""
    rate = hourly_rate(
        resources.machine_type,
        provisioning_model=resources.provisioning_model.value,
        accelerators_type=resources.accelerators_type,
        accelerators_count=resources.accelerators_count,
    )
    hours = resources.max_run_duration_s / 3600
    attempts = 1 + resources.max_retry_count
    total = rate.effective_usd * hours * resources.task_count * attempts
    return CostEstimate(
        hourly_usd=rate.hourly_usd,
        hours=hours,
        task_count=resources.task_count,
        attempts=attempts,
        spot_fraction=rate.spot_fraction,
        total_usd=total,
        estimate=rate.estimate,
        machine_type=resources.machine_type,
    )


class JobConfig(BaseModel):
    """One job type's YAML file."""

    model_config = ConfigDict(extra="forbid", frozen=True, allow_inf_nan=False)

    description: str = Field(
        default="", max_length=500, description="What the job type does, for people."
    )
    max_cost_usd: float = Field(
        gt=0,
        le=10_000,
        description="Ceiling on the worst-case cost of one job (USD); a config whose worst "
        "case is above it is refused.",
    )
    schedule: str | None = Field(
        default=None,
        description="Cron schedule (UTC) that launches this job type; null for none. "
        "Schedules are created stopped; turn them on in the UI.",
        max_length=100,
    )
    max_pending_duration: str = Field(
        default="6h",
        description="How long a job may stay QUEUED or SCHEDULED (no VM yet: GPU quota or "
        "capacity) before it is reported as stuck, with its status events; e.g. '6h', '90m'.",
        max_length=20,
    )
    cancel_when_stuck: bool = Field(
        default=False,
        strict=True,
        description="Cancel a job stuck QUEUED/SCHEDULED past max_pending_duration (else only "
        "warn).",
    )
    resources: BatchResources = Field(description="The Cloud Batch resources of each job.")

    @field_validator("max_cost_usd", mode="before")
    @classmethod
    def _number_not_string(cls, value: object) -> object:
        if isinstance(value, str | bool):
            raise ValueError(f"max_cost_usd must be a number, not {value!r}")
        return value

    @field_validator("max_pending_duration")
    @classmethod
    def _check_pending(cls, value: str) -> str:
        seconds = parse_duration_s(value)
        if not MIN_RUN_DURATION_S <= seconds <= MAX_RUN_DURATION_S:
            raise ValueError(f"{value!r} is {seconds} s; it must be between 1 minute and 7 days")
        return value

    @property
    def max_pending_duration_s(self) -> int:
        return parse_duration_s(self.max_pending_duration)

    @field_validator("schedule")
    @classmethod
    def _check_cron(cls, value: str | None) -> str | None:
        if value is None:
            return None
        from dagster._utils.schedules import is_valid_cron_string

        if not is_valid_cron_string(value):
            raise ValueError(f"{value!r} is not a valid cron expression (e.g. '0 3 * * 1')")
        return value

    @model_validator(mode="after")
    def _check_cost(self) -> JobConfig:
        cost = worst_case_cost(self.resources)
        if cost.total_usd > self.max_cost_usd:
            raise _field_error(
                "max_cost_usd",
                f"worst-case cost {cost.explain()} is above the ceiling "
                f"max_cost_usd = ${self.max_cost_usd:.2f}; lower max_run_duration, task_count "
                "or max_retry_count, pick a cheaper machine, or raise the ceiling on purpose",
            )
        return self

    @property
    def cost(self) -> CostEstimate:
        return worst_case_cost(self.resources)
