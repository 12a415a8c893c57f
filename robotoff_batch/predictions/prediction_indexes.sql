-- Indexes of a `prediction` table robotoff-batch created itself (an embedded or empty database).
-- Named as peewee names Robotoff's (index=True fields; GIN for the BinaryJSONField), plus one on
-- the batch job id carried at the end of predictor_version ("<version>@<batch job id>").
-- Not run against an existing table: building indexes on Robotoff's production table would lock
-- its writes, and its own migrations own its indexes.

CREATE INDEX IF NOT EXISTS prediction_barcode ON prediction (barcode);
CREATE INDEX IF NOT EXISTS prediction_type ON prediction (type);
CREATE INDEX IF NOT EXISTS prediction_data ON prediction USING gin (data);
CREATE INDEX IF NOT EXISTS prediction_timestamp ON prediction ("timestamp");
CREATE INDEX IF NOT EXISTS prediction_source_image ON prediction (source_image);
CREATE INDEX IF NOT EXISTS prediction_server_type ON prediction (server_type);
CREATE INDEX IF NOT EXISTS prediction_batch_job_id
    ON prediction ((substring(predictor_version FROM '@([^@]+)$')));
