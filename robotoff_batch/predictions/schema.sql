-- robotoff-batch's own tables, beside Robotoff's. Idempotent; run under pg_advisory_xact_lock
-- by PredictionStore.ensure_schema. Robotoff's tables are never touched here.
--
-- batch_job_import: the ledger, one row per imported batch job (claimed and filled in the
-- import's transaction, so a job is imported entirely, once, or not at all).
-- batch_job_prediction: which `prediction` rows a batch job inserted, as ranges of consecutive
-- ids (one range per import unless another writer interleaved its rows); Robotoff's columns
-- keep Robotoff's meaning. No foreign key, which would put a trigger on Robotoff's table: the
-- queries join on `prediction`, so a row deleted since (replaced by a newer model version,
-- product deleted) is simply not counted.
-- batch_job_quarantine: the output rows an import held back (file and 0-based row in it, the
-- product's code, why), so that they are listed, never re-considered by a re-import, and only
-- by `import JOB --retry-quarantined`; per (file, row), whatever the output's layout.
-- batch_schema_owner: the Robotoff tables robotoff-batch created itself (an embedded or empty
-- database), the only ones it may ever upgrade.

CREATE TABLE IF NOT EXISTS batch_job_import (
    batch_job_id text PRIMARY KEY,
    job_type text NOT NULL,
    imported_at timestamptz NOT NULL DEFAULT now(),
    predictions integer NOT NULL,
    source_rows integer NOT NULL,
    skipped_rows integer NOT NULL
);

CREATE TABLE IF NOT EXISTS batch_job_prediction (
    batch_job_id text NOT NULL,
    first_id integer NOT NULL,
    last_id integer NOT NULL,
    PRIMARY KEY (batch_job_id, first_id),
    CHECK (first_id <= last_id)
);

CREATE TABLE IF NOT EXISTS batch_job_quarantine (
    batch_job_id text NOT NULL,
    file text NOT NULL,
    "row" bigint NOT NULL,
    code text,
    reason text NOT NULL,
    PRIMARY KEY (batch_job_id, file, "row")
);

-- batch_job_chunk: the task files (checkpointed chunks, part files) an import read, each once
-- (a partial import of a FAILED job, then the job relaunched carrying its chunks: the
-- relaunched job's import skips the chunks already here, so each product is imported once).
CREATE TABLE IF NOT EXISTS batch_job_chunk (
    uri text PRIMARY KEY,
    batch_job_id text NOT NULL
);

CREATE TABLE IF NOT EXISTS batch_schema_owner (
    table_name text PRIMARY KEY,
    created_at timestamptz NOT NULL DEFAULT now()
);

-- batch_known_text: which texts a model has already given a verdict on (issue 22, incremental
-- launches): per job type, model identity (predictor, predictor_version), product and language,
-- the md5 of the UTF-8 text the verdict was for (a hash, never the text). Written in the
-- import's transaction for every imported row with a verdict (unchanged texts included: they
-- leave no prediction in Robotoff's table), by either target; read once, as Arrow, by a launch
-- with skip_unchanged (predictions/known.py). A newer text of the same product replaces the
-- hash.
CREATE TABLE IF NOT EXISTS batch_known_text (
    job_type text NOT NULL,
    predictor text NOT NULL,
    predictor_version text NOT NULL,
    barcode text NOT NULL,
    lang text NOT NULL DEFAULT '',
    text_md5 bytea NOT NULL,
    batch_job_id text NOT NULL,
    PRIMARY KEY (job_type, predictor, predictor_version, barcode, lang)
);
