"""The local runner: an embedded Cloud Batch for when no cloud account is configured.

:class:`LocalBatchEngine` takes the same ``batch_v1.CreateJobRequest`` as Cloud Batch and runs
its tasks as local processes: the container image is played by a local command
(``commands_by_image``), the container's ``commands`` are appended as its arguments, and each
task gets the request's environment plus ``BATCH_TASK_INDEX``, ``BATCH_TASK_COUNT``,
``BATCH_JOB_ID`` and ``BATCH_TASK_RETRY_ATTEMPT``, as on Batch.

A submitted job is a directory under ``state_dir`` (format in
:mod:`robotoff_batch.batch.local.state`) run by a detached supervisor process, so it
outlives the process that submitted it and any other process (the Dagster daemon's sensor, the
CLI) sees its state. What of the request is honoured: :mod:`robotoff_batch.batch.local.spec`.

Run the supervisor by hand with ``python -m robotoff_batch.batch.local supervise DIR``.
"""

from __future__ import annotations

import errno
import logging
import os
import shutil
import subprocess
import sys
import tempfile
from collections.abc import Mapping, Sequence
from dataclasses import replace
from datetime import UTC, datetime
from pathlib import Path

from google.cloud import batch_v1

from robotoff_batch.batch.engine import (
    BatchEngineError,
    JobNotFoundError,
    JobState,
    JobStatus,
    MachineSpec,
)
from robotoff_batch.batch.local.process import (
    check_alive,
    is_same_process_alive,
    kill_recorded_tasks,
    start_supervisor,
    terminate,
    wait_gone,
)
from robotoff_batch.batch.local.spec import plan_request
from robotoff_batch.batch.local.state import (
    JOB_FILE,
    LOCK_FILE,
    LOGS_DIR,
    STATE_FILE,
    RunnerRecord,
    atomic_write_text,
    new_state,
    read_state,
    updating,
    write_state,
)
from robotoff_batch.batch.local.status import read_tail, tail_log_path, to_job_status
from robotoff_batch.batch.request import JOB_ID_PATTERN, machine_of_job

logger = logging.getLogger(__name__)

# How long cancel waits for the supervisor to stop its tasks before killing everything itself.
CANCEL_GRACE_S = 5.0


