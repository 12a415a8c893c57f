"""The Google Cloud Batch engine, through ``google-cloud-batch``'s ``BatchServiceClient``.

What it does, and what the systems that came before learnt the hard way:

- :meth:`CloudBatchEngine.submit` is idempotent. Job ids are deterministic; a create that
  meets ``ALREADY_EXISTS`` (409) re-attaches to the existing job. Transient errors
  (``UNAVAILABLE``, ``DEADLINE_EXCEEDED``, 429 ``RESOURCE_EXHAUSTED``) are retried with
  exponential backoff, so a lost response (the server created the job, the client saw a
  deadline) is retried, meets ``ALREADY_EXISTS`` and re-attaches: exactly one job exists.
- :meth:`CloudBatchEngine.list_jobs` is ONE ``ListJobs`` call per poll, filtered by labels
  server-side, whatever the number of jobs (one page of up to 1000 jobs); never a ``GetJob``
  per job per tick.
- Status events are kept: a job can go QUEUED -> FAILED with no task at all (accelerator not
  available in the zone) or wait in SCHEDULED on a quota error that only the events show.
- :meth:`CloudBatchEngine.get_job` adds per-task exit codes (``ListTasks``); Batch's own codes
  50001-50006 are told from the container's by :attr:`TaskStatus.exit_reason`.

- :meth:`CloudBatchEngine.cancel` is ``CancelJob``: the job goes CANCELLATION_IN_PROGRESS then
  CANCELLED and stays listed with its status events. It falls back on ``DeleteJob`` (which
  erases the job and its history) only where ``CancelJob`` is refused (PERMISSION_DENIED) or
  unknown (UNIMPLEMENTED). It reads the job first and sends nothing for a job already
  finished, cancelling or being deleted.
- Every call fits in a Dagster sensor tick: per attempt :data:`DEFAULT_ATTEMPT_TIMEOUT_S`,
  retries bounded by :data:`DEFAULT_RETRY_BUDGET_S`, together under the sensor's 60 s
  evaluation timeout, so a slow API fails the call cleanly (BatchEngineError) instead of the
  tick being killed.

A job deleted behind our back simply disappears from ``list_jobs``; ``get_job`` then raises
:class:`~robotoff_batch.batch.engine.JobNotFoundError`.
"""

from __future__ import annotations

import logging
import re
import uuid
from collections.abc import Mapping, Sequence
from dataclasses import replace
from datetime import datetime
from typing import Any
from urllib.parse import quote

from google.api_core import exceptions as api_exceptions
from google.api_core.client_options import ClientOptions
from google.api_core.retry import Retry, if_exception_type
from google.auth.credentials import Credentials
from google.cloud import batch_v1

from robotoff_batch.batch.engine import (
    BatchEngineError,
    JobNotFoundError,
    JobState,
    JobStatus,
    StatusEvent,
    TaskAttempt,
    TaskStatus,
)
from robotoff_batch.batch.request import machine_of_job

logger = logging.getLogger(__name__)

TRANSIENT_ERRORS: tuple[type[Exception], ...] = (
    api_exceptions.ServiceUnavailable,  # UNAVAILABLE / 503
    api_exceptions.DeadlineExceeded,  # DEADLINE_EXCEEDED / 504
    api_exceptions.ResourceExhausted,  # RESOURCE_EXHAUSTED / 429 (quota, rate limit)
    api_exceptions.InternalServerError,  # INTERNAL / 500
)
LIST_PAGE_SIZE = 1000
# Dagster kills a sensor evaluation after 60 s (DAGSTER_SENSOR_GRPC_TIMEOUT_SECONDS). One engine
# call (an attempt, then retries until the budget is spent, then one last attempt) must end
# well inside it: worst case DEFAULT_RETRY_BUDGET_S + DEFAULT_ATTEMPT_TIMEOUT_S.
SENSOR_EVALUATION_TIMEOUT_S = 60.0
DEFAULT_RETRY_BUDGET_S = 25.0
DEFAULT_ATTEMPT_TIMEOUT_S = 15.0
DEFAULT_TASK_GROUP = "group0"

