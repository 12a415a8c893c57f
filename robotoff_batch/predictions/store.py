"""Robotoff's ``prediction`` and ``product_insight`` tables, written once per batch job.

One transaction per batch job:

1. claim the job in the ledger ``batch_job_import`` (``INSERT ... ON CONFLICT DO NOTHING``; a
   concurrent import of the same job waits on that row, then finds it and answers from it);
2. stream the job's output into a temporary table with ``COPY ... (FORMAT binary)``, the
   rows rendered by Arrow and NumPy (no per-row Python), and its product facts into another;
3. refuse the whole output, naming file and row, if a key is duplicated, a value too long, a
   product unknown to the job's input (set-based checks on the temporary tables);
4. turn the output into Robotoff prediction rows with the job type's SQL, then apply the dedup
   rule: a stored prediction of the same product, type, server type, image and predictor but
   another ``predictor_version`` is replaced (deleted); a new prediction whose Robotoff key
   (type, server_type, source_image, value_tag, value, predictor, automatic_processing) is
   already stored (hence the same version) is skipped; the rest is inserted, and the ids it
   got are linked to the job in ``batch_job_prediction`` (as ranges of consecutive ids);
5. run the job type's insight SQL (Robotoff's importer rules, set-based) and record the counts.

Any error rolls all of it back: a job is imported entirely, once, or not at all. Robotoff's
tables are created only where they do not exist (then recorded in ``batch_schema_owner``),
never altered otherwise. All SQL is constant or composed from identifiers; values are bound
parameters. Messages never contain the password of the connection string.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import replace
from datetime import UTC, datetime
from typing import Any

import psycopg
import pyarrow as pa
from psycopg.rows import dict_row

from robotoff_batch.predictions.arrow_copy import (
    PREDICTION_SPEC,
    prediction_chunks,
)
from robotoff_batch.predictions.conninfo import (
    describe_conninfo,
    is_auth_error,
    password_of,
)
from robotoff_batch.predictions.import_steps import import_steps
from robotoff_batch.predictions.known import ModelIdentity, read_known, record_known
from robotoff_batch.predictions.model import (
    ImportResult,
    ImportSpec,
    OutputChunk,
    PredictionImportError,
    PredictionStoreAuthError,
    PredictionStoreError,
    PredictionStoreUnavailable,
    insight_counts,
)
from robotoff_batch.predictions.queries import (
    CLAIM_SQL,
    COUNT_SQL,
    DUPLICATES_BY_JOB_SQL,
    DUPLICATES_BY_VERSION_SQL,
    EXAMPLES_SQL,
    IMPORTED_CHUNKS_ELSEWHERE_SQL,
    IMPORTED_CHUNKS_SQL,
    IMPORTED_JOBS_SQL,
    LEDGER_SQL,
    LOCK_LEDGER_SQL,
    OWNED_SQL,
    QUARANTINE_KEYS_SQL,
    QUARANTINE_SQL,
    RECORD_CHUNKS_SQL,
    RECORD_PARTIAL_SQL,
    RECORD_SQL,
)
from robotoff_batch.predictions.row_checks import DEFAULT_MAX_BAD_ROW_FRACTION
from robotoff_batch.predictions.schema import create_or_check

logger = logging.getLogger(__name__)


class PredictionStore:
    """Robotoff's ``prediction`` and ``product_insight`` tables plus our ledger, in PostgreSQL."""

    def __init__(self, *, conninfo: str, connect_timeout: int = 10) -> None:
        self._conninfo = conninfo
        self._connect_timeout = connect_timeout
        self._target = describe_conninfo(conninfo)
        self._password = password_of(conninfo)
        self._schema_ready = False

    def __repr__(self) -> str:
        return f"PredictionStore({self._target})"

    # -- connections and errors --------------------------------------------------------------

    def _scrub(self, text: str) -> str:
        if self._password:
            text = text.replace(self._password, "***")
        return text

    @contextmanager
    def _connection(self, action: str) -> Iterator[psycopg.Connection[Any]]:
        """A connection; psycopg errors become this module's errors (password removed)."""
        try:
            conn = psycopg.connect(self._conninfo, connect_timeout=self._connect_timeout)
        except psycopg.Error as exc:
            reason = self._scrub(str(exc).strip())
            if is_auth_error(exc):
                raise PredictionStoreAuthError(
                    f"predictions database refused the credentials ({self._target}) while "
                    f"trying to {action}: {reason}"
                ) from None
            raise PredictionStoreUnavailable(
                f"predictions database unavailable ({self._target}) while trying to {action}: "
                f"{reason}"
            ) from None
        try:
            with conn:
                yield conn
        except PredictionStoreError:
            raise
        except psycopg.OperationalError as exc:
            raise PredictionStoreUnavailable(
                f"predictions database failed ({self._target}) while trying to {action}: "
                f"{self._scrub(str(exc).strip())}"
            ) from None
        except psycopg.Error as exc:
            if is_auth_error(exc):
                raise PredictionStoreAuthError(
                    f"predictions database denied ({self._target}) while trying to {action}: "
                    f"{self._scrub(str(exc).strip())}"
                ) from None
            raise PredictionStoreError(
                f"predictions database error ({self._target}) while trying to {action}: "
                f"{self._scrub(str(exc).strip())}"
            ) from exc

    def _ready(self) -> None:
        if not self._schema_ready:
            self.ensure_schema()

    # -- schema ------------------------------------------------------------------------------

    def ensure_schema(self) -> None:
        """Create our tables, and Robotoff's where they do not exist (idempotent, safe from
        concurrent processes). An existing Robotoff table is never altered: it must have the
        columns the import writes, else this fails naming them."""
        started = time.monotonic()
        with self._connection("create the schema") as conn, conn.transaction():
            create_or_check(conn, self._target)
        self._schema_ready = True
        logger.debug("schema ready in %.3f s", time.monotonic() - started)

    def owned_tables(self) -> set[str]:
        """Robotoff tables this store created itself (empty against Robotoff's database)."""
        self._ready()
        with self._connection("read the schema owner") as conn:
            return {row[0] for row in conn.execute(OWNED_SQL)}

    # -- import ------------------------------------------------------------------------------

    def import_output(
        self,
        *,
        batch_job_id: str,
        job_type: str,
        spec: ImportSpec,
        files: Sequence[str],
        outputs: Iterable[OutputChunk],
        facts: Iterable[pa.RecordBatch] = (),
        source_stats: Mapping[str, int] | None = None,
        deliver: Callable[..., str] | None = None,
        max_bad_row_fraction: float = DEFAULT_MAX_BAD_ROW_FRACTION,
        retry_quarantined: bool = False,
        partial: bool = False,
        chunk_uris: Sequence[str] = (),
    ) -> ImportResult:
        """Import a job's output in one transaction, at most once per ``batch_job_id``.

        ``chunk_uris`` (the task files read: chunks or part files) are recorded in
        ``batch_job_chunk``: a chunk already recorded by another job's import refuses this one
        (the caller leaves those out, see :meth:`imported_chunks`). ``partial`` marks the
        ledger row as a FAILED job's partial import.

        ``outputs`` and ``facts`` are consumed lazily (streamed with COPY); ``files`` names the
        output files ``OutputChunk.file_index`` points into, for messages. If the ledger
        already holds the job, nothing is read or written and the earlier result comes back
        with ``already_imported=True``. Raises :class:`PredictionImportError` (nothing
        imported) for a refused output, naming the file and the row (0-based in its file).

        With ``deliver`` (see :meth:`hand_over_output`), the checked rows are handed over
        instead of written to Robotoff's tables.

        Bad rows are held back (quarantined, listed by :meth:`quarantined_rows`) and the rest
        imported, unless more than ``max_bad_row_fraction`` of the rows are bad (refused
        whole). A job already imported is answered from the ledger; with
        ``retry_quarantined``, its held-back rows (and only those) are read and checked
        again, those now good imported, in the same way and in one transaction.
        """
        target = "postgres" if deliver is None else "robotoff_api"
        if not batch_job_id:
            raise PredictionImportError("batch_job_id must not be empty")
        self._ready()
        started = time.monotonic()
        now = datetime.now(UTC).replace(tzinfo=None)
        with self._connection(f"import {batch_job_id}") as conn, conn.transaction():
            cur = conn.cursor()
            claimed = cur.execute(CLAIM_SQL, (batch_job_id, job_type, target)).fetchone()
            # the temporary tables' buffers, settable only before the session's first temporary
            # table (so before the output's size is known): a cap, allocated as the tables
            # grow (a 1M-row job's tables take about 1 GB). work_mem is set from the job's
            # row count once its output is copied in (import_steps).
            cur.execute("SET LOCAL temp_buffers = '1GB'")
            only: set[tuple[int, int]] | None = None
            earlier: ImportResult | None = None
            if claimed is None:
                cur.execute(LOCK_LEDGER_SQL, (batch_job_id,))  # a concurrent retry waits
                earlier = self._ledger_row(conn, batch_job_id)
                if earlier is None:  # pragma: no cover - the conflict means the row exists
                    raise PredictionStoreError(f"ledger row of {batch_job_id} vanished")
                if retry_quarantined:
                    index = {name: i for i, name in enumerate(files)}
                    only = {
                        (index[f], int(r))
                        for f, r in cur.execute(QUARANTINE_KEYS_SQL, (batch_job_id,))
                        if f in index
                    }
                if only and deliver is not None:
                    raise PredictionImportError(
                        f"{batch_job_id} was handed over to Robotoff: its held-back rows "
                        "cannot be handed over again (Robotoff reads one "
                        "postprocessed_data.parquet per batch_dir); nothing was done"
                    )
                if not only:
                    logger.info(
                        "batch job %s already imported (%d predictions); nothing to do",
                        batch_job_id,
                        earlier.predictions,
                    )
                    return replace(earlier, duration_s=time.monotonic() - started)
                cur.execute(
                    "DELETE FROM batch_job_quarantine WHERE batch_job_id = %s AND file = ANY(%s)",
                    (batch_job_id, list(files)),
                )
            try:
                counts = import_steps(
                    cur,
                    batch_job_id=batch_job_id,
                    job_type=job_type,
                    spec=spec,
                    files=files,
                    outputs=outputs,
                    facts=facts,
                    now=now,
                    deliver=deliver,
                    # a retry considers only rows already held back: no share to exceed
                    max_bad_row_fraction=1.0 if only else max_bad_row_fraction,
                    only=only,
                )
            except psycopg.OperationalError:
                raise
            except psycopg.Error as exc:
                raise PredictionImportError(
                    f"the database refused the output of {batch_job_id}; nothing was "
                    f"imported: {self._scrub(str(exc).strip())}"
                ) from exc
            if spec.known_sql:  # the texts seen, for skip_unchanged (predictions/known.py)
                record_known(
                    cur, known_sql=spec.known_sql, job_type=job_type, batch_job_id=batch_job_id
                )
            for key in ("source_rows", "skipped_rows"):
                if source_stats and key in source_stats:  # read once the stream is consumed
                    counts[key] = int(source_stats[key])
            if earlier is not None and only:  # the retry adds to the first import's counts
                counts = _added(earlier, counts, retried=len(only))
            cur.execute(RECORD_SQL, {**counts, "batch_job_id": batch_job_id})
            if partial:
                cur.execute(RECORD_PARTIAL_SQL, (True, batch_job_id))
            if chunk_uris:
                try:
                    cur.execute(RECORD_CHUNKS_SQL, (list(chunk_uris), batch_job_id))
                except psycopg.errors.UniqueViolation as exc:
                    raise PredictionImportError(
                        f"a chunk of {batch_job_id} was imported by another job meanwhile; "
                        f"nothing was imported: {self._scrub(str(exc).strip())}"
                    ) from exc
        duration = time.monotonic() - started
        result = ImportResult(
            batch_job_id=batch_job_id,
            predictions=counts["predictions"],
            already_imported=False,
            duration_s=duration,
            job_type=job_type,
            source_rows=counts["source_rows"],
            skipped_rows=counts["skipped_rows"],
            imported_at=datetime.now(UTC),
            candidates=counts["candidates"],
            predictions_kept=counts["predictions_kept"],
            predictions_replaced=counts["predictions_replaced"],
            insights=insight_counts(counts),
            target=target,
            rows_quarantined=counts["rows_quarantined"],
            rows_collapsed=counts["rows_collapsed"],
            products_deleted=counts["products_deleted"],
            partial=partial,
        )
        logger.info(
            "imported batch job %s in %.2f s: %d output rows, %d predictions inserted, %d kept, "
            "%d replaced; insights %s",
            batch_job_id,
            duration,
            result.source_rows,
            result.predictions,
            result.predictions_kept,
            result.predictions_replaced,
            dict(result.insights),
        )
        return result

    def hand_over_output(self, *, deliver: Callable[..., str], **kwargs: Any) -> ImportResult:
        """Check a job's output as :meth:`import_output` does, then hand the rows of the job
        type's ``handover_sql`` to ``deliver(job_type=, batch_job_id=, parquet=)`` (Robotoff's
        importer) instead of writing them; the ledger records the job (target
        ``robotoff_api``) only once ``deliver`` returned, in the same transaction."""
        return self.import_output(deliver=deliver, **kwargs)

    def import_predictions(
        self,
        *,
        batch_job_id: str,
        job_type: str,
        batches: Iterable[pa.RecordBatch],
        source_stats: Mapping[str, int] | None = None,
    ) -> ImportResult:
        """Import ready-made prediction rows (columns of :data:`PREDICTION_COLUMNS`, ``data``
        as JSON text), with the same transaction, checks and dedup rule as
        :meth:`import_output`, but no row held back (one bad row refuses them all); rows are
        numbered over the whole stream."""
        return self.import_output(
            batch_job_id=batch_job_id,
            job_type=job_type,
            spec=PREDICTION_SPEC,
            files=["predictions"],
            outputs=prediction_chunks(batches),
            source_stats=source_stats,
            max_bad_row_fraction=0.0,  # ready-made rows: one bad row refuses them all
        )

    # -- queries -----------------------------------------------------------------------------

    def known_texts(
        self, *, job_type: str, identity: ModelIdentity, predictions_sql: str | None = None
    ) -> pa.Table:
        """The (code, lang, text_hash) this model identity already gave a verdict on: our
        records and, with ``predictions_sql``, Robotoff's predictions (predictions/known.py);
        one read."""
        self._ready()
        with self._connection(f"read the texts {identity} already saw") as conn:
            return read_known(
                conn, job_type=job_type, identity=identity, predictions_sql=predictions_sql
            )

    @staticmethod
    def _ledger_row(conn: psycopg.Connection[Any], batch_job_id: str) -> ImportResult | None:
        cur = conn.cursor(row_factory=dict_row)
        row = cur.execute(LEDGER_SQL, (batch_job_id,)).fetchone()
        if row is None:
            return None
        return ImportResult(
            batch_job_id=row["batch_job_id"],
            predictions=row["predictions"],
            already_imported=True,
            duration_s=0.0,
            job_type=row["job_type"],
            source_rows=row["source_rows"],
            skipped_rows=row["skipped_rows"],
            imported_at=row["imported_at"],
            candidates=row["candidates"],
            predictions_kept=row["predictions_kept"],
            predictions_replaced=row["predictions_replaced"],
            insights=insight_counts(row),
            target=row["target"],
            rows_quarantined=row["rows_quarantined"],
            rows_collapsed=row["rows_collapsed"],
            products_deleted=row["products_deleted"],
            partial=bool(row["partial"]),
        )

    def imported_job(self, batch_job_id: str) -> ImportResult | None:
        """The ledger's record of an imported job (``already_imported=True``), or None."""
        self._ready()
        with self._connection(f"look up the import of {batch_job_id}") as conn:
            return self._ledger_row(conn, batch_job_id)

    def quarantined_rows(self, batch_job_id: str, limit: int = 1000) -> list[dict[str, Any]]:
        """The output rows the job's import held back: file, row (0-based), code, reason."""
        self._ready()
        with self._connection(f"list the held-back rows of {batch_job_id}") as conn:
            cur = conn.cursor(row_factory=dict_row)
            return list(cur.execute(QUARANTINE_SQL, (batch_job_id, limit)).fetchall())

    def imported_chunks(self, uris: Iterable[str], *, other_than: str | None = None) -> set[str]:
        """Which of these chunk URIs an import (of any job, or of any job but ``other_than``)
        already read (one query)."""
        wanted = sorted(set(uris))
        if not wanted:
            return set()
        self._ready()
        with self._connection("look up imported chunks") as conn:
            if other_than is None:
                rows = conn.execute(IMPORTED_CHUNKS_SQL, (wanted,)).fetchall()
            else:
                rows = conn.execute(IMPORTED_CHUNKS_ELSEWHERE_SQL, (wanted, other_than)).fetchall()
        return {str(r[0]) for r in rows}

    def imported_jobs(self, batch_job_ids: Iterable[str]) -> set[str]:
        """Which of these batch jobs the ledger records as imported (one query)."""
        ids = sorted(set(batch_job_ids))
        if not ids:
            return set()
        self._ready()
        with self._connection("look up imported batch jobs") as conn:
            rows = conn.execute(IMPORTED_JOBS_SQL, (ids,)).fetchall()
        return {str(row[0]) for row in rows}

    def count_predictions(self, *, batch_job_id: str) -> int:
        """How many stored predictions the job inserted (those since replaced not counted)."""
        self._ready()
        with self._connection(f"count the predictions of {batch_job_id}") as conn:
            row = conn.execute(COUNT_SQL, (batch_job_id,)).fetchone()
        return int(row[0]) if row else 0

    def duplicate_predictions(
        self, *, batch_job_id: str | None = None, predictor_version_like: str | None = None
    ) -> int:
        """Number of (barcode, type, value_tag, predictor, predictor_version) groups holding
        more than one row, among one job's predictions or those whose predictor_version
        matches a LIKE pattern (e.g. ``'lexicon-cpu-%'``); exactly one of the two is given."""
        if (batch_job_id is None) == (predictor_version_like is None):
            raise ValueError("give exactly one of batch_job_id and predictor_version_like")
        self._ready()
        with self._connection("count duplicate predictions") as conn:
            if batch_job_id is not None:
                row = conn.execute(DUPLICATES_BY_JOB_SQL, (batch_job_id,)).fetchone()
            else:
                row = conn.execute(DUPLICATES_BY_VERSION_SQL, (predictor_version_like,)).fetchone()
        return int(row[0]) if row else 0

    def fetch_examples(self, *, batch_job_id: str, limit: int = 5) -> list[dict[str, Any]]:
        """Up to ``limit`` predictions of a job (JSON-ready: timestamps as ISO strings)."""
        self._ready()
        with self._connection(f"fetch predictions of {batch_job_id}") as conn:
            cur = conn.cursor(row_factory=dict_row)
            rows = cur.execute(EXAMPLES_SQL, (batch_job_id, limit)).fetchall()
        for row in rows:
            if isinstance(row.get("timestamp"), datetime):
                row["timestamp"] = row["timestamp"].isoformat()
        return rows


def _added(earlier: ImportResult, counts: dict[str, int], *, retried: int) -> dict[str, int]:
    """The ledger's counts after a retry of ``retried`` held-back rows: the first import's
    plus the retry's (the output's row count stays the first import's)."""
    total = dict(counts)
    total["source_rows"] = earlier.source_rows
    for key in ("skipped_rows", "candidates", "predictions", "predictions_kept"):
        total[key] = counts[key] + int(getattr(earlier, key))
    total["predictions_replaced"] = counts["predictions_replaced"] + earlier.predictions_replaced
    for name, n in earlier.insights.items():
        total[f"insights_{name}"] = counts[f"insights_{name}"] + n
    total["rows_quarantined"] = earlier.rows_quarantined - retried + counts["rows_quarantined"]
    total["rows_collapsed"] = earlier.rows_collapsed + counts["rows_collapsed"]
    total["products_deleted"] = earlier.products_deleted + counts["products_deleted"]
    return total