class LocalBatchEngine:
    """A :class:`~robotoff_batch.batch.engine.BatchEngine` running jobs as local processes."""

    name = "local"
    location: str | None = None  # runs a job wherever its config says

    def __init__(
        self,
        *,
        state_dir: Path,
        commands_by_image: Mapping[str, Sequence[str]],
        python: str = sys.executable,
        poll_interval_s: float = 0.2,
    ) -> None:
        self.state_dir = Path(state_dir).resolve()
        self.commands_by_image = {image: tuple(argv) for image, argv in commands_by_image.items()}
        self.python = python
        self.poll_interval_s = poll_interval_s
        self._supervisors: dict[str, subprocess.Popen[bytes]] = {}
        # job.json never changes once published: its machine is read once per job.
        self._machines: dict[str, MachineSpec | None] = {}
        self.state_dir.mkdir(parents=True, exist_ok=True)

    # -- BatchEngine -----------------------------------------------------------------------------

    def submit(self, *, request: batch_v1.CreateJobRequest) -> JobStatus:
        """Create the job and start its supervisor; an existing job id is re-attached."""
        job_id = request.job_id
        if not JOB_ID_PATTERN.match(job_id):
            raise BatchEngineError(
                f"job id {job_id!r} does not match {JOB_ID_PATTERN.pattern} (Cloud Batch's rule)"
            )
        job_dir = self.state_dir / job_id
        if (job_dir / STATE_FILE).exists():
            logger.info("job %s already exists: re-attaching", job_id)
            return self._status(job_dir)
        argv, task_count = plan_request(request, self.commands_by_image)

        # Build the job directory aside, then publish it with one rename: it fails if the
        # directory exists (another submit won), so a job is never started twice.
        staging = Path(tempfile.mkdtemp(dir=self.state_dir, prefix=f".submit-{job_id}-"))
        try:
            (staging / LOGS_DIR).mkdir()
            (staging / LOCK_FILE).touch()
            atomic_write_text(staging / JOB_FILE, batch_v1.Job.to_json(request.job, indent=2))
            runner = RunnerRecord(argv=list(argv), poll_interval_s=self.poll_interval_s)
            state = new_state(
                job_id=job_id,
                parent=request.parent,
                labels=dict(request.job.labels),
                task_count=task_count,
                runner=runner,
            )
            write_state(staging, state)
            try:
                os.rename(staging, job_dir)
            except OSError as error:
                if error.errno not in (errno.EEXIST, errno.ENOTEMPTY):
                    raise
                logger.info("job %s was created concurrently: re-attaching", job_id)
                return self._status(job_dir)
        finally:
            shutil.rmtree(staging, ignore_errors=True)

        logger.info("submitted job %s: %d task(s), argv %s", job_id, task_count, list(argv))
        self._start_supervisor(job_id, job_dir)
        return self._status(job_dir)

    def list_jobs(self, *, labels: Mapping[str, str]) -> list[JobStatus]:
        """Every job whose labels include ``labels``, from one scan of ``state_dir``."""
        self._reap_supervisors()
        found: list[JobStatus] = []
        with os.scandir(self.state_dir) as entries:
            for entry in entries:
                if entry.name.startswith(".") or not entry.is_dir():
                    continue
                job_dir = Path(entry.path)
                try:
                    state = read_state(job_dir)
                except (OSError, ValueError):
                    continue
                if any(state.labels.get(k) != v for k, v in labels.items()):
                    continue
                found.append(to_job_status(job_dir, check_alive(job_dir, state)))
        found.sort(key=lambda s: (s.create_time or datetime.min.replace(tzinfo=UTC), s.job_id))
        return found

    def get_job(self, *, job_id: str) -> JobStatus:
        """One job with its status events and per-task exit codes."""
        self._reap_supervisors()
        job_dir = self._existing_job_dir(job_id)
        if job_dir is None:
            raise JobNotFoundError(f"no local batch job {job_id!r} under {self.state_dir}")
        # The machine (job.json) only here: list_jobs reads state.json alone, whatever the
        # number of jobs.
        return replace(self._status(job_dir), machine=self._machine(job_dir))

    def cancel(self, *, job_id: str) -> None:
        """Kill the job's tasks and supervisor: the job goes CANCELLATION_IN_PROGRESS, then
        CANCELLED (its directory, events and logs stay).

        A finished job keeps its final state and an unknown job is ignored. A job already
        being cancelled is left to the cancel under way (or to its supervisor): nothing is
        signalled again and the call returns at once.
        """
        job_dir = self._existing_job_dir(job_id)
        if job_dir is None:
            logger.info("cancel: no local batch job %s, nothing to do", job_id)
            return
        with updating(job_dir) as state:
            current = state.state
            if current.is_terminal:
                logger.info("cancel: job %s already %s", job_id, current)
                return
            stopping = current.is_stopping
            if not stopping:
                state.set_state(JobState.CANCELLATION_IN_PROGRESS, "Cancellation requested.")
            supervisor = state.supervisor.model_copy()
        if stopping:
            logger.info("cancel: job %s is already %s", job_id, current)
            # Settles it if whoever was stopping it died (supervisor and canceller gone).
            self._status(job_dir)
            return
        pid, ticks = supervisor.pid or 0, supervisor.start_ticks
        logger.info("cancelling job %s (supervisor pid %s)", job_id, pid or "not started")
        if pid and is_same_process_alive(pid, ticks):
            what = f"supervisor {pid} of job {job_id}"
            terminate(pid, ticks, what=what, grace_s=CANCEL_GRACE_S, poll=self._reap_supervisors)
        self._reap_supervisors()
        wait_gone(kill_recorded_tasks(job_dir), CANCEL_GRACE_S)

    def logs_uri(self, *, job_id: str) -> str:
        """The job's task logs directory, as a ``file://`` URI."""
        return (self.state_dir / job_id / LOGS_DIR).as_uri()

    def log_tail(self, *, job_id: str, lines: int = 30) -> str | None:
        """The last ``lines`` lines of ``logs/task-<i>-attempt-<n>.log``: the last attempt of
        the failed task (non-zero exit code, lowest index), else the attempt started last.

        Reads at most the last 64 KiB of the file (undecodable bytes are replaced). None for
        an unknown job or one without a log. Reads files only: not counted in :attr:`calls`.
        """
        job_dir = self._existing_job_dir(job_id)
        if job_dir is None:
            return None
        try:
            state = read_state(job_dir)
        except (OSError, ValueError):
            return None
        path = tail_log_path(job_dir, state)
        return None if path is None else read_tail(path, lines)

    # -- helpers for the CLI and tests ----------------------------------------------------------

    def job_dir(self, job_id: str) -> Path:
        """Where the job's state, request and logs live."""
        return self.state_dir / job_id

    def close(self) -> None:
        """Reap finished supervisors. Running jobs are left alone: they outlive the engine."""
        self._reap_supervisors()

    # -- internals -------------------------------------------------------------------------------

    def _start_supervisor(self, job_id: str, job_dir: Path) -> None:
        process = start_supervisor(job_dir, python=self.python)
        if process is not None:
            self._supervisors[job_id] = process

    def _reap_supervisors(self) -> None:
        """Collect the exit status of supervisors we started, so none lingers as a zombie."""
        for job_id, process in list(self._supervisors.items()):
            if process.poll() is not None:
                del self._supervisors[job_id]

    def _existing_job_dir(self, job_id: str) -> Path | None:
        if not JOB_ID_PATTERN.match(job_id):
            return None
        job_dir = self.state_dir / job_id
        return job_dir if (job_dir / STATE_FILE).exists() else None

    def _status(self, job_dir: Path) -> JobStatus:
        return to_job_status(job_dir, check_alive(job_dir, read_state(job_dir)))

    def _machine(self, job_dir: Path) -> MachineSpec | None:
        """The machine of the job's request (job.json): what the run would be billed as on
        Cloud Batch. None when job.json is unreadable."""
        key = job_dir.name
        if key not in self._machines:
            try:
                job = batch_v1.Job.from_json(
                    (job_dir / JOB_FILE).read_text(), ignore_unknown_fields=True
                )
            except (OSError, ValueError) as error:
                logger.warning("job %s: cannot read %s: %s", key, JOB_FILE, error)
                return None
            self._machines[key] = machine_of_job(job)
        return self._machines[key]
