"""The Google Cloud Batch engine, through ``google-cloud-batch``'s ``BatchServiceClient``.

What it does, and what the systems that came before learnt the hard way:

- :meth:`CloudBatchEngine.submit` is idempotent. Job ids are deterministic; a create that
  meets ``ALREADY_EXISTS`` (409) re-attaches to the existing job. Transient errors
  (``UNAVAILABLE``, ``DEADLINE_EXCEEDED``, 429 ``RESOURCE_EXHAUSTED``) are retried with
  exponential backoff, so a lost response (the server created the job, the client saw a
  deadline) is retried, meets ``ALREADY_EXISTS`` and re-attaches: exactly one job exists.
- :meth:`CloudBatchEngine.list_jobs` is ONE ``ListJobs`` call per followed region per poll,
  filtered by labels server-side, whatever the number of jobs (one page of up to 1000 jobs);
  never a ``GetJob`` per job per tick.
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

- :meth:`CloudBatchEngine.log_tail` reads the failed task's last lines from Cloud Logging
  (``google-cloud-logging``, by the job's uid and the task: :mod:`.cloud_logging`).

A job deleted behind our back simply disappears from ``list_jobs``; ``get_job`` then raises
:class:`~robotoff_batch.batch.engine.JobNotFoundError`.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping, Sequence
from typing import Any
from urllib.parse import quote

from google.api_core import exceptions as api_exceptions
from google.api_core.client_options import ClientOptions
from google.api_core.retry import Retry, if_exception_type
from google.auth.credentials import Credentials
from google.cloud import batch_v1

from robotoff_batch.batch.cloud_batch_convert import (
    _job_id_of,
    _job_state,
    _status_event,
    _time,
    labels_filter,
    location_of,
    request_id,
    task_attempts,
    task_status,
)
from robotoff_batch.batch.cloud_logging import TaskLogReader, read_tail_or_none
from robotoff_batch.batch.engine import (
    BatchEngineError,
    JobNotFoundError,
    JobState,
    JobStatus,
    TaskStatus,
)
from robotoff_batch.batch.request import machine_of_job

__all__ = ["CloudBatchEngine", "labels_filter", "make_retry", "request_id", "task_attempts"]

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


def tail_task(status: JobStatus) -> int | None:
    """The task whose log tells why the job ended: the failed task of lowest index, else the
    task whose attempt started last; None when no task is known."""
    failed = [t.index for t in status.tasks if t.exit_code not in (None, 0)]
    if failed:
        return min(failed)
    started = [(r.start, t.index) for t in status.tasks for r in t.runs if r.start is not None]
    if started:
        return max(started)[1]
    return status.tasks[0].index if len(status.tasks) == 1 else None


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
        locations: Sequence[str] = (),
        logs: TaskLogReader | None = None,
    ) -> None:
        """``timeout`` is per attempt; ``retry`` (see :func:`make_retry`) bounds the total.
        ``location`` is the default region; ``locations`` the other regions jobs may run in
        (capacity fallbacks): each is listed, so no job escapes the follower. ``logs`` reads
        the tasks' lines from Cloud Logging (:meth:`log_tail`; None: no log tail)."""
        self.project = project
        self.location = location
        self.locations = tuple(dict.fromkeys([location, *locations]))
        self._where: dict[str, str] = {}  # job id -> its region, as last seen
        self.client = client
        self.retry = retry if retry is not None else make_retry()
        self.timeout = timeout
        self.logs = logs

    @classmethod
    def from_settings(
        cls,
        project: str,
        location: str,
        api_endpoint: str | None = None,
        credentials: Credentials | None = None,
        transport: str = "grpc",
        logging_endpoint: str | None = None,
        **kwargs: Any,
    ) -> CloudBatchEngine:
        """Build the real clients (Batch, and Cloud Logging for the log tails): the
        credentials given, else ``GOOGLE_CREDENTIALS`` or ADC."""
        if credentials is None:
            from robotoff_batch.gcp_credentials import load_credentials

            credentials, _ = load_credentials()
        options = ClientOptions(api_endpoint=api_endpoint) if api_endpoint else None
        client = batch_v1.BatchServiceClient(
            credentials=credentials, transport=transport, client_options=options
        )
        kwargs.setdefault(
            "logs",
            TaskLogReader.from_settings(
                project,
                credentials=credentials,
                api_endpoint=logging_endpoint,
                transport=transport,
                retry=kwargs.get("retry") or make_retry(),
            ),
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
        """The job's resource name, in the region it was last seen in (else the default)."""
        where = self._where.get(job_id, self.location)
        return f"projects/{self.project}/locations/{where}/jobs/{job_id}"

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
            # (the deterministic id of a capacity fallback meets this too: one job per alternative)
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
        """Every job carrying ``labels``: one ``ListJobs`` call (one page of 1000 jobs) per
        followed region."""
        return [status for where in self.locations for status in self._list_in(where, labels)]

    def _list_in(self, where: str, labels: Mapping[str, str]) -> list[JobStatus]:
        request = batch_v1.ListJobsRequest(
            parent=f"projects/{self.project}/locations/{where}",
            filter=labels_filter(labels),
            page_size=LIST_PAGE_SIZE,
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
            raise BatchEngineError(f"ListJobs in {where} failed: {exc.code} {exc.message}") from exc
        except api_exceptions.RetryError as exc:
            raise BatchEngineError(f"Cloud Batch unreachable while listing jobs: {exc}") from exc
        if pages > 1:
            logger.warning(
                "ListJobs for %s in %s needed %d calls (%d jobs): old jobs should be deleted",
                dict(labels),
                where,
                pages,
                len(statuses),
            )
        return statuses

    def get_job(self, *, job_id: str) -> JobStatus:
        """The job with its status events and per-task exit codes; JobNotFoundError if gone."""
        return self._find(job_id, with_tasks=True)

    def cancel(self, *, job_id: str) -> None:
        """``CancelJob``: Batch stops the tasks, the job ends CANCELLED and stays listed.

        Returns once Batch accepted the request, without waiting for its long-running
        operation. A job already gone (NOT_FOUND) is not an error. Where ``CancelJob`` is
        refused (PERMISSION_DENIED: the role lacks ``batch.jobs.cancel``) or unknown
        (UNIMPLEMENTED), the job is deleted instead, which also stops it.
        """
        try:
            current = self._find(job_id, with_tasks=False)
        except JobNotFoundError:
            logger.info("Job %s is already gone", job_id)
            return
        name = self.job_name(job_id)
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
            status = self._find(job_id, with_tasks=False)
        except (JobNotFoundError, BatchEngineError):
            return self.console_uri(job_id)
        return status.log_uri or self.console_uri(job_id)

    def log_tail(self, *, job_id: str, lines: int = 30) -> str | None:
        """The last ``lines`` lines the failed task printed (lowest index with a non-zero exit
        code; else the task started last; else the whole job's), read from Cloud Logging by
        the job's uid and the task (:mod:`robotoff_batch.batch.cloud_logging`). None when the
        job is gone, has no uid, Cloud Logging holds no line of it or cannot be read (logged):
        then the job's ``log_uri`` (:meth:`logs_uri`) links its Cloud Logging query."""
        if self.logs is None:
            return None
        try:
            status = self._find(job_id, with_tasks=True)
        except (JobNotFoundError, BatchEngineError):
            return None
        if not status.uid:
            return None
        return read_tail_or_none(
            self.logs, uid=status.uid, task_index=tail_task(status), lines=lines, job_id=job_id
        )

    # -- helpers ----------------------------------------------------------------------------

    def console_uri(self, job_id: str) -> str:
        return (
            "https://console.cloud.google.com/batch/jobsDetail/regions/"
            f"{self._where.get(job_id, self.location)}/jobs/"
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

    def _find(self, job_id: str, *, with_tasks: bool) -> JobStatus:
        """The job in the region it was last seen in, else in each followed region in turn
        (one ``GetJob`` when the region is known)."""
        known = self._where.get(job_id)
        order = [*([known] if known else []), *(w for w in self.locations if w != known)]
        missing: JobNotFoundError | None = None
        for where in order:
            name = f"projects/{self.project}/locations/{where}/jobs/{job_id}"
            try:
                return self._get(name, with_tasks=with_tasks)
            except JobNotFoundError as exc:
                missing = exc
        assert missing is not None
        raise missing

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
                tasks.append(task_status(task, len(tasks)))
        except api_exceptions.NotFound:
            return []
        except (api_exceptions.GoogleAPICallError, api_exceptions.RetryError) as exc:
            logger.warning("ListTasks %s failed, no task details: %s", parent, exc)
            return []
        return sorted(tasks, key=lambda t: t.index)

    def _to_status(self, job: batch_v1.Job, *, tasks: Sequence[TaskStatus] = ()) -> JobStatus:
        state = _job_state(job.status.state.name) if "status" in job else JobState.QUEUED
        where = location_of(job.name)
        if where:
            self._where[_job_id_of(job.name)] = where
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
            location=where,
        )
