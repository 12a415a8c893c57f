"""The ``robotoff_api`` import target: hand a job's output to Robotoff's own importer.

Robotoff's contract (robotoff/app/api.py:1762-1785, robotoff/batch/__init__.py:34-79;
shared/reference/robotoff_import.md §1): ``POST /api/v1/batch/import``, a form body with
``job_type`` (a ``BatchJobType`` member *name*: ``ingredients_spellcheck``) and ``batch_dir`` (a
prefix inside Robotoff's bucket, ``robotoff-batch``, holding ``postprocessed_data.parquet``
with the columns code, text, lang, correction), ``Authorization: Bearer <BATCH_JOB_KEY>``.
Robotoff answers 200 once the import is *enqueued* (not done), 400 for a missing field, header
or unknown job type, 401 for a wrong scheme or key.

The pipeline calls it once the whole job SUCCEEDED, inside the ledger transaction of
:meth:`PredictionStore.hand_over_output`: the output is checked exactly as for a direct import,
written, uploaded create-only, POSTed; the ledger row commits only after a 200. The container
never holds the key.
"""

from __future__ import annotations

import json
import logging
import urllib.error
import urllib.parse
import urllib.request
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from robotoff_batch.names import key_prefix
from robotoff_batch.predictions.model import (
    PredictionImportError,
    PredictionStoreAuthError,
    PredictionStoreUnavailable,
)
from robotoff_batch.predictions.store import PredictionStore

logger = logging.getLogger(__name__)

IMPORT_PATH = "/api/v1/batch/import"
OUTPUT_NAME = "postprocessed_data.parquet"


class RobotoffApiError(PredictionImportError):
    """Robotoff refused the hand-over (400): fix the request or the output, not retried."""


class RobotoffApiAuthError(PredictionStoreAuthError):
    """Robotoff refused the key (401/403): not retried."""


class RobotoffApiUnavailable(PredictionStoreUnavailable):
    """Robotoff did not answer, or answered 5xx: retried later (nothing recorded)."""


