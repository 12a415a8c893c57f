"""``robotoff-batch smoke JOB_TYPE``: one tiny job on the job type's real resources.

What an operator runs before the first real job (after ``doctor``). The job has the job type's
machine, GPUs, boot image and disk, service account, network, labels and image, but one task,
no retry and a 15-minute limit, and instead of the job's work it runs a few lines of Python
(in the job type's own image, which has ``python3`` and ``google-cloud-storage``) that:

- run ``nvidia-smi`` and fail with exit code 10 when a GPU job's container cannot see its GPU;
- write a probe file to the staging bucket, as the jobs' service account (exit code 11 when
  it cannot);
- print a line naming the job (``SMOKE_LOG_MARKER``);

then the command follows the job, reads the probe back, waits for that line to arrive in the
job's log (Cloud Logging in production: the jobs' account needs ``roles/logging.logWriter``),
and prints the outcome and the cost.
On the local runner the same lines run as a local process: a CPU stand-in (no GPU expected).

The smoke job is labelled ``job-type: <job-type>-smoke``, so the sensor that follows the job
type's real jobs (and imports their output) never picks it up.
"""

from __future__ import annotations

import json
import sys
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime

from google.cloud import batch_v1

from robotoff_batch.batch.engine import BatchEngine, JobState, JobStatus
from robotoff_batch.batch.request import build_create_job_request, make_job_id
from robotoff_batch.config.models import BatchResources, worst_case_cost
from robotoff_batch.staging import Staging, StagingError

SMOKE_MAX_RUN_DURATION = "15m"
GPU_NOT_VISIBLE_EXIT_CODE = 10
BUCKET_UNREACHABLE_EXIT_CODE = 11
CHECK_FAILED_EXIT_CODE = 12
LOCAL_SMOKE_IMAGE = "local/robotoff-batch-smoke:cpu"
SMOKE_EXIT_REASONS = {
    GPU_NOT_VISIBLE_EXIT_CODE: "the container cannot see the GPU (nvidia-smi failed or missing)",
    BUCKET_UNREACHABLE_EXIT_CODE: "the container could not write to the staging bucket",
    CHECK_FAILED_EXIT_CODE: "the job type's own check in its image failed (see check: lines)",
}

# Runs inside the job's container (python3, and google-cloud-storage for gs://): stdlib only
# otherwise, so that it also runs as the local runner's CPU stand-in.
SMOKE_TASK_SOURCE = r"""
import json, os, shutil, socket, subprocess, sys
out = os.environ["SMOKE_OUTPUT_URI"]
report = {"host": socket.gethostname(), "task": os.environ.get("BATCH_TASK_INDEX"), "gpu": None}
smi = shutil.which("nvidia-smi")
if smi:
    r = subprocess.run([smi, "--query-gpu=name,driver_version,memory.total",
                        "--format=csv,noheader"], capture_output=True, text=True)
    print(r.stdout.strip() or r.stderr.strip(), flush=True)
    if r.returncode != 0:
        sys.exit(10)
    report["gpu"] = r.stdout.strip()
elif os.environ.get("SMOKE_EXPECT_GPU") == "1":
    print("nvidia-smi not found: the GPU is not visible in the container", file=sys.stderr)
    sys.exit(10)
check = json.loads(os.environ.get("SMOKE_CHECK_ARGV") or "null")
failed_check = False
if check:
    r = subprocess.run(check, capture_output=True, text=True)
    sys.stderr.write(r.stderr[-20000:])
    lines = [l for l in r.stdout.splitlines() if l.startswith("{")]
    try:
        report["check"] = json.loads(lines[-1]) if lines else {"failed": ["no report"]}
    except ValueError:
        report["check"] = {"failed": ["unreadable report"], "output": r.stdout[-2000:]}
    report["check_exit_code"] = r.returncode
    print(json.dumps(report["check"]), flush=True)
    failed_check = r.returncode != 0
data = json.dumps(report).encode()
try:
    if out.startswith("gs://"):
        from google.cloud import storage
        bucket, _, key = out[5:].partition("/")
        storage.Client().bucket(bucket).blob(key).upload_from_string(data, if_generation_match=0)
    else:
        path = out[7:] if out.startswith("file://") else out
        os.makedirs(os.path.dirname(path), exist_ok=True)
        with open(path, "wb") as handle:
            handle.write(data)
except Exception as exc:
    print(f"cannot write {out}: {type(exc).__name__}: {exc}", file=sys.stderr)
    sys.exit(11)
print(f"smoke: wrote {out}", flush=True)
if failed_check:
    print("the job type's check failed: " + ", ".join(report["check"].get("failed", [])),
          file=sys.stderr)
    sys.exit(12)
print(os.environ.get("SMOKE_LOG_MARKER", "smoke log line"), flush=True)
print("smoke ok", flush=True)
"""
# How long the smoke command waits for the task's line to arrive in its log (Cloud Logging
# ingests within seconds, documented as not instantaneous).
LOG_WAIT_S = 120.0


