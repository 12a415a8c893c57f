"""What a job type is: its launch parameters, extraction, container and import.

A job type is one module in this package plus one YAML file in ``job_configs/``; the pipeline
(assets, sensor, CLI) is generated from the registry and never names a job type itself.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import dagster as dg

from robotoff_batch.predictions.store import PREDICTION_SCHEMA as _PREDICTION_SCHEMA
from robotoff_batch.predictions.store import ImportSpec

# Robotoff's `prediction` table columns, in COPY order (ready-made prediction batches).
PREDICTION_SCHEMA = _PREDICTION_SCHEMA


#: Name of the staged input every job type writes; its other files are extra inputs.
INPUT_FILE = "input.parquet"


class OutputError(ValueError):
    """A job's output file cannot be imported (missing column, null code...)."""


@dataclass(frozen=True)
class ExtractedInput:
    """Files written by a job type's extraction, to be staged beside each other."""

    rows: int
    files: Mapping[str, Path]  # staged name (e.g. "input.parquet") -> local file
    metadata: Mapping[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class JobType:
    """One kind of batch job."""

    name: str
    launch_config: type[dg.Config]
    # Columns of the product dump the extraction needs, with their expected type.
    required_columns: Mapping[str, str]
    # (dump_path=, params=, work_dir=, job_config=, local_argv=, progress=): local_argv is the
    # local runner's command for the image (None on Cloud Batch), so the extraction writes only
    # what the engine that will run needs.
    extract: Callable[..., ExtractedInput]
    # argv that plays the container on the local runner; config `commands` are appended.
    local_command: Sequence[str]
    # How the task files become Robotoff rows (columns read, SQL, insights): see ImportSpec.
    # None: the job type imports nothing (its finish run records the job's outcome only).
    import_spec: ImportSpec | None
    prediction_type: str | None = None
    # Staged file beside the input holding the product facts the insights read (None: none).
    facts_file: str | None = None
    description: str = ""

    @property
    def input_file(self) -> str:
        """The staged file the container reads (``INPUT_FILE_PATH``)."""
        return INPUT_FILE

    @property
    def imports(self) -> bool:
        """Whether a SUCCEEDED job's output is imported into Robotoff's database."""
        return self.import_spec is not None

    @property
    def key_prefix(self) -> str:
        """Asset key prefix: ``ingredients-spellcheck`` -> ``ingredients_spellcheck``."""
        return self.name.replace("-", "_")
