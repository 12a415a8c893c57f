"""The engine-neutral types: job states, exit reasons, run duration."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from robotoff_batch.batch.engine import JobState, JobStatus, StatusEvent, TaskStatus

T0 = datetime(2026, 1, 5, 10, 0, tzinfo=UTC)


def at(seconds: float, state: JobState | None, type_: str = "STATUS_CHANGED") -> StatusEvent:
    return StatusEvent(
        time=T0 + timedelta(seconds=seconds), type=type_, description="", new_state=state
    )


def test_terminal_and_stopping_states() -> None:
    terminal = {s for s in JobState if s.is_terminal}
    assert terminal == {JobState.SUCCEEDED, JobState.FAILED, JobState.CANCELLED, JobState.DELETED}
    stopping = {s for s in JobState if s.is_stopping}
    assert stopping == {JobState.DELETION_IN_PROGRESS, JobState.CANCELLATION_IN_PROGRESS}
    # Cloud Batch's own names, so a batch_v1 state converts by name.
    assert JobState("CANCELLATION_IN_PROGRESS") is JobState.CANCELLATION_IN_PROGRESS
    assert JobState("CANCELLED") is JobState.CANCELLED


def test_exit_code_50000_is_told_from_the_containers() -> None:
    assert TaskStatus(index=0, state="FAILED", exit_code=50000).exit_reason == (
        "Cloud Batch: the task failed for an unspecified Batch reason"
    )
    assert TaskStatus(index=0, state="FAILED", exit_code=5).exit_reason == (
        "container exited with code 5"
    )


def test_run_duration_from_running_to_the_terminal_event() -> None:
    status = JobStatus(
        job_id="j",
        state=JobState.FAILED,
        status_events=(
            at(0, JobState.QUEUED),
            at(30, JobState.SCHEDULED),
            at(90, JobState.RUNNING),
            at(100, None, "TASK_STATE_CHANGED"),
            at(150, JobState.RUNNING),  # a second RUNNING does not move the start
            at(390, JobState.FAILED),
        ),
        create_time=T0,
        update_time=T0 + timedelta(seconds=999),
    )
    assert status.run_duration_s == 300.0


def test_run_duration_without_running_starts_at_creation() -> None:
    status = JobStatus(
        job_id="j",
        state=JobState.FAILED,
        status_events=(at(0, JobState.QUEUED), at(45, JobState.FAILED)),
        create_time=T0 - timedelta(seconds=5),
    )
    assert status.run_duration_s == 50.0


def test_run_duration_is_none_until_the_job_ends() -> None:
    running = JobStatus(
        job_id="j",
        state=JobState.CANCELLATION_IN_PROGRESS,
        status_events=(at(0, JobState.RUNNING), at(5, JobState.CANCELLATION_IN_PROGRESS)),
        create_time=T0,
    )
    assert running.run_duration_s is None
    cancelled = JobStatus(
        job_id="j",
        state=JobState.CANCELLED,
        status_events=(*running.status_events, at(8, JobState.CANCELLED)),
        create_time=T0,
    )
    assert cancelled.run_duration_s == 8.0
    # No terminal event (a job that vanished): until its last update, else unknown.
    assert JobStatus(job_id="j", state=JobState.DELETED).run_duration_s is None
    vanished = JobStatus(
        job_id="j",
        state=JobState.DELETED,
        create_time=T0,
        update_time=T0 + timedelta(seconds=12),
    )
    assert vanished.run_duration_s == 12.0
