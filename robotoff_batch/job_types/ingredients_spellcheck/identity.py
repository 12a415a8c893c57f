"""The model identity a launch's job will write (``predictor``, ``predictor_version``), known
before it runs: what skip_unchanged compares the known set against (issue 22).

The container is the authority: the identity is computed by the container's own code
(containers/ingredients-spellcheck/spellcheck_job: ``main.parse_config`` for the engine and
its settings, ``vllm_engine.predictor_version`` for the GPU model's version, the package's
``ENGINE_VERSION`` for the CPU engine), from the arguments and environment the job's tasks get.
"""

from __future__ import annotations

import sys
from collections.abc import Mapping
from typing import Any

from robotoff_batch.config.models import JobConfig
from robotoff_batch.paths import CONTAINERS_DIR
from robotoff_batch.predictions.known import ModelIdentity

CONTAINER_DIR = CONTAINERS_DIR / "ingredients-spellcheck"


def _container() -> tuple[Any, Any, str]:
    """The container's main and vllm_engine modules and its ENGINE_VERSION (pure Python:
    vLLM itself is imported only when an engine is built)."""
    path = str(CONTAINER_DIR)
    if path not in sys.path:
        sys.path.append(path)
    import spellcheck_job
    from spellcheck_job import main, vllm_engine

    return main, vllm_engine, str(spellcheck_job.ENGINE_VERSION)


def model_identity(
    job_config: JobConfig, task_environment: Mapping[str, str] | None = None
) -> ModelIdentity:
    """The (predictor, predictor_version) the job's output rows will carry (their ``engine``
    and ``engine_version`` columns), from the job config the tasks run with (the local
    runner's included: it says its engine)."""
    main, vllm_engine, engine_version = _container()
    argv = list(job_config.resources.commands)
    env = {
        **dict(job_config.resources.environment),
        **dict(task_environment or {}),
        # the files are the job's own: the identity does not depend on them
        "INPUT_FILE_PATH": "unused",
        "OUTPUT_FILE_PATH": "unused",
        "LEXICON_FILE_PATH": "unused",
    }
    config = main.parse_config(argv, env)
    if config.engine == "vllm":
        version = vllm_engine.predictor_version(
            model=config.model, revision=config.model_revision, quantization=config.quantization
        )
        return ModelIdentity(vllm_engine.ENGINE_NAME, version)
    from spellcheck_job.wordfreq_cpu import ENGINE_NAME, WordFreqSpellchecker

    return ModelIdentity(ENGINE_NAME, str(getattr(WordFreqSpellchecker, "version", engine_version)))
