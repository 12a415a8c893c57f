"""The end of a Cloud Batch task's log, read from Cloud Logging (``google-cloud-logging``).

A job created with ``logsPolicy.destination = CLOUD_LOGGING`` (every request we build) has
each line its runnables print to stdout/stderr written as one entry of the project's log
``projects/<P>/logs/batch_task_logs``, labelled with the job's uid (``labels.job_uid``) and the
task (``labels.task_id``, ``task/<job uid>-group0-<task index>/<retry>/<runnable>``): Google's
sample reads a job's task logs with ``logger("batch_task_logs")`` and
``labels.job_uid=<job.uid>`` (python-docs-samples batch/logs/read_job_logs.py; "Analyze a job
using logs", cloud.google.com/batch/docs/analyze-job-using-logs), and a task's own lines are
those whose ``task_id`` names ``group0-<index>`` (GoogleCloudPlatform/batch-samples#85).

One ``ListLogEntries`` call reads them newest first, filtered server-side by the log, the uid
and (substring) the task; the exact task is checked again here (``group0-1`` is also a
substring of ``group0-12``). The lines come back oldest first.
"""

from __future__ import annotations

import json
import logging
import re
from typing import Any

from google.api_core import exceptions as api_exceptions
from google.api_core.retry import Retry

TASK_LOG_NAME = "batch_task_logs"
# What a ListLogEntries page may hold (the API's maximum is 1000).
MAX_PAGE_SIZE = 1000

logger = logging.getLogger(__name__)


def _quote(value: str) -> str:
    return '"' + value.replace("\\", "\\\\").replace('"', '\\"') + '"'


def task_log_filter(project: str, uid: str, task_index: int | None, group: str = "group0") -> str:
    """The Logging query of a job's task log lines (one task's when ``task_index`` is given)."""
    clauses = [
        f"logName={_quote(f'projects/{project}/logs/{TASK_LOG_NAME}')}",
        f"labels.job_uid={_quote(uid)}",
    ]
    if task_index is not None:
        clauses.append(f"labels.task_id:{_quote(f'{group}-{task_index}')}")
    return " AND ".join(clauses)


def is_task(task_id: str, task_index: int, group: str = "group0") -> bool:
    """``task/<uid>-group0-3/0/0`` is task 3 (and not 31)."""
    return re.search(rf"{re.escape(group)}-{task_index}(?:/|$)", task_id) is not None


def entry_text(entry: Any) -> str:
    """The line an entry holds: its text payload, else its JSON payload's ``message`` (a
    structured log line), else the JSON payload itself."""
    if "text_payload" in entry:
        return str(entry.text_payload).rstrip("\n")
    if "json_payload" in entry:
        payload = dict(entry.json_payload)
        message = payload.get("message")
        if isinstance(message, str):
            return message.rstrip("\n")
        return json.dumps(payload, default=str, sort_keys=True)
    return ""


class TaskLogReader:
    """Reads task log lines with a ``LoggingServiceV2Client`` (the GAPIC client of
    ``google-cloud-logging``), in ``project``."""

    def __init__(
        self, *, project: str, client: Any, retry: Retry | None = None, timeout: float = 15.0
    ) -> None:
        self.project = project
        self.client = client
        self.retry = retry
        self.timeout = timeout

    @classmethod
    def from_settings(
        cls,
        project: str,
        *,
        credentials: Any = None,
        api_endpoint: str | None = None,
        transport: str = "grpc",
        **kwargs: Any,
    ) -> TaskLogReader:
        from google.api_core.client_options import ClientOptions
        from google.cloud.logging_v2.services.logging_service_v2 import LoggingServiceV2Client

        options = ClientOptions(api_endpoint=api_endpoint) if api_endpoint else None
        client = LoggingServiceV2Client(
            credentials=credentials, transport=transport, client_options=options
        )
        return cls(project=project, client=client, **kwargs)

    def tail(self, *, uid: str, task_index: int | None, lines: int) -> str | None:
        """The last ``lines`` lines of the task's log (of the whole job without a task), oldest
        first; None when Cloud Logging holds none. Raises ``GoogleAPICallError`` /
        ``RetryError`` when the API refuses or cannot be reached."""
        if lines <= 0:
            return ""
        from google.cloud.logging_v2.types import ListLogEntriesRequest

        request = ListLogEntriesRequest(
            resource_names=[f"projects/{self.project}"],
            filter=task_log_filter(self.project, uid, task_index),
            order_by="timestamp desc",
            page_size=min(MAX_PAGE_SIZE, max(lines * 2, 50)),
        )
        kwargs: dict[str, Any] = {"timeout": self.timeout}
        if self.retry is not None:
            kwargs["retry"] = self.retry
        newest_first: list[str] = []
        pager = self.client.list_log_entries(request=request, **kwargs)
        for entry in pager:  # pages on while needed: stops after `lines` matching lines
            if task_index is not None and not is_task(entry.labels.get("task_id", ""), task_index):
                continue
            newest_first.append(entry_text(entry))
            if len(newest_first) >= lines:
                break
        if not newest_first:
            return None
        return "\n".join(reversed(newest_first))


def read_tail_or_none(
    reader: TaskLogReader, *, uid: str, task_index: int | None, lines: int, job_id: str
) -> str | None:
    """:meth:`TaskLogReader.tail`, None (logged) when Cloud Logging cannot be read: a missing
    log never stops an outcome from being recorded."""
    try:
        return reader.tail(uid=uid, task_index=task_index, lines=lines)
    except (api_exceptions.GoogleAPICallError, api_exceptions.RetryError) as exc:
        logger.warning(
            "Cloud Logging unreadable for job %s (%s): no log tail, see its logs link",
            job_id,
            getattr(exc, "message", exc),
        )
        return None
