"""What the prediction store reads and answers: Robotoff's prediction columns, a job type's
``ImportSpec``, an output chunk, the import's result, the store's errors, named SQL files."""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import datetime
from importlib import resources
from typing import Any

import pyarrow as pa

#: Columns of Robotoff's ``prediction`` table a batch may carry, in COPY order.
PREDICTION_COLUMNS: tuple[str, ...] = (
    "barcode",
    "type",
    "data",
    "timestamp",
    "value_tag",
    "value",
    "source_image",
    "automatic_processing",
    "predictor",
    "predictor_version",
    "confidence",
    "server_type",
)
#: Columns every prediction batch must have (the others default: timestamp = import time,
#: server_type = 'off', the rest NULL).
REQUIRED_COLUMNS: tuple[str, ...] = ("barcode", "type", "data")
#: varchar(n) limits of Robotoff's table, checked before the insert for a clear message.
MAX_LENGTHS: dict[str, int] = {
    "barcode": 100,
    "type": 256,
    "predictor": 100,
    "predictor_version": 100,
    "server_type": 10,
}
DEFAULT_SERVER_TYPE = "off"


class PredictionStoreError(Exception):
    """Base error of the prediction store."""


class PredictionStoreUnavailable(PredictionStoreError):
    """The database is down or unreachable (worth retrying later)."""


class PredictionStoreAuthError(PredictionStoreError):
    """The database refused our credentials or role: retrying cannot help."""


class PredictionImportError(PredictionStoreError):
    """The output was refused (nothing of the job was imported)."""


@dataclass(frozen=True)
class ImportSpec:
    """How a job type's output becomes Robotoff rows, in SQL the store runs.

    ``output_schema``: the columns read from each task file, loaded into the temporary table
    ``batch_output`` (plus ``_file``, ``_row``). ``predictions_sql``: a SELECT over
    ``batch_output`` giving, in this order, _file, _row and the columns of
    :data:`PREDICTION_COLUMNS`, one row per prediction (parameter ``%(now)s``: the import time,
    naive UTC); it becomes the view ``batch_prediction``. ``unique``: output columns whose
    values must not repeat over the whole output.
    ``facts_schema``: the product facts (``batch_product``, keyed by ``code``, plus ``_file``,
    ``_row`` and ``_uuid``, a random uuid4 per product for the ids of the insights the job
    type creates) the insights read; every output ``key_column`` value must be there.
    ``insights_sql``: statements separated by ``-- name: <name>`` lines; the row counts of
    those named ``created``, ``updated``, ``deleted`` and ``kept`` are the insight counts.
    None: no insights.
    """

    output_schema: pa.Schema
    predictions_sql: str
    not_null: tuple[str, ...] = ()
    unique: tuple[str, ...] = ()
    key_column: str = "code"
    facts_schema: pa.Schema | None = None
    insights_sql: str | None = None
    # A SELECT over batch_output / batch_prediction giving the rows, with Robotoff's columns,
    # of the postprocessed_data.parquet handed to Robotoff's importer (robotoff_api target).
    handover_sql: str | None = None
    # A SELECT over batch_output giving _file, _row, barcode, type, server_type,
    # source_image, predictor_version for every output row the replace rule applies to (the
    # view ``batch_scope``; the insights are regenerated for its products): the rows that give
    # no prediction but a verdict (an unchanged text) included, and every row of
    # predictions_sql (the stored predictions the dedup rule reads are those of the scope's
    # barcodes). None: the predictions.
    scope_sql: str | None = None
    # True when an output row gives at most one prediction, for the product its unique
    # key_column names: two predictions of the job cannot share Robotoff's key, so that
    # (self-join) check is skipped.
    one_prediction_per_product: bool = False
    # Output columns a task file may lack (written by an older container): read as nulls.
    optional: tuple[str, ...] = ()
    # A SELECT over batch_output giving barcode, lang, text, predictor, predictor_version for
    # every imported row with a verdict (unchanged texts included): recorded, as a hash of the
    # text, in ``batch_known_text`` so a launch with skip_unchanged leaves them out (issue 22,
    # predictions/known.py). None: nothing recorded.
    known_sql: str | None = None
    # Output columns holding JSON text that predictions_sql casts to jsonb: a row whose value
    # is not valid jsonb is held back (quarantined, with its file, row and the parser's
    # message), never left to fail the cast and refuse the whole output.
    json_columns: tuple[str, ...] = ()
    # True when predictions_sql's data is never NULL by construction (a jsonb_build_object(...)
    # expression): the row checks then do not build every row's data only to test it (1.3 s of
    # a 1,000,000-row import). Were it NULL anyway, the prediction INSERT's NOT NULL
    # constraint refuses the whole output, nothing imported, instead of holding the row back.
    data_never_null: bool = False


@dataclass(frozen=True)
class OutputChunk:
    """Rows of one output file, ``offset`` = the index of the first one in its file."""

    file_index: int
    offset: int
    batch: pa.RecordBatch


@dataclass(frozen=True)
class ImportResult:
    """Outcome of one job's import (or of the earlier import of that job)."""

    batch_job_id: str
    predictions: int
    already_imported: bool
    duration_s: float
    job_type: str = ""
    source_rows: int = 0
    skipped_rows: int = 0
    imported_at: datetime | None = None
    candidates: int = 0  # predictions the output gave, before the dedup rule
    predictions_kept: int = 0  # already stored with the same predictor version: skipped
    predictions_replaced: int = 0  # another version of the same predictor: deleted
    insights: Mapping[str, int] = field(default_factory=dict)  # created/updated/kept/deleted
    target: str = "postgres"
    rows_quarantined: int = 0  # bad rows held back (listed by PredictionStore.quarantined_rows)
    rows_collapsed: int = 0  # identical repeats of a row, imported once
    products_deleted: int = 0  # absent from the dump read at import: deleted since the launch
    partial: bool = False  # a FAILED job's complete chunks only (import --partial)


def load_sql(name: str) -> str:
    return resources.files(__package__ or "robotoff_batch.predictions").joinpath(name).read_text()


def named_statements(text: str) -> list[tuple[str, str]]:
    """Split a SQL file on ``-- name: <name>`` lines into (name, statement) pairs."""
    out: list[tuple[str, str]] = []
    name: str | None = None
    lines: list[str] = []
    for line in text.splitlines():
        match = re.match(r"--\s*name:\s*(\w+)", line)
        if match:
            if name is not None:
                out.append((name, "\n".join(lines).strip()))
            name, lines = match.group(1), []
        elif name is not None:
            lines.append(line)
    if name is not None:
        out.append((name, "\n".join(lines).strip()))
    return out


def insight_counts(row: Mapping[str, Any]) -> dict[str, int]:
    return {k: int(row[f"insights_{k}"]) for k in ("created", "updated", "kept", "deleted")}
