"""Prices of a job's VMs: the hourly rate from the price table and the worst-case cost."""

from __future__ import annotations

from dataclasses import dataclass

from robotoff_batch.config.catalog import load_catalog
from robotoff_batch.config.resources_models import BatchResources


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
