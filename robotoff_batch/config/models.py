"""The job-type configuration: one YAML file per job type, validated by Pydantic.

Robotoff's model (robotoff/batch/launch.py) typed counts as strings and let two fields fall on
the floor when building the request. Here counts are strict ints, every field has bounds and a
description, cross-field rules (GPU fits the machine family and the region, parallelism within
task count, resources within the machine) are checked, and the worst-case cost must stay under
the file's own ceiling.
"""

from __future__ import annotations

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from robotoff_batch.config.fallbacks import Fallback, merged_resources
from robotoff_batch.config.pricing import (
    CostEstimate,
    HourlyRate,
    UnknownPriceError,
    hourly_rate,
    worst_case_cost,
)
from robotoff_batch.config.resources_models import BatchResources
from robotoff_batch.config.rules import (
    IMAGE_URI_PATTERN,
    JOB_TYPE_PATTERN,
    LABEL_KEY_PATTERN,
    LABEL_VALUE_PATTERN,
    MAX_RUN_DURATION_S,
    MIN_RUN_DURATION_S,
    RESERVED_LABEL_PREFIXES,
    _field_error,
    parse_duration_s,
)

__all__ = [  # what the rest of the code imports from here
    "IMAGE_URI_PATTERN",
    "JOB_TYPE_PATTERN",
    "LABEL_KEY_PATTERN",
    "LABEL_VALUE_PATTERN",
    "RESERVED_LABEL_PREFIXES",
    "BatchResources",
    "CostEstimate",
    "Fallback",
    "HourlyRate",
    "JobConfig",
    "UnknownPriceError",
    "hourly_rate",
    "worst_case_cost",
]


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
    fallbacks: list[Fallback] = Field(
        default_factory=list,
        max_length=5,
        description="Ordered alternatives to resources (location, machine_type, "
        "accelerators_*, provisioning_model, container_image_uri, network, subnetwork), each "
        "merged onto resources, validated and priced under the same max_cost_usd. A job whose "
        "tasks have not started after fallback_after, with a capacity or quota status event, "
        "is cancelled and relaunched with the next one (same staged input).",
    )
    fallback_after: str = Field(
        default="2h",
        description="How long a job may wait on capacity or quota before the next alternative "
        "of fallbacks is tried; shorter than max_pending_duration.",
        max_length=20,
    )
    fallback_after_preemptions: int | None = Field(
        default=None,
        ge=1,
        le=10,
        strict=True,
        description="Move a running job on to the next alternative of fallbacks (e.g. SPOT, "
        "then STANDARD) once its tasks were preempted this many times in all (Batch's exit "
        "code 50001: a Spot VM reclaimed): it is cancelled and relaunched on the same staged "
        "input, carrying the chunks its tasks finished (only the rest is computed). Needs "
        "max_retry_count >= this, so the job is still running when it is reached. Null: "
        "preemptions are only retried.",
    )

    @field_validator("max_cost_usd", mode="before")
    @classmethod
    def _number_not_string(cls, value: object) -> object:
        if isinstance(value, str | bool):
            raise ValueError(f"max_cost_usd must be a number, not {value!r}")
        return value

    @field_validator("max_pending_duration", "fallback_after")
    @classmethod
    def _check_pending(cls, value: str) -> str:
        seconds = parse_duration_s(value)
        if not MIN_RUN_DURATION_S <= seconds <= MAX_RUN_DURATION_S:
            raise ValueError(f"{value!r} is {seconds} s; it must be between 1 minute and 7 days")
        return value

    @property
    def max_pending_duration_s(self) -> int:
        return parse_duration_s(self.max_pending_duration)

    @property
    def fallback_after_s(self) -> int:
        return parse_duration_s(self.fallback_after)

    def alternatives(self) -> list[BatchResources]:
        """The merged resources of each alternative, in order: ``fallbacks[i]`` is item i, the
        one its ``-f<i + 1>`` job runs on."""
        return [
            merged_resources(self.resources, fb, index=i, max_cost_usd=self.max_cost_usd)
            for i, fb in enumerate(self.fallbacks)
        ]

    @property
    def locations(self) -> list[str]:
        """Every region this job type's jobs may run in: resources', then the alternatives'."""
        found = [self.resources.location, *(r.location for r in self.alternatives())]
        return list(dict.fromkeys(found))

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
        if self.fallbacks and self.fallback_after_s >= self.max_pending_duration_s:
            raise _field_error(
                "fallback_after",
                f"fallback_after {self.fallback_after} is not shorter than max_pending_duration "
                f"{self.max_pending_duration}: the job would be reported stuck first",
            )
        self.alternatives()  # each alternative validated and priced (errors name its index)
        return self

    @property
    def cost(self) -> CostEstimate:
        return worst_case_cost(self.resources)
