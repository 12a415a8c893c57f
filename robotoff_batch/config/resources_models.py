"""``resources:`` of a job configuration: what Cloud Batch runs, with its cross-field rules
(GPU fits the machine family and the region, parallelism within task count, resources within
the machine, image and subnetwork in the jobs' region)."""

from __future__ import annotations

import difflib
import re
from typing import Annotated

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from robotoff_batch.config.catalog import load_catalog, machine_family
from robotoff_batch.config.rules import (
    _ARTIFACT_REGISTRY_HOST,
    BOOT_IMAGE_PATTERN,
    CONTAINER_INPUT_ERROR_EXIT_CODE,
    ENV_NAME_PATTERN,
    IMAGE_URI_PATTERN,
    LABEL_KEY_PATTERN,
    LABEL_VALUE_PATTERN,
    MAX_RUN_DURATION_S,
    MIN_RUN_DURATION_S,
    NETWORK_PATTERN,
    RESERVED_LABEL_PREFIXES,
    SECRET_LOOKING_NAME,
    SECRET_REF_PATTERN,
    SUBNETWORK_PATTERN,
    VM_LOST_EXIT_CODES,
    ProvisioningModel,
    StrictCount,
    _field_error,
    parse_duration_s,
    registry_serves,
)


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
    retry_timeouts: bool = Field(
        default=False,
        description="Whether a task that hit max_run_duration (Batch's exit code 50005) is "
        "retried. False (the default): it fails at once, as another max_run_duration of the "
        "same work would likely end the same way (a checkpointed task's finished chunks stay "
        "importable with `import --partial`). True: retried up to max_retry_count, resuming "
        "after its last chunk.",
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
        if registry_serves(where, self.location):
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
