-- Robotoff's `prediction` table (robotoff/models.py, class Prediction) and robotoff-batch's
-- import ledger. Idempotent; run under pg_advisory_xact_lock by PredictionStore.ensure_schema.
-- Never drops or alters an existing column: against Robotoff's own database, where `prediction`
-- exists with its own extra columns and indexes, only the ledger table is created. Missing
-- columns of an older table are added by the store (only when missing: ALTER TABLE takes an
-- ACCESS EXCLUSIVE lock even when IF NOT EXISTS makes it a no-op).

CREATE TABLE IF NOT EXISTS prediction (
    id serial PRIMARY KEY,
    barcode varchar(100) NOT NULL,
    type varchar(256) NOT NULL,
    data jsonb NOT NULL,
    "timestamp" timestamp NOT NULL,
    value_tag text,
    value text,
    source_image text,
    automatic_processing boolean,
    predictor varchar(100),
    predictor_version varchar(100),
    confidence double precision,
    server_type varchar(10) NOT NULL DEFAULT 'off'
);

CREATE TABLE IF NOT EXISTS batch_job_import (
    batch_job_id text PRIMARY KEY,
    job_type text NOT NULL,
    imported_at timestamptz NOT NULL DEFAULT now(),
    predictions integer NOT NULL,
    source_rows integer NOT NULL,
    skipped_rows integer NOT NULL
);