# request_id of CancelJob / DeleteJob: a uuid5 of the job name, so that a retried call (ours,
# or one whose response was lost) is recognised by Batch as the same request.
_REQUEST_ID_NAMESPACE = uuid.UUID("5b0f8a3e-2f4c-5d7e-9a61-0c3b7e2d4f18")
_NEW_STATE_RE = re.compile(r"\bfrom\s+([A-Z_]+)\s+to\s+([A-Z_]+)")
_PLAIN_LABEL_KEY = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")


def make_retry(
    *,
    initial: float = 1.0,
    maximum: float = 30.0,
    multiplier: float = 2.0,
    timeout: float = DEFAULT_RETRY_BUDGET_S,
) -> Retry:
    """Exponential backoff on the API's transient errors only, ``timeout`` seconds in all."""
    return Retry(
        predicate=if_exception_type(*TRANSIENT_ERRORS),
        initial=initial,
        maximum=maximum,
        multiplier=multiplier,
        timeout=timeout,
    )


def _quote(value: str) -> str:
    return '"' + value.replace("\\", "\\\\").replace('"', '\\"') + '"'


def labels_filter(labels: Mapping[str, str]) -> str:
    """The ``ListJobs`` filter matching every label: ``labels.app="x" AND labels."job-type"="y"``.

    Keys that are not plain identifiers (``job-type``, ``dagster-run-id``) are quoted, as the
    AIP-160 filter grammar requires for a field name containing ``-``.
    """
    clauses = []
    for key, value in sorted(labels.items()):
        field = key if _PLAIN_LABEL_KEY.match(key) else _quote(key)
        clauses.append(f"labels.{field}={_quote(value)}")
    return " AND ".join(clauses)


def _job_state(name: str) -> JobState:
    try:
        return JobState(name)
    except ValueError:
        return JobState.STATE_UNSPECIFIED


def _time(message: Any, field: str) -> datetime | None:
    """A proto-plus timestamp field, or None when unset."""
    if field not in message:
        return None
    value = getattr(message, field)
    return value if isinstance(value, datetime) and value.timestamp() > 0 else None


def _status_event(event: batch_v1.StatusEvent) -> StatusEvent:
    new_state: JobState | None = None
    match = _NEW_STATE_RE.search(event.description or "")
    if match and event.type_.upper().startswith("STATUS_CHANGED"):
        new_state = _job_state(match.group(2))
    exit_code = event.task_execution.exit_code if "task_execution" in event else None
    return StatusEvent(
        time=_time(event, "event_time") or datetime.fromtimestamp(0).astimezone(),
        type=event.type_,
        description=event.description,
        new_state=new_state,
        task_exit_code=exit_code,
    )


_TASK_NEW_STATE_RE = re.compile(r"\bto\s+([A-Z_]+)")
# Task states in which a VM is busy with the task.
_TASK_BUSY = frozenset({"ASSIGNED", "RUNNING"})


def _task_state_of(event: batch_v1.StatusEvent) -> str | None:
    """The task state an event moved the task to: its ``task_state``, else its description
    ("Task state is updated from ASSIGNED to RUNNING on zones/..."); None when neither says."""
    if "task_state" in event:
        name = batch_v1.TaskStatus.State(event.task_state).name
        if name != "STATE_UNSPECIFIED":
            return name
    match = _TASK_NEW_STATE_RE.search(event.description or "")
    return match.group(1) if match else None


def _event_timestamp(event: batch_v1.StatusEvent) -> float:
    when = _time(event, "event_time")
    return when.timestamp() if when is not None else 0.0