@dataclass(frozen=True)
class SmokeResult:
    job_id: str
    status: JobStatus
    probe: dict[str, object] | None
    worst_case_usd: float
    cost_usd: float | None
    local: bool
    # Whether the task's marker line arrived in its log (None: not looked for, the job failed)
    log_seen: bool | None = None

    @property
    def ok(self) -> bool:
        if self.status.state is not JobState.SUCCEEDED or self.probe is None:
            return False
        if self.log_seen is False:
            return False
        check = self.probe.get("check")
        return not (isinstance(check, dict) and check.get("failed"))

    def report(self) -> list[str]:
        lines = [f"smoke job {self.job_id}: {self.status.state.value}"]
        if self.probe is not None:
            gpu = self.probe.get("gpu")
            if self.local:
                lines.append("gpu: not checked (local runner: CPU stand-in)")
            else:
                lines.append(f"gpu: {gpu or 'none (CPU job)'}")
            lines.append("bucket: the job wrote its probe, read back here")
            check = self.probe.get("check")
            if isinstance(check, dict):
                for name, outcome in (check.get("checks") or {}).items():
                    mark = "ok" if outcome.get("ok") else "FAILED"
                    lines.append(f"check: {mark} {name}: {outcome.get('detail')}")
                for key in ("load_s", "texts_per_s", "predictor_version", "error"):
                    if key in check:
                        lines.append(f"check: {key} {check[key]}")
        if self.log_seen is True:
            lines.append("logs: the task's line arrived in its log (engine.log_tail)")
        elif self.log_seen is False:
            lines.append(
                "logs: FAILED: the task's line never arrived in its log: in production the "
                "jobs' account lacks roles/logging.logWriter (run `robotoff-batch doctor`), "
                "so a failed job would show no log tail"
            )
        for task in self.status.tasks:
            if task.exit_code in SMOKE_EXIT_REASONS:
                lines.append(f"task {task.index}: {SMOKE_EXIT_REASONS[task.exit_code]}")
        if not self.ok and self.status.state is not JobState.SUCCEEDED:
            lines.append(self.status.failure_summary)
        cost = f"${self.cost_usd:.4f}" if self.cost_usd is not None else "unknown"
        lines.append(f"cost: {cost} (worst case ${self.worst_case_usd:.2f})")
        return lines


def smoke_resources(resources: BatchResources) -> BatchResources:
    """The job type's resources, cut to one task, no retry, 15 minutes."""
    data = resources.model_dump()
    data.update(
        task_count=1, parallelism=1, max_retry_count=0, max_run_duration=SMOKE_MAX_RUN_DURATION
    )
    return BatchResources.model_validate(data)


def log_marker(job_id: str) -> str:
    """The line the smoke task prints, looked for in its log."""
    return f"robotoff-batch smoke {job_id}: log line"


def wait_for_log_line(
    engine: BatchEngine, job_id: str, *, wait_s: float, poll_s: float = 5.0
) -> bool:
    """True once the job's log holds its marker line; False after ``wait_s``."""
    deadline = time.monotonic() + wait_s
    while True:
        tail = engine.log_tail(job_id=job_id, lines=20)
        if tail and log_marker(job_id) in tail:
            return True
        if time.monotonic() >= deadline:
            return False
        time.sleep(min(poll_s, max(0.0, deadline - time.monotonic())))


def build_smoke_request(
    resources: BatchResources,
    *,
    job_type: str,
    project: str,
    probe_uri: str,
    job_id: str,
    local: bool,
    task_environment: Mapping[str, str] | None = None,
    check_argv: Sequence[str] | None = None,
) -> batch_v1.CreateJobRequest:
    """The smoke job's request: the job type's resources, cut by :func:`smoke_resources`,
    with the variables its launch gives its tasks (e.g. the staged weights) and its own
    check to run in the image (``check_argv``, e.g. the vLLM engine's GPU check)."""
    env = {
        **dict(task_environment or {}),
        "SMOKE_OUTPUT_URI": probe_uri,
        "SMOKE_LOG_MARKER": log_marker(job_id),
        "SMOKE_EXPECT_GPU": "1" if resources.accelerators_type and not local else "0",
    }
    if check_argv:
        env["SMOKE_CHECK_ARGV"] = json.dumps(list(check_argv))
    request = build_create_job_request(
        smoke_resources(resources),
        job_type=f"{job_type}-smoke",
        job_id=job_id,
        project=project,
        environment=env,
        labels={"smoke": "true"},
    )
    container = request.job.task_groups[0].task_spec.runnables[0].container
    # The job type's image, its entrypoint replaced by the smoke lines (longer than a config's
    # commands may be, hence set here).
    container.entrypoint = "python3"
    container.commands = ["-c", SMOKE_TASK_SOURCE]
    if local:  # the local runner plays images with local commands: the stand-in's
        container.image_uri = LOCAL_SMOKE_IMAGE
    return request


