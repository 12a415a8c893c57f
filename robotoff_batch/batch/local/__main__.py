"""``python -m robotoff_batch.batch.local supervise <job_dir>``: the detached supervisor
process of one job (started by the engine's ``submit``)."""

from __future__ import annotations

import argparse
import contextlib
import logging
import sys
from collections.abc import Sequence
from pathlib import Path

from google.cloud import batch_v1

from robotoff_batch.batch.engine import JobState
from robotoff_batch.batch.local.process import settle_orphaned
from robotoff_batch.batch.local.spec import JobSpec
from robotoff_batch.batch.local.state import JOB_FILE, read_state, updating
from robotoff_batch.batch.local.supervisor import Supervisor

logger = logging.getLogger("robotoff_batch.batch.local.supervisor")


def supervise(job_dir: Path, argv: tuple[str, ...], *, poll_interval_s: float) -> JobState:
    """Run the job in ``job_dir`` to its end."""
    job = batch_v1.Job.from_json((job_dir / JOB_FILE).read_text(encoding="utf-8"))
    spec = JobSpec.from_job(read_state(job_dir).job_id, job, argv)
    logger.info(
        "supervising job %s: %d task(s), parallelism %d, argv %s",
        spec.job_id,
        spec.task_count,
        spec.parallelism,
        list(argv),
    )
    final = Supervisor(job_dir, spec, poll_interval_s=poll_interval_s).run()
    logger.info("job %s ended %s", spec.job_id, final)
    return final


def main_supervise(job_dir: str) -> int:
    """``supervise <job_dir>``: the argv and poll interval come from state.json."""
    logging.basicConfig(
        level=logging.INFO,
        stream=sys.stderr,
        format="%(asctime)s %(process)d %(levelname)s %(name)s: %(message)s",
    )
    path = Path(job_dir).resolve()
    runner = read_state(path).runner
    try:
        if runner is None:
            raise ValueError(f"{path} records no command to run")
        supervise(path, tuple(runner.argv), poll_interval_s=runner.poll_interval_s)
    except Exception:
        logger.exception("the supervisor of %s failed", path)
        with contextlib.suppress(Exception), updating(path) as failed:
            settle_orphaned(failed, "local supervisor died: see supervisor.log")
        return 1
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    """``supervise <job_dir>``; exits 2 on any other command line."""
    parser = argparse.ArgumentParser(prog="python -m robotoff_batch.batch.local")
    commands = parser.add_subparsers(dest="command", required=True)
    supervise_command = commands.add_parser("supervise", help="run one job's tasks (detached)")
    supervise_command.add_argument("job_dir")
    args = parser.parse_args(argv)
    if args.command == "supervise":
        return main_supervise(args.job_dir)
    return 2  # pragma: no cover (argparse refuses other commands)


if __name__ == "__main__":
    sys.exit(main())