def task_attempts(events: Sequence[batch_v1.StatusEvent]) -> list[TaskAttempt]:
    """A task's attempts from its status events, oldest first. An attempt starts when a VM
    takes the task (ASSIGNED, which includes pulling the image; RUNNING when no ASSIGNED was
    reported) and ends at the next event that moves the task elsewhere (SUCCEEDED, FAILED, or
    PENDING for a retry), which carries the exit code: the time its VM was busy with it.

    An end seen without a start (events lost or trimmed) is an attempt with an unknown start;
    an attempt not ended has no end (still running, or its end was not reported). A second
    end of the same attempt (another event with its exit code) is not another attempt."""
    attempts: list[TaskAttempt] = []
    start: datetime | None = None
    running = False
    ended = False  # an attempt ended and no new one started since
    for event in sorted(events, key=_event_timestamp):
        when = _time(event, "event_time")
        state = _task_state_of(event)
        exit_code = event.task_execution.exit_code if "task_execution" in event else None
        if state in _TASK_BUSY:
            if not running:
                start, running, ended = when, True, False
            continue
        if running and (state is not None or exit_code is not None):
            attempts.append(TaskAttempt(len(attempts) + 1, start, when, exit_code))
            start, running, ended = None, False, True
        elif exit_code is not None and ended and attempts[-1].exit_code is None:
            attempts[-1] = replace(attempts[-1], exit_code=exit_code)
        elif exit_code is not None and not ended:
            attempts.append(TaskAttempt(len(attempts) + 1, None, when, exit_code))
            ended = True
    if running:
        attempts.append(TaskAttempt(len(attempts) + 1, start, None))
    return attempts


def _job_id_of(name: str) -> str:
    return name.rsplit("/", 1)[-1]


def request_id(action: str, job_name: str) -> str:
    """The deterministic ``request_id`` of ``action`` ("cancel", "delete") on ``job_name``."""
    return str(uuid.uuid5(_REQUEST_ID_NAMESPACE, f"{action}:{job_name}"))