@dataclass(frozen=True)
class RobotoffApi:
    """Robotoff's batch import endpoint and the bucket its importer reads."""

    base_url: str  # e.g. https://robotoff.openfoodfacts.org
    key: str
    bucket_staging: Any  # a Staging rooted at Robotoff's bucket (gs://robotoff-batch)
    timeout_s: float = 30.0

    def __repr__(self) -> str:  # never the key
        return f"RobotoffApi({self.base_url})"

    def batch_dir(self, *, job_type: str, batch_job_id: str) -> str:
        """The bucket-relative directory Robotoff reads (its own use: <job-type>/<run>)."""
        return f"{job_type}/{batch_job_id}"

    def deliver(self, *, job_type: str, batch_job_id: str, parquet: Path) -> str:
        """Upload ``parquet`` as ``<batch_dir>/postprocessed_data.parquet``, POST the import;
        returns the batch_dir. Raises this module's errors."""
        from robotoff_batch.staging import IdenticalObjectExistsError, ObjectExistsError

        batch_dir = self.batch_dir(job_type=job_type, batch_job_id=batch_job_id)
        uri = f"{self.bucket_staging.root_uri.rstrip('/')}/{batch_dir}/{OUTPUT_NAME}"
        try:
            self.bucket_staging.upload_file(local_path=str(parquet), uri=uri)
        except IdenticalObjectExistsError:
            logger.info("%s already uploaded by an earlier attempt", uri)
        except ObjectExistsError as exc:
            if not self._holds(uri, parquet):
                raise RobotoffApiError(
                    f"{uri} exists with other content; nothing was handed over: {exc}"
                ) from exc
            logger.info("%s already uploaded by an earlier attempt", uri)
        self.post(job_type=key_prefix(job_type), batch_dir=batch_dir)
        return batch_dir

    def _holds(self, uri: str, parquet: Path) -> bool:
        """Whether the object at ``uri`` has exactly the bytes of ``parquet`` (a retry)."""
        with self.bucket_staging.open_read(uri=uri) as existing:
            return bool(existing.read() == parquet.read_bytes())

    def post(self, *, job_type: str, batch_dir: str) -> dict[str, Any]:
        """``POST /api/v1/batch/import``; Robotoff's answer (200) or this module's errors."""
        url = self.base_url.rstrip("/") + IMPORT_PATH
        body = urllib.parse.urlencode({"job_type": job_type, "batch_dir": batch_dir}).encode()
        request = urllib.request.Request(
            url,
            data=body,
            method="POST",
            headers={
                "Content-Type": "application/x-www-form-urlencoded",
                "Authorization": f"Bearer {self.key}",
            },
        )
        try:
            with urllib.request.urlopen(request, timeout=self.timeout_s) as response:  # noqa: S310
                text = response.read().decode("utf-8", "replace")
        except urllib.error.HTTPError as exc:
            detail = exc.read().decode("utf-8", "replace")[:500].replace(self.key, "***")
            if exc.code in (401, 403):
                raise RobotoffApiAuthError(
                    f"Robotoff refused the batch job key ({url} answered {exc.code}: {detail})"
                ) from None
            if 400 <= exc.code < 500:
                raise RobotoffApiError(
                    f"Robotoff refused the import of {batch_dir} ({url} answered {exc.code}: "
                    f"{detail})"
                ) from None
            raise RobotoffApiUnavailable(
                f"Robotoff failed ({url} answered {exc.code}: {detail}); retried later"
            ) from None
        except (urllib.error.URLError, OSError) as exc:
            reason = getattr(exc, "reason", exc)
            raise RobotoffApiUnavailable(f"Robotoff unreachable at {url}: {reason}") from None
        logger.info("Robotoff accepted the import of %s: %s", batch_dir, text[:200])
        try:
            answer = json.loads(text)
        except ValueError:
            answer = {"raw": text[:200]}
        return answer if isinstance(answer, dict) else {"answer": answer}


class RobotoffApiStore:
    """The store the pipeline sees with the ``robotoff_api`` target: the ledger and checks of a
    :class:`PredictionStore`, the rows handed to Robotoff instead of written."""

    def __init__(self, *, ledger: PredictionStore, api: RobotoffApi) -> None:
        self.ledger = ledger
        self.api = api

    def __repr__(self) -> str:
        return f"RobotoffApiStore({self.api!r}, ledger {self.ledger!r})"

    def ensure_schema(self) -> None:
        self.ledger.ensure_schema()

    def import_output(self, **kwargs: Any) -> Any:
        return self.ledger.hand_over_output(deliver=self.api.deliver, **kwargs)

    def imported_job(self, batch_job_id: str) -> Any:
        return self.ledger.imported_job(batch_job_id)

    def quarantined_rows(self, batch_job_id: str, limit: int = 1000) -> list[dict[str, Any]]:
        return self.ledger.quarantined_rows(batch_job_id, limit)

    def imported_jobs(self, batch_job_ids: Any) -> set[str]:
        return self.ledger.imported_jobs(batch_job_ids)

    def imported_chunks(self, uris: Any, *, other_than: str | None = None) -> set[str]:
        return self.ledger.imported_chunks(uris, other_than=other_than)

    def count_predictions(self, *, batch_job_id: str) -> int:
        """Rows handed to Robotoff for this job (Robotoff's importer writes them later)."""
        earlier = self.ledger.imported_job(batch_job_id)
        return earlier.predictions if earlier else 0

    def duplicate_predictions(self, **_: Any) -> int:
        return 0  # the hand-over refuses duplicated codes; Robotoff's own rows are not ours

    def fetch_examples(self, **_: Any) -> list[dict[str, Any]]:
        return []

    def known_texts(self, *, job_type: str, identity: Any, predictions_sql: Any = None) -> Any:
        """Our own records only: this target cannot read Robotoff's tables."""
        return self.ledger.known_texts(job_type=job_type, identity=identity)
