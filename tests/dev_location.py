"""The real code location for the `dagster dev` tests, with one override: when
``ROBOTOFF_BATCH_TEST_COMMAND`` (a JSON list) is set, the local runner plays the spellcheck image
with that command (a container that fails, or one that sleeps before running the real one)."""

from __future__ import annotations

import json
import os

from robotoff_batch.definitions import build_definitions
from robotoff_batch.job_types import load_registry, local_commands
from robotoff_batch.resources import LocalBatchEngineResource, build_resources

resources = build_resources("local")
_command = os.environ.get("ROBOTOFF_BATCH_TEST_COMMAND")
if _command:
    image = load_registry()["ingredients-spellcheck"].config.resources.container_image_uri
    resources["batch_engine"] = LocalBatchEngineResource(
        job_type_commands=local_commands(), local_commands={image: json.loads(_command)}
    )
defs = build_definitions(resources=resources)
