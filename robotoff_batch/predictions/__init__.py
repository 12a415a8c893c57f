"""Predictions: Robotoff's ``prediction`` table (import once per batch job) and the embedded
PostgreSQL used when no Robotoff database is configured."""

from robotoff_batch.predictions.embedded import (
    EmbeddedPostgresError,
    ensure_embedded_postgres,
    stop_embedded_postgres,
)
from robotoff_batch.predictions.store import (
    PREDICTION_COLUMNS,
    ImportResult,
    PredictionImportError,
    PredictionStore,
    PredictionStoreError,
    PredictionStoreUnavailable,
)

__all__ = [
    "PREDICTION_COLUMNS",
    "EmbeddedPostgresError",
    "ImportResult",
    "PredictionImportError",
    "PredictionStore",
    "PredictionStoreError",
    "PredictionStoreUnavailable",
    "ensure_embedded_postgres",
    "stop_embedded_postgres",
]
