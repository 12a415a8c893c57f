"""The data tables that configuration is checked against: GPUs per region, machine prices.

Both live as YAML next to this module (``data/``) with their source and date, so that a price
or a region can be updated in a reviewed one-line change.
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import cache
from importlib import resources
from typing import Any

import yaml


@dataclass(frozen=True)
class MachineType:
    name: str
    usd_per_hour: float
    vcpus: int
    memory_mib: int
    gpus: int
    accelerator: str | None
    estimate: bool

    @property
    def family(self) -> str:
        return machine_family(self.name)


@dataclass(frozen=True)
class Catalog:
    accelerator_families: dict[str, tuple[str, ...]]
    accelerator_regions: dict[str, tuple[str, ...]]
    batch_regions: tuple[str, ...]
    machine_types: dict[str, MachineType]
    accelerator_prices: dict[str, float]
    accelerator_price_estimates: dict[str, bool]
    spot_price_fraction: float
    prices_retrieved: str
    gpu_table_retrieved: str


def machine_family(machine_type: str) -> str:
    """``g2-standard-8`` -> ``g2``."""
    return machine_type.split("-", 1)[0]


def _load_yaml(name: str) -> dict[str, Any]:
    text = resources.files("robotoff_batch.config").joinpath("data", name).read_text("utf-8")
    data = yaml.safe_load(text)
    if not isinstance(data, dict):
        raise RuntimeError(f"robotoff_batch/config/data/{name} is not a mapping")
    return data


@cache
def load_catalog() -> Catalog:
    """Read the GPU and price tables shipped with the package (once per process)."""
    gpus = _load_yaml("accelerators.yaml")
    prices = _load_yaml("prices.yaml")
    return Catalog(
        accelerator_families={
            k: tuple(v["machine_families"]) for k, v in gpus["accelerators"].items()
        },
        accelerator_regions={k: tuple(v["regions"]) for k, v in gpus["accelerators"].items()},
        batch_regions=tuple(gpus["batch_regions"]),
        machine_types={
            name: MachineType(
                name=name,
                usd_per_hour=float(v["usd_per_hour"]),
                vcpus=int(v["vcpus"]),
                memory_mib=int(v["memory_mib"]),
                gpus=int(v.get("gpus", 0)),
                accelerator=v.get("accelerator"),
                estimate=bool(v.get("estimate", True)),
            )
            for name, v in prices["machine_types"].items()
        },
        accelerator_prices={k: float(v["usd_per_hour"]) for k, v in prices["accelerators"].items()},
        accelerator_price_estimates={
            k: bool(v.get("estimate", True)) for k, v in prices["accelerators"].items()
        },
        spot_price_fraction=float(prices["spot_price_fraction"]),
        prices_retrieved=str(prices["retrieved"]),
        gpu_table_retrieved=str(gpus["retrieved"]),
    )
