"""What the pipeline needs of an import target: Robotoff's PostgreSQL written directly
(:class:`~robotoff_batch.predictions.store.PredictionStore`) or Robotoff's own importer
(:class:`~robotoff_batch.predictions.robotoff_api.RobotoffApiStore`, the ledger kept beside).
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from typing import TYPE_CHECKING, Any, Protocol

if TYPE_CHECKING:
    import pyarrow as pa

    from robotoff_batch.predictions.known import ModelIdentity
    from robotoff_batch.predictions.model import ImportResult, ImportSpec, OutputChunk


class PredictionTarget(Protocol):
    """A job's output goes here, once; the ledger says which jobs are imported."""

    def ensure_schema(self) -> None: ...

    def import_output(
        self,
        *,
        batch_job_id: str,
        job_type: str,
        spec: ImportSpec,
        files: Sequence[str],
        outputs: Iterable[OutputChunk],
        facts: Iterable[pa.RecordBatch] = (),
        max_bad_row_fraction: float = ...,
        retry_quarantined: bool = False,
        partial: bool = False,
        chunk_uris: Sequence[str] = (),
    ) -> ImportResult:
        """Import (or hand over) a job's output in one transaction, at most once; rows held
        back (quarantined) unless more than ``max_bad_row_fraction`` of them are;
        ``retry_quarantined``: an imported job's held-back rows read again; ``partial``: a
        FAILED job's complete chunks (``chunk_uris``, recorded as read)."""
        ...

    def imported_job(self, batch_job_id: str) -> ImportResult | None:
        """The ledger's record of an imported job, or None."""
        ...

    def imported_jobs(self, batch_job_ids: Iterable[str]) -> set[str]: ...

    def imported_chunks(self, uris: Iterable[str], *, other_than: str | None = None) -> set[str]:
        """Which of these chunk URIs an import (of any job, or of any job but
        ``other_than``) already read."""
        ...

    def quarantined_rows(self, batch_job_id: str, limit: int = 1000) -> list[dict[str, Any]]:
        """The output rows the job's import held back: file, row, code, reason."""
        ...

    def count_predictions(self, *, batch_job_id: str) -> int: ...

    def duplicate_predictions(self, *, batch_job_id: str) -> int: ...

    def fetch_examples(self, *, batch_job_id: str, limit: int = 5) -> list[dict[str, Any]]: ...

    def known_texts(
        self, *, job_type: str, identity: ModelIdentity, predictions_sql: str | None = None
    ) -> pa.Table:
        """The (code, lang, text_hash) the model identity already gave a verdict on (our
        records; Robotoff's predictions too where readable), read once (issue 22)."""
        ...
