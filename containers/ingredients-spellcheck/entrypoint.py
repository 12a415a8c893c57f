"""Entrypoint of the ingredients-spellcheck batch container.

Run as ``python entrypoint.py [--engine lexicon-cpu|vllm] [--batch-size N]`` with the
environment described in README.md (INPUT_FILE_PATH, OUTPUT_FILE_PATH, LEXICON_FILE_PATH,
BATCH_TASK_INDEX, BATCH_TASK_COUNT...). Exit status 0 on success,
2 on a configuration or input error (the message names the variable, file or column).
"""

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from spellcheck_job.main import main  # noqa: E402

if __name__ == "__main__":
    sys.exit(main())
