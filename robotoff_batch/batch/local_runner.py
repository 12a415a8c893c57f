"""The local runner: an embedded Cloud Batch for when no cloud account is configured.

:class:`LocalBatchEngine` takes the same ``batch_v1.CreateJobRequest`` as Cloud Batch and runs
its tasks as local processes: the container image is played by a local command
(``commands_by_image``), the container's ``commands`` are appended as its arguments, and each
task gets the request's environment plus ``BATCH_TASK_INDEX``, ``BATCH_TASK_COUNT``,
``BATCH_JOB_ID`` and ``BATCH_TASK_RETRY_ATTEMPT``, as on Batch.

A submitted job is a directory under ``state_dir`` (format in
:mod:`robotoff_batch.batch.local_supervisor`) run by a detached supervisor process, so it
outlives the process that submitted it and any other process (the Dagster daemon's sensor, the
CLI) sees its state. Honoured from the request: task_count, parallelism, max_retry_count,
max_run_duration (a task over it is killed and gets Batch's exit code 50005), lifecycle
policies (RETRY_TASK / FAIL_TASK on exit codes), environment variables, secret variables
(``projects/*/secrets/NAME/versions/*`` is read from the environment variable NAME of the
submitting process; the value only ever reaches the task's environment) and labels. Ignored:
the allocation policy (machine type, accelerators, location), the logs policy (logs always go
to ``<job_dir>/logs/``) and a container ``entrypoint`` override (the mapped command plays the
image's entrypoint).

Run the supervisor by hand with ``python -m robotoff_batch.batch.local_runner supervise DIR``.
"""

from __future__ import annotations

import argparse
import contextlib
import errno
import logging
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Mapping, Sequence
from dataclasses import replace
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from google.cloud import batch_v1

from robotoff_batch.batch.engine import (
    BatchEngineError,
    JobNotFoundError,
    JobState,
    JobStatus,
    MachineSpec,
    StatusEvent,
    TaskAttempt,
    TaskStatus,
)
from robotoff_batch.batch.local_supervisor import (
    JOB_FILE,
    LOCK_FILE,
    LOGS_DIR,
    STATE_FILE,
    SUPERVISOR_DIED,
    SUPERVISOR_LOG,
    atomic_write_text,
    event,
    is_same_process_alive,
    kill_task_group,
    main_supervise,
    new_state,
    parse_time,
    process_start_ticks,
    read_state,
    set_job_state,
    settle_stopping,
    stop_orphaned_tasks,
    updating,
    write_state,
)
from robotoff_batch.batch.request import JOB_ID_PATTERN, machine_of_job

logger = logging.getLogger(__name__)

