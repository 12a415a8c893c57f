"""The job-type registry: job-type modules paired with their YAML files.

The built-in job types are the modules of this package, with their YAML files in the project's
``job_configs/``. More job types come from *job-type packages* named in
``ROBOTOFF_BATCH_JOB_TYPE_PACKAGES`` (comma-separated importable packages, e.g. an installed
``robotoff_batch_nutrition``): each module of such a package that defines ``JOB_TYPE`` is a
job type, with its YAML file in the package's own ``job_configs/`` directory. Nothing else in
the code location changes for a new job type (docs/adding-a-job-type.md).
"""

from __future__ import annotations

import importlib
import os
import pkgutil
from dataclasses import dataclass
from pathlib import Path
from types import ModuleType
from typing import TYPE_CHECKING

from robotoff_batch.config.loader import JobTypeConfig, config_paths, load_job_configs
from robotoff_batch.config.models import JobConfig
from robotoff_batch.paths import JOB_CONFIGS_DIR

if TYPE_CHECKING:  # base imports Dagster and the import's stack: not for `config validate`
    from robotoff_batch.job_types.base import JobType

#: Comma-separated importable packages holding more job types (each with its job_configs/).
PACKAGES_ENV = "ROBOTOFF_BATCH_JOB_TYPE_PACKAGES"


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


@dataclass(frozen=True)
class JobTypeSource:
    """A package of job-type modules and the directory of their YAML files."""

    package: str
    configs_dir: Path


def job_type_sources() -> list[JobTypeSource]:
    """This package (with the project's job_configs/), then ``ROBOTOFF_BATCH_JOB_TYPE_PACKAGES``."""
    sources = [JobTypeSource(__name__, JOB_CONFIGS_DIR)]
    for name in os.environ.get(PACKAGES_ENV, "").split(","):
        name = name.strip()
        if not name:
            continue
        try:
            package = importlib.import_module(name)
        except ImportError as exc:
            message = f"{PACKAGES_ENV}: cannot import job-type package {name!r}: {exc}"
            raise RegistryError(message) from None
        sources.append(JobTypeSource(name, _package_dir(package) / "job_configs"))
    return sources


def _package_dir(package: ModuleType) -> Path:
    paths = list(getattr(package, "__path__", []))
    if not paths:
        raise RegistryError(f"{PACKAGES_ENV}: {package.__name__} is a module, not a package")
    return Path(paths[0])


def _modules_of(package_name: str) -> dict[str, JobType]:
    from robotoff_batch.job_types.base import JobType

    package = importlib.import_module(package_name)
    found: dict[str, JobType] = {}
    for info in pkgutil.iter_modules(list(package.__path__)):
        module = importlib.import_module(f"{package_name}.{info.name}")
        job_type = getattr(module, "JOB_TYPE", None)
        if isinstance(job_type, JobType):
            found[job_type.name] = job_type
    return found


def job_type_modules() -> dict[str, JobType]:
    """Every job type of every source, by name; a name defined twice is refused."""
    found: dict[str, JobType] = {}
    for source in job_type_sources():
        for name, job_type in _modules_of(source.package).items():
            if name in found:
                raise RegistryError(f"job type {name!r} is defined twice ({source.package})")
            found[name] = job_type
    return found


def job_config_paths() -> list[Path]:
    """The YAML files of every source (the project's job_configs/ first)."""
    paths: list[Path] = []
    for source in job_type_sources():
        if source.configs_dir.is_dir():
            paths += config_paths(source.configs_dir)
    return paths


def load_registry(configs: dict[str, JobTypeConfig] | None = None) -> dict[str, RegisteredJobType]:
    """Pair each job_configs/ file with its module; refuse a config without code or vice versa."""
    configs = load_job_configs(job_config_paths()) if configs is None else configs
    modules = job_type_modules()
    no_code = sorted(set(configs) - set(modules))
    no_config = sorted(set(modules) - set(configs))
    if no_code or no_config:
        raise RegistryError(
            "job types must have both a module (robotoff_batch/job_types/ or a package of "
            f"{PACKAGES_ENV}) and a file in its job_configs/; config without module: "
            f"{no_code}; module without config: {no_config}"
        )
    return {
        name: RegisteredJobType(job_type=modules[name], config=c.config, config_path=c.path)
        for name, c in sorted(configs.items())
    }


def local_commands(
    registry: dict[str, RegisteredJobType] | None = None,
) -> dict[str, list[str]]:
    """Image URI -> the argv that plays it on the local runner, for every job type (what the
    composition root gives the local engine)."""
    registry = load_registry() if registry is None else registry
    return {
        r.config.resources.container_image_uri: list(r.job_type.local_command)
        for r in registry.values()
    }
