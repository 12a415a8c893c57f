"""The job-type registry: one module here and one YAML file in job_configs/ per job type."""

from __future__ import annotations

import importlib
import pkgutil
from dataclasses import dataclass
from pathlib import Path

from robotoff_batch.config.loader import JobTypeConfig, load_job_configs
from robotoff_batch.config.models import JobConfig
from robotoff_batch.job_types.base import JobType


class RegistryError(ValueError):
    """Job-type modules and job_configs/ files do not match."""


@dataclass(frozen=True)
class RegisteredJobType:
    """A job type's code together with its validated configuration."""

    job_type: JobType
    config: JobConfig
    config_path: Path

    @property
    def name(self) -> str:
        return self.job_type.name


def job_type_modules() -> dict[str, JobType]:
    """Every module of this package that defines ``JOB_TYPE``, by job type name."""
    found: dict[str, JobType] = {}
    for info in pkgutil.iter_modules(__path__):
        if info.name in ("base", "spellcheck_lexicon"):
            continue
        module = importlib.import_module(f"{__name__}.{info.name}")
        job_type = getattr(module, "JOB_TYPE", None)
        if isinstance(job_type, JobType):
            found[job_type.name] = job_type
    return found


def load_registry(configs: dict[str, JobTypeConfig] | None = None) -> dict[str, RegisteredJobType]:
    """Pair each job_configs/ file with its module; refuse a config without code or vice versa."""
    configs = load_job_configs() if configs is None else configs
    modules = job_type_modules()
    no_code = sorted(set(configs) - set(modules))
    no_config = sorted(set(modules) - set(configs))
    if no_code or no_config:
        raise RegistryError(
            "job types must have both a module in robotoff_batch/job_types/ and a file in "
            f"job_configs/; config without module: {no_code}; module without config: {no_config}"
        )
    return {
        name: RegisteredJobType(job_type=modules[name], config=c.config, config_path=c.path)
        for name, c in sorted(configs.items())
    }
