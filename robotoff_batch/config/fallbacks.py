"""``fallbacks:`` of a job configuration: ordered alternatives to ``resources`` (another region,
machine, GPU or provisioning model) tried when a job waits on capacity or quota.

Each alternative is a partial override merged onto ``resources`` and validated again as a whole
(region, GPU family and region, price table, image and subnetwork region), so an alternative
is held to every rule the main resources are; its worst case must be under the same ceiling.
"""

from __future__ import annotations

from pydantic import BaseModel, ConfigDict, Field, ValidationError

from robotoff_batch.config.pricing import worst_case_cost
from robotoff_batch.config.resources_models import BatchResources
from robotoff_batch.config.rules import ProvisioningModel, StrictCount, _field_error


class Fallback(BaseModel):
    """One alternative: only the fields it sets replace those of ``resources``."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    location: str | None = Field(default=None, description="Cloud Batch region.")
    machine_type: str | None = Field(default=None, description="Compute Engine machine type.")
    accelerators_type: str | None = Field(default=None, description="GPU type (null: none).")
    accelerators_count: StrictCount | None = Field(default=None, description="GPUs per VM.")
    provisioning_model: ProvisioningModel | None = Field(
        default=None, description="STANDARD or SPOT."
    )
    container_image_uri: str | None = Field(
        default=None, description="The image, when the main one is not readable in the region."
    )
    network: str | None = Field(default=None, description="VPC network of the VMs.")
    subnetwork: str | None = Field(
        default=None, description="Subnetwork of the VMs, in the alternative's region."
    )


def merged_resources(
    resources: BatchResources, fallback: Fallback, *, index: int, max_cost_usd: float
) -> BatchResources:
    """``resources`` with the alternative's fields, validated and priced; errors name
    ``fallbacks.<index>.<field>`` (the loader shows it as ``fallbacks[<index>].<field>``)."""
    data = {**resources.model_dump(), **fallback.model_dump(exclude_unset=True)}
    try:
        merged = BatchResources.model_validate(data)
    except ValidationError as exc:
        error = exc.errors()[0]
        loc = [str(part) for part in error["loc"]]
        field = (error.get("ctx") or {}).get("field")
        if field:
            loc.append(str(field))
        raise _field_error(
            ".".join(["fallbacks", str(index), *loc]), f"this alternative: {error['msg']}"
        ) from None
    cost = worst_case_cost(merged)
    if cost.total_usd > max_cost_usd:
        raise _field_error(
            f"fallbacks.{index}",
            f"this alternative's worst-case cost {cost.explain()} is above the ceiling "
            f"max_cost_usd = ${max_cost_usd:.2f} (every alternative is under the same ceiling)",
        )
    return merged
