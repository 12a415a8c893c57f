"""A job's actual cost: every attempt's run time x the hourly price of the job's machine."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from robotoff_batch.batch.engine import JobState, JobStatus, MachineSpec
from robotoff_batch.config.models import HourlyRate, UnknownPriceError, hourly_rate

LOCAL_ENGINE = "local"
CEILING_LABEL = "production worst-case ceiling"
# How many unknown reasons one explanation lists before "and N more".
_MAX_REASONS = 3


def usd(amount: float) -> str:
    """Dollars with the digits that matter: $43.02, $0.8963, $0.000112 (a short local run)."""
    if amount == 0:
        return "$0.00"
    if abs(amount) >= 10:
        return f"${amount:.2f}"
    return f"${amount:.4f}" if abs(amount) >= 0.01 else f"${amount:.6f}"


@dataclass(frozen=True)
class AttemptCost:
    task: int
    attempt: int
    start: datetime
    seconds: float
    usd: float


@dataclass(frozen=True)
class ActualCost:
    """The cost of one job from its tasks' run times; ``unknown`` says why it is not known."""

    job_id: str
    engine: str
    machine: MachineSpec | None
    rate: HourlyRate | None
    attempts: tuple[AttemptCost, ...] = ()
    unknown: str | None = None
    in_progress: bool = False  # the job has not ended: a cost so far

    @property
    def known(self) -> bool:
        return self.unknown is None

    @property
    def total_usd(self) -> float | None:
        """The cost in USD; None when unknown (never 0 for "we do not know")."""
        return float(sum((a.usd for a in self.attempts), 0.0)) if self.known else None

    @property
    def task_seconds(self) -> float:
        """Task run time of the attempts whose times are known."""
        return float(sum((a.seconds for a in self.attempts), 0.0))

    @property
    def simulated(self) -> bool:
        """The local runner ran it: nothing was billed, the figure is a what-if."""
        return self.engine == LOCAL_ENGINE

    @property
    def label(self) -> str:
        """What the figure is: billed (Cloud Batch) or what it would have cost (local)."""
        so_far = " so far" if self.in_progress else ""
        if self.simulated:
            return (
                f"would-be cost{so_far} (local runner, nothing billed: the same run on the "
                "configured machine in Cloud Batch)"
            )
        return f"actual cost{so_far}"

    def explain(self) -> str:
        """``$0.0249 = 1 attempt(s), 100.0 s of task time x $0.896306/h (...)``, or why the
        cost is unknown."""
        if not self.known:
            return f"unknown: {self.unknown}"
        total = self.total_usd or 0.0
        if not self.attempts:
            return "$0.00: no task ran"
        assert self.rate is not None and self.machine is not None
        rate = self.rate
        spot = (
            f" x {rate.spot_fraction} (SPOT) = ${rate.effective_usd:.6f}/h"
            if rate.spot_fraction is not None
            else ""
        )
        estimate = ", price is an estimate" if rate.estimate else ""
        return (
            f"{usd(total)} = {len(self.attempts)} attempt(s), {self.task_seconds:.1f} s of task "
            f"time x ${rate.hourly_usd:.6f}/h{spot} ({self.machine.describe()}{estimate})"
        )

    def per_1000(self, products: int | None) -> float | None:
        """USD per 1,000 products; None when the cost or the count is unknown (or 0)."""
        total = self.total_usd
        if total is None or not products:
            return None
        return total / products * 1000


def _reached_running(status: JobStatus) -> bool:
    return any(e.new_state is JobState.RUNNING for e in status.status_events) or (
        status.state is JobState.RUNNING
    )


def actual_cost(status: JobStatus, *, engine: str, now: datetime | None = None) -> ActualCost:
    """The cost of ``status``'s job from its tasks' attempts x its machine's hourly price.

    For a job not ended, an attempt still running counts up to ``now`` (a cost so far); for
    an ended job, an attempt without a start or an end makes the cost unknown."""
    in_progress = not status.state.is_terminal
    base: dict[str, Any] = {
        "job_id": status.job_id,
        "engine": engine,
        "machine": status.machine,
        "in_progress": in_progress,
    }
    if status.machine is None:
        return ActualCost(
            **base, rate=None, unknown="the engine does not report the job's machine type"
        )
    m = status.machine
    try:
        rate = hourly_rate(
            m.machine_type,
            provisioning_model=m.provisioning_model,
            accelerators_type=m.accelerators_type,
            accelerators_count=m.accelerators_count,
        )
    except UnknownPriceError as exc:
        return ActualCost(**base, rate=None, unknown=str(exc.args[0]))
    if status.state is JobState.DELETED:
        return ActualCost(
            **base, rate=rate, unknown="the job was deleted: its task run times are gone"
        )
    at = (now or datetime.now(UTC)) if in_progress else None
    attempts: list[AttemptCost] = []
    missing: list[str] = []
    for task in status.tasks:
        if task.attempts > len(task.runs):
            missing.append(
                f"task {task.index}: {task.attempts} attempt(s), run times reported for "
                f"{len(task.runs)}"
            )
        for run in task.runs:
            seconds = run.duration_s(at)
            if seconds is None or run.start is None:
                what = "start" if run.start is None else "end"
                missing.append(f"task {task.index} attempt {run.attempt}: no {what} time")
                continue
            attempts.append(
                AttemptCost(
                    task=task.index,
                    attempt=run.attempt,
                    start=run.start,
                    seconds=seconds,
                    usd=seconds / 3600 * rate.effective_usd,
                )
            )
    if not attempts and not missing and _reached_running(status):
        missing.append("the job ran but the engine reported no task run times")
    unknown = None
    if missing:
        more = len(missing) - _MAX_REASONS
        unknown = "; ".join(missing[:_MAX_REASONS]) + (f"; and {more} more" if more > 0 else "")
    return ActualCost(**base, rate=rate, attempts=tuple(attempts), unknown=unknown)


# -- what the launch run recorded ------------------------------------------------------------
