"""Where the project's files and the embedded defaults' state live."""

from __future__ import annotations

import os
from pathlib import Path

PROJECT_ROOT = Path(__file__).resolve().parent.parent
JOB_CONFIGS_DIR = PROJECT_ROOT / "job_configs"
CONTAINERS_DIR = PROJECT_ROOT / "containers"
SAMPLE_DATA_DIR = PROJECT_ROOT / "data" / "off"


def home_dir() -> Path:
    """The embedded defaults' state directory (``ROBOTOFF_BATCH_HOME``), created on demand."""
    path = Path(os.environ.get("ROBOTOFF_BATCH_HOME", PROJECT_ROOT / ".robotoff-batch"))
    path.mkdir(parents=True, exist_ok=True)
    return path.resolve()
