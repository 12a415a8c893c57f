"""The local runner's former module path: the runner is the package
:mod:`robotoff_batch.batch.local`; ``python -m robotoff_batch.batch.local_runner supervise DIR``
still runs a job's supervisor."""

import sys

from robotoff_batch.batch.local import LocalBatchEngine
from robotoff_batch.batch.local.__main__ import main

__all__ = ["LocalBatchEngine", "main"]

if __name__ == "__main__":
    sys.exit(main())