# A job whose supervisor was never recorded this long after submission is declared dead.
SUPERVISOR_START_TIMEOUT_S = 60.0
# How long cancel waits for the supervisor to stop its tasks before killing everything itself.
CANCEL_GRACE_S = 5.0
# log_tail reads at most this much of the end of a task log.
LOG_TAIL_MAX_BYTES = 64 * 1024
_PACKAGE_ROOT = Path(__file__).resolve().parents[2]


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
        argv, task_count = self._plan(request)

        # Build the job directory aside, then publish it with one rename: it fails if the
        # directory exists (another submit won), so a job is never started twice.
        staging = Path(tempfile.mkdtemp(dir=self.state_dir, prefix=f".submit-{job_id}-"))
        try:
            (staging / LOGS_DIR).mkdir()
            (staging / LOCK_FILE).touch()
            atomic_write_text(staging / JOB_FILE, batch_v1.Job.to_json(request.job, indent=2))
            state = new_state(
                job_id=job_id,
                parent=request.parent,
                labels=dict(request.job.labels),
                task_count=task_count,
            )
            state["runner"] = {"argv": list(argv), "poll_interval_s": self.poll_interval_s}
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
                job_labels = state.get("labels", {})
                if any(job_labels.get(k) != v for k, v in labels.items()):
                    continue
                found.append(self._to_status(job_dir, self._check_alive(job_dir, state)))
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
            current = JobState(state["state"])
            if current.is_terminal:
                logger.info("cancel: job %s already %s", job_id, current)
                return
            stopping = current.is_stopping
            if not stopping:
                set_job_state(state, JobState.CANCELLATION_IN_PROGRESS, "Cancellation requested.")
            supervisor = dict(state.get("supervisor") or {})
        if stopping:
            logger.info("cancel: job %s is already %s", job_id, current)
            # Settles it if whoever was stopping it died (supervisor and canceller gone).
            self._status(job_dir)
            return
        pid: int = supervisor.get("pid") or 0
        ticks: int | None = supervisor.get("start_ticks")
        logger.info("cancelling job %s (supervisor pid %s)", job_id, pid or "not started")
        if pid and is_same_process_alive(pid, ticks):
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.kill(pid, signal.SIGTERM)
            deadline = time.monotonic() + CANCEL_GRACE_S
            while time.monotonic() < deadline and is_same_process_alive(pid, ticks):
                self._reap_supervisors()
                time.sleep(0.05)
            if is_same_process_alive(pid, ticks):
                logger.warning("supervisor %s of job %s ignored SIGTERM: killing it", pid, job_id)
                with contextlib.suppress(ProcessLookupError, PermissionError):
                    os.kill(pid, signal.SIGKILL)
        self._reap_supervisors()
        task_pids = self._finish_cancellation(job_dir)
        deadline = time.monotonic() + CANCEL_GRACE_S
        while time.monotonic() < deadline and any(
            process_start_ticks(p) is not None for p in task_pids
        ):
            time.sleep(0.05)

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
        path = self._tail_log_path(job_dir, state)
        if path is None:
            return None
        try:
            with open(path, "rb") as handle:
                size = handle.seek(0, os.SEEK_END)
                start = max(0, size - LOG_TAIL_MAX_BYTES)
                handle.seek(start)
                data = handle.read(LOG_TAIL_MAX_BYTES)
        except FileNotFoundError:
            return None
        text_lines = data.decode("utf-8", errors="replace").splitlines()
        if start > 0 and text_lines:
            text_lines = text_lines[1:]  # the first line was cut by the seek
        return "\n".join(text_lines[-lines:]) if lines > 0 else ""

    # -- helpers for the CLI and tests ----------------------------------------------------------

    def wait(self, *, job_id: str, timeout_s: float) -> JobStatus:
        """Block until the job is terminal (SUCCEEDED, FAILED, CANCELLED); raises TimeoutError.

        Reads the state directly: not counted in :attr:`calls`.
        """
        deadline = time.monotonic() + timeout_s
        while True:
            self._reap_supervisors()
            job_dir = self._existing_job_dir(job_id)
            if job_dir is None:
                raise JobNotFoundError(f"no local batch job {job_id!r} under {self.state_dir}")
            status = self._status(job_dir)
            if status.state.is_terminal:
                return status
            if time.monotonic() >= deadline:
                raise TimeoutError(
                    f"local batch job {job_id} still {status.state} after {timeout_s:g}s"
                )
            time.sleep(min(self.poll_interval_s, 0.1))

    def job_dir(self, job_id: str) -> Path:
        """Where the job's state, request and logs live."""
        return self.state_dir / job_id

    def close(self) -> None:
        """Reap finished supervisors. Running jobs are left alone: they outlive the engine."""
        self._reap_supervisors()

    # -- internals -------------------------------------------------------------------------------

    def _plan(self, request: batch_v1.CreateJobRequest) -> tuple[tuple[str, ...], int]:
        """Check the request can run here; the task argv and task count."""
        job = request.job
        if len(job.task_groups) != 1:
            raise BatchEngineError(
                f"the local runner runs exactly one task group, got {len(job.task_groups)}"
            )
        group = job.task_groups[0]
        runnables = group.task_spec.runnables
        if len(runnables) != 1 or "container" not in runnables[0]:
            raise BatchEngineError("the local runner runs exactly one container runnable per task")
        container = runnables[0].container
        image = container.image_uri
        if image not in self.commands_by_image:
            known = ", ".join(sorted(self.commands_by_image)) or "none"
            raise BatchEngineError(
                f"container image {image!r} has no local command; known images: {known}"
            )
        if container.entrypoint:
            logger.warning(
                "entrypoint override %r of %s is ignored: the local command plays the image",
                container.entrypoint,
                image,
            )
        if group.task_count < 0 or group.parallelism < 0:
            raise BatchEngineError("task_count and parallelism must not be negative")
        argv = (*self.commands_by_image[image], *container.commands)
        return argv, int(group.task_count) or 1

    def _start_supervisor(self, job_id: str, job_dir: Path) -> None:
        """Start the detached supervisor (own session, so it survives our exit and signals)."""
        env = dict(os.environ)
        env["PYTHONPATH"] = os.pathsep.join(
            p for p in (str(_PACKAGE_ROOT), env.get("PYTHONPATH", "")) if p
        )
        try:
            with open(job_dir / SUPERVISOR_LOG, "ab") as log:
                process = subprocess.Popen(
                    [
                        self.python,
                        "-m",
                        "robotoff_batch.batch.local_runner",
                        "supervise",
                        str(job_dir),
                    ],
                    stdin=subprocess.DEVNULL,
                    stdout=log,
                    stderr=subprocess.STDOUT,
                    start_new_session=True,
                    env=env,
                    cwd=job_dir,
                )
        except OSError as error:
            logger.error("cannot start the supervisor of job %s: %s", job_id, error)
            with updating(job_dir) as state:
                state["status_events"].append(
                    event(SUPERVISOR_DIED, f"local supervisor could not start: {error}")
                )
                set_job_state(state, JobState.FAILED)
            return
        self._supervisors[job_id] = process
        ticks = process_start_ticks(process.pid)
        with updating(job_dir) as state:
            if not (state.get("supervisor") or {}).get("pid"):
                state["supervisor"] = {"pid": process.pid, "start_ticks": ticks}
        logger.info("job %s: supervisor pid %d", job_id, process.pid)

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
        return self._to_status(job_dir, self._check_alive(job_dir, read_state(job_dir)))

    def _check_alive(self, job_dir: Path, state: dict[str, Any]) -> dict[str, Any]:
        """Settle a job whose supervisor is gone without ending it (crash, kill -9, reboot)."""
        if not self._supervisor_lost(state):
            return state
        with updating(job_dir) as fresh:
            if not self._supervisor_lost(fresh):
                return fresh
            if JobState(fresh["state"]).is_stopping:
                settle_stopping(fresh)
            else:
                stop_orphaned_tasks(fresh)
                pid = (fresh.get("supervisor") or {}).get("pid")
                reason = (
                    f"local supervisor died (pid {pid}); see {SUPERVISOR_LOG}"
                    if pid
                    else "local supervisor never started"
                )
                logger.error("job %s: %s", fresh["job_id"], reason)
                fresh["status_events"].append(event(SUPERVISOR_DIED, reason))
                set_job_state(fresh, JobState.FAILED)
            return fresh

    @staticmethod
    def _supervisor_lost(state: Mapping[str, Any]) -> bool:
        if JobState(state["state"]).is_terminal:
            return False
        supervisor = state.get("supervisor") or {}
        pid = supervisor.get("pid")
        if not pid:
            created = parse_time(state.get("create_time"))
            age = (datetime.now(UTC) - created).total_seconds() if created else 0.0
            return age > SUPERVISOR_START_TIMEOUT_S
        return not is_same_process_alive(pid, supervisor.get("start_ticks"))

    def _finish_cancellation(self, job_dir: Path) -> list[int]:
        """Kill whatever tasks are still recorded as running and, unless the supervisor did,
        end the job CANCELLED. Returns the pids of the tasks it found running."""
        with updating(job_dir) as state:
            task_pids = [t["pid"] for t in state["tasks"] if t.get("pid")]
            for task in state["tasks"]:
                kill_task_group(task.get("pid"), task.get("start_ticks"))
            settle_stopping(state)
        return task_pids

    @staticmethod
    def _tail_log_path(job_dir: Path, state: Mapping[str, Any]) -> Path | None:
        """The log :meth:`log_tail` reads: the failed task's last attempt, else the last one."""
        tasks = sorted(state.get("tasks", []), key=lambda t: t["index"])
        failed = next(
            (t for t in tasks if t.get("exit_code") not in (None, 0) and t.get("attempts")), None
        )
        if failed is not None:
            index, attempt = failed["index"], failed["attempts"]
        else:
            runs = [
                (
                    parse_time(h.get("start_time")) or datetime.min.replace(tzinfo=UTC),
                    t["index"],
                    h["attempt"],
                )
                for t in tasks
                for h in t.get("history", [])
            ]
            if not runs:
                return None
            _, index, attempt = max(runs)
        path = job_dir / LOGS_DIR / f"task-{index}-attempt-{attempt}.log"
        return path if path.is_file() else None

    def _to_status(self, job_dir: Path, state: Mapping[str, Any]) -> JobStatus:
        events = tuple(
            StatusEvent(
                time=parse_time(e["time"]) or datetime.now(UTC),
                type=e["type"],
                description=e["description"],
                new_state=JobState(e["new_state"]) if e.get("new_state") else None,
                task_exit_code=e.get("task_exit_code"),
                task_index=e.get("task_index"),
            )
            for e in state["status_events"]
        )
        tasks = tuple(
            TaskStatus(
                index=t["index"],
                state=t["state"],
                exit_code=t.get("exit_code"),
                attempts=t.get("attempts", 0),
                runs=tuple(
                    TaskAttempt(
                        attempt=h["attempt"],
                        start=parse_time(h.get("start_time")),
                        end=parse_time(h.get("end_time")),
                        exit_code=h.get("exit_code"),
                    )
                    for h in t.get("history", [])
                ),
            )
            for t in state["tasks"]
        )
        return JobStatus(
            job_id=state["job_id"],
            state=JobState(state["state"]),
            labels=dict(state.get("labels", {})),
            status_events=events,
            tasks=tasks,
            create_time=parse_time(state.get("create_time")),
            update_time=parse_time(state.get("update_time")),
            log_uri=(job_dir / LOGS_DIR).as_uri(),
            uid=state.get("uid"),
        )

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


def main(argv: Sequence[str] | None = None) -> int:
    """``python -m robotoff_batch.batch.local_runner supervise <job_dir>``."""
    parser = argparse.ArgumentParser(prog="python -m robotoff_batch.batch.local_runner")
    commands = parser.add_subparsers(dest="command", required=True)
    supervise = commands.add_parser("supervise", help="run one job's tasks (detached process)")
    supervise.add_argument("job_dir")
    args = parser.parse_args(argv)
    if args.command == "supervise":
        return main_supervise(args.job_dir)
    return 2  # pragma: no cover (argparse refuses other commands)


if __name__ == "__main__":
    sys.exit(main())