def run_smoke(
    *,
    job_type: str,
    resources: BatchResources,
    engine: BatchEngine,
    staging: Staging,
    project: str,
    timeout_s: float = 1800.0,
    poll_s: float = 5.0,
    on_change: Callable[[str, str], None] | None = None,
    now: Callable[[], datetime] = lambda: datetime.now(UTC),
    task_environment: Mapping[str, str] | None = None,
    check_argv: Sequence[str] | None = None,
    log_wait_s: float = LOG_WAIT_S,
) -> SmokeResult:
    """Submit the smoke job, follow it to its end, read its probe back and look for its line
    in its log (at most ``log_wait_s``)."""
    local = engine.name == "local"
    if local:
        register = getattr(engine, "commands_by_image", None)
        if isinstance(register, dict):
            register[LOCAL_SMOKE_IMAGE] = (sys.executable,)
    small = smoke_resources(resources)
    job_id = make_job_id(f"smoke-{job_type}", launched_at=now())
    probe_uri = staging.job_uri(job_type=f"{job_type}-smoke", job_id=job_id) + "/probe.json"
    request = build_smoke_request(
        small,
        job_type=job_type,
        project=project,
        probe_uri=probe_uri,
        job_id=job_id,
        local=local,
        task_environment=task_environment,
        check_argv=check_argv,
    )
    status = engine.submit(request=request)
    last = status.state
    deadline = time.monotonic() + timeout_s
    while not status.state.is_terminal:
        if time.monotonic() > deadline:
            engine.cancel(job_id=job_id)
            status = engine.get_job(job_id=job_id)
            break
        time.sleep(poll_s)
        status = engine.get_job(job_id=job_id)
        if status.state is not last and on_change is not None:
            on_change(last.value, status.state.value)
        last = status.state
    if status.state.is_terminal:
        status = engine.get_job(job_id=job_id)  # with the tasks' exit codes
    probe: dict[str, object] | None = None
    if status.state in (JobState.SUCCEEDED, JobState.FAILED):  # a failed check wrote it too
        try:
            with staging.open_read(uri=probe_uri) as handle:
                probe = json.loads(handle.read())
        except (StagingError, ValueError, OSError):
            probe = None
    log_seen = None
    if status.state is JobState.SUCCEEDED:
        log_seen = wait_for_log_line(engine, job_id, wait_s=log_wait_s, poll_s=min(poll_s, 5.0))
    cost = worst_case_cost(small)
    duration = status.run_duration_s
    actual = (
        cost.hourly_usd * (cost.spot_fraction or 1.0) * duration / 3600
        if duration is not None
        else None
    )
    return SmokeResult(
        job_id=job_id,
        status=status,
        probe=probe,
        worst_case_usd=cost.total_usd,
        cost_usd=actual,
        local=local,
        log_seen=log_seen,
    )


def smoke_command(job_type: str, timeout_s: float = 1800.0) -> None:
    """Submit a one-task job with the job type's resources that proves the GPU is visible in
    its container (nvidia-smi) and the staging bucket reachable; follow it; print the outcome
    and the cost. On the local runner: a CPU stand-in."""
    import typer

    from robotoff_batch.config.loader import JobConfigError, load_job_config
    from robotoff_batch.paths import JOB_CONFIGS_DIR
    from robotoff_batch.resources import build_resources, initialized

    path = JOB_CONFIGS_DIR / f"{job_type}.yaml"
    if not path.exists():
        typer.echo(f"unknown job type {job_type!r} (no {path})", err=True)
        raise typer.Exit(1)
    try:
        config = load_job_config(path).config
    except JobConfigError as exc:
        typer.echo(str(exc), err=True)
        raise typer.Exit(1) from None
    from robotoff_batch.job_types import load_registry
    from robotoff_batch.job_types.base import StagedFilesError

    resources = build_resources()
    engine_resource = initialized(resources["batch_engine"])
    staging = initialized(resources["staging"]).get_staging()
    local = engine_resource.kind == "local"
    registered = load_registry().get(job_type)
    task_environment: dict[str, str] = {}
    check_argv = None
    if registered is not None and not local:  # the local stand-in has no GPU, no image
        jt = registered.job_type
        try:
            task_environment = jt.task_environment(
                config, staging_root_uri=staging.root_uri, exists=lambda u: staging.exists(uri=u)
            )
        except StagedFilesError as exc:
            typer.echo(f"cannot smoke {job_type}: {exc}", err=True)
            raise typer.Exit(1) from None
        check_argv = jt.smoke_check_argv(config)
    result = run_smoke(
        task_environment=task_environment,
        check_argv=check_argv,
        job_type=job_type,
        resources=config.resources,
        engine=engine_resource.get_engine(),
        staging=staging,
        project=engine_resource.project,
        timeout_s=timeout_s,
        poll_s=1.0 if engine_resource.kind == "local" else 10.0,
        on_change=lambda old, new: typer.echo(f"  {old} -> {new}"),
    )
    for line in result.report():
        typer.echo(line)
    if not result.ok:
        raise typer.Exit(1)