class CloudBatchEngine:
    """:class:`~robotoff_batch.batch.engine.BatchEngine` on Google Cloud Batch."""

    name = "cloud-batch"

    def __init__(
        self,
        *,
        project: str,
        location: str,
        client: batch_v1.BatchServiceClient,
        retry: Retry | None = None,
        timeout: float = DEFAULT_ATTEMPT_TIMEOUT_S,
    ) -> None:
        """``timeout`` is per attempt; ``retry`` (see :func:`make_retry`) bounds the total."""
        self.project = project
        self.location = location
        self.client = client
        self.retry = retry if retry is not None else make_retry()
        self.timeout = timeout

    @classmethod
    def from_settings(
        cls,
        project: str,
        location: str,
        api_endpoint: str | None = None,
        credentials: Credentials | None = None,
        transport: str = "grpc",
        **kwargs: Any,
    ) -> CloudBatchEngine:
        """Build the real client: the credentials given, else ``GOOGLE_CREDENTIALS`` or ADC."""
        if credentials is None:
            from robotoff_batch.gcp_credentials import load_credentials

            credentials, _ = load_credentials()
        options = ClientOptions(api_endpoint=api_endpoint) if api_endpoint else None
        client = batch_v1.BatchServiceClient(
            credentials=credentials, transport=transport, client_options=options
        )
        return cls(project=project, location=location, client=client, **kwargs)

    @property
    def call_budget_s(self) -> float:
        """The longest one engine call can take: the retry budget plus one last attempt."""
        return float(self.retry.timeout or 0.0) + self.timeout

    @property
    def parent(self) -> str:
        return f"projects/{self.project}/locations/{self.location}"

    def job_name(self, job_id: str) -> str:
        return f"{self.parent}/jobs/{job_id}"

    # -- BatchEngine ------------------------------------------------------------------------

    def submit(self, *, request: batch_v1.CreateJobRequest) -> JobStatus:
        """Create the job, or re-attach to the job that already has this id."""
        if not request.job_id:
            raise BatchEngineError("the CreateJobRequest has no job_id: ids must be deterministic")
        request = batch_v1.CreateJobRequest(request)
        if not request.parent:
            request.parent = self.parent
        name = f"{request.parent}/jobs/{request.job_id}"
        try:
            job = self.client.create_job(request=request, retry=self.retry, timeout=self.timeout)
        except api_exceptions.Conflict:
            # ALREADY_EXISTS: a retried submission (ours, or a lost response's retry).
            logger.info("Job %s already exists: re-attaching to it", request.job_id)
            existing = self._get(name, with_tasks=False)
            wanted = dict(request.job.labels)
            if any(existing.labels.get(key) != value for key, value in wanted.items()):
                raise BatchEngineError(
                    f"job id {request.job_id} is taken by a job with other labels "
                    f"({dict(existing.labels)}, wanted {wanted}): not re-attaching"
                ) from None
            return existing
        except api_exceptions.GoogleAPICallError as exc:
            raise BatchEngineError(
                f"Cloud Batch refused job {request.job_id}: {exc.code} {exc.message}"
            ) from exc
        except api_exceptions.RetryError as exc:
            raise BatchEngineError(
                f"Cloud Batch unreachable while creating job {request.job_id}: {exc}"
            ) from exc
        logger.info("Created Cloud Batch job %s (uid %s)", job.name, job.uid)
        return self._to_status(job)

    def list_jobs(self, *, labels: Mapping[str, str]) -> list[JobStatus]:
        """Every job carrying ``labels``: one ``ListJobs`` call (one page of 1000 jobs)."""
        request = batch_v1.ListJobsRequest(
            parent=self.parent, filter=labels_filter(labels), page_size=LIST_PAGE_SIZE
        )
        try:
            pager = self.client.list_jobs(request=request, retry=self.retry, timeout=self.timeout)
            statuses: list[JobStatus] = []
            pages = 0
            for page in pager.pages:
                pages += 1
                if page.unreachable:
                    logger.warning("ListJobs: unreachable locations %s", list(page.unreachable))
                statuses.extend(self._to_status(job) for job in page.jobs)
        except api_exceptions.GoogleAPICallError as exc:
            raise BatchEngineError(f"ListJobs failed: {exc.code} {exc.message}") from exc
        except api_exceptions.RetryError as exc:
            raise BatchEngineError(f"Cloud Batch unreachable while listing jobs: {exc}") from exc
        if pages > 1:
            logger.warning(
                "ListJobs for %s needed %d calls (%d jobs): old jobs should be deleted",
                dict(labels),
                pages,
                len(statuses),
            )
        return statuses

    def get_job(self, *, job_id: str) -> JobStatus:
        """The job with its status events and per-task exit codes; JobNotFoundError if gone."""
        return self._get(self.job_name(job_id), with_tasks=True)

    def cancel(self, *, job_id: str) -> None:
        """``CancelJob``: Batch stops the tasks, the job ends CANCELLED and stays listed.

        Returns once Batch accepted the request, without waiting for its long-running
        operation. A job already gone (NOT_FOUND) is not an error. Where ``CancelJob`` is
        refused (PERMISSION_DENIED: the role lacks ``batch.jobs.cancel``) or unknown
        (UNIMPLEMENTED), the job is deleted instead, which also stops it.
        """
        name = self.job_name(job_id)
        try:
            current = self._get(name, with_tasks=False)
        except JobNotFoundError:
            logger.info("Job %s is already gone", job_id)
            return
        if current.state.is_terminal or current.state.is_stopping:
            # Never re-sent: Batch is already stopping it (or it has stopped).
            logger.info("Job %s is %s: no cancel request sent", job_id, current.state.value)
            return
        request = batch_v1.CancelJobRequest(name=name, request_id=request_id("cancel", name))
        try:
            self.client.cancel_job(request=request, retry=self.retry, timeout=self.timeout)
        except api_exceptions.NotFound:
            logger.info("Job %s is already gone", job_id)
            return
        except (api_exceptions.PermissionDenied, api_exceptions.MethodNotImplemented) as exc:
            logger.warning(
                "CancelJob of %s answered %s (%s): deleting the job instead, which erases its "
                "history (status events, task exit codes)",
                job_id,
                exc.code,
                exc.message,
            )
            self._delete(job_id)
            return
        except api_exceptions.GoogleAPICallError as exc:
            raise BatchEngineError(
                f"could not cancel job {job_id}: {exc.code} {exc.message}"
            ) from exc
        except api_exceptions.RetryError as exc:
            raise BatchEngineError(f"Cloud Batch unreachable while cancelling {job_id}") from exc
        logger.info("Cancellation of job %s requested", job_id)

    def logs_uri(self, *, job_id: str) -> str:
        """The Cloud Logging query of the job's logs (by uid), or its Batch console page."""
        try:
            status = self._get(self.job_name(job_id), with_tasks=False)
        except (JobNotFoundError, BatchEngineError):
            return self.console_uri(job_id)
        return status.log_uri or self.console_uri(job_id)

    def log_tail(self, *, job_id: str, lines: int = 30) -> str | None:
        """None: reading Cloud Logging needs ``google-cloud-logging``, which is not a
        dependency. The job's ``log_uri`` (:meth:`logs_uri`) links its Cloud Logging query."""
        return None

    # -- helpers ----------------------------------------------------------------------------

    def console_uri(self, job_id: str) -> str:
        return (
            f"https://console.cloud.google.com/batch/jobsDetail/regions/{self.location}/jobs/"
            f"{job_id}/details?project={self.project}"
        )

    def logging_uri(self, uid: str) -> str:
        query = quote(f'labels.job_uid="{uid}"', safe="")
        return (
            f"https://console.cloud.google.com/logs/query;query={query};duration=P30D"
            f"?project={self.project}"
        )

    def _delete(self, job_id: str) -> None:
        """``DeleteJob`` (the fallback of :meth:`cancel`), not waiting for its operation."""
        name = self.job_name(job_id)
        request = batch_v1.DeleteJobRequest(
            name=name, reason="cancelled by robotoff-batch", request_id=request_id("delete", name)
        )
        try:
            self.client.delete_job(request=request, retry=self.retry, timeout=self.timeout)
        except api_exceptions.NotFound:
            logger.info("Job %s is already gone", job_id)
            return
        except api_exceptions.GoogleAPICallError as exc:
            raise BatchEngineError(
                f"could not delete job {job_id}: {exc.code} {exc.message}"
            ) from exc
        except api_exceptions.RetryError as exc:
            raise BatchEngineError(f"Cloud Batch unreachable while deleting {job_id}") from exc
        logger.info("Deletion of job %s requested", job_id)

    def _get(self, name: str, *, with_tasks: bool) -> JobStatus:
        try:
            job = self.client.get_job(name=name, retry=self.retry, timeout=self.timeout)
        except api_exceptions.NotFound:
            raise JobNotFoundError(f"Cloud Batch job {name} does not exist") from None
        except api_exceptions.GoogleAPICallError as exc:
            raise BatchEngineError(f"GetJob {name} failed: {exc.code} {exc.message}") from exc
        except api_exceptions.RetryError as exc:
            raise BatchEngineError(f"Cloud Batch unreachable while reading {name}") from exc
        tasks: list[TaskStatus] = []
        if with_tasks:
            tasks = self._tasks(job)
        return self._to_status(job, tasks=tasks)

    def _tasks(self, job: batch_v1.Job) -> list[TaskStatus]:
        group = job.task_groups[0].name if job.task_groups and job.task_groups[0].name else ""
        parent = group or f"{job.name}/taskGroups/{DEFAULT_TASK_GROUP}"
        request = batch_v1.ListTasksRequest(parent=parent, page_size=LIST_PAGE_SIZE)
        tasks: list[TaskStatus] = []
        try:
            for task in self.client.list_tasks(
                request=request, retry=self.retry, timeout=self.timeout
            ):
                executions = [
                    e.task_execution.exit_code
                    for e in task.status.status_events
                    if "task_execution" in e
                ]
                index_text = _job_id_of(task.name)
                runs = tuple(task_attempts(task.status.status_events))
                tasks.append(
                    TaskStatus(
                        index=int(index_text) if index_text.isdigit() else len(tasks),
                        state=task.status.state.name,
                        exit_code=executions[-1] if executions else None,
                        attempts=len(runs) or len(executions),
                        runs=runs,
                    )
                )
        except api_exceptions.NotFound:
            return []
        except (api_exceptions.GoogleAPICallError, api_exceptions.RetryError) as exc:
            logger.warning("ListTasks %s failed, no task details: %s", parent, exc)
            return []
        return sorted(tasks, key=lambda t: t.index)

    def _to_status(self, job: batch_v1.Job, *, tasks: Sequence[TaskStatus] = ()) -> JobStatus:
        state = _job_state(job.status.state.name) if "status" in job else JobState.QUEUED
        return JobStatus(
            job_id=_job_id_of(job.name),
            state=state,
            labels=dict(job.labels),
            status_events=tuple(_status_event(e) for e in job.status.status_events),
            tasks=tuple(tasks),
            create_time=_time(job, "create_time"),
            update_time=_time(job, "update_time"),
            log_uri=self.logging_uri(job.uid) if job.uid else None,
            uid=job.uid or None,
            machine=machine_of_job(job),
        )
