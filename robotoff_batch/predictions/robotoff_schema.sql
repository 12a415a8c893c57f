-- Robotoff's `prediction` and `product_insight` tables as Robotoff's migrations leave them today
-- (openfoodfacts/robotoff 1.85.10: migrations 001 + 002 bounding_box + 008 lc + 009 with_image,
-- indexes dropped by 004 and 005; reference: shared/reference/robotoff_import.md §3).
-- peewee applies its `default=` values in Python, so there is no SQL DEFAULT: every NOT NULL
-- column is supplied by whoever inserts. FloatField is real; DateTimeField timestamp (no time
-- zone); ArrayField(CharField) varchar(255)[].
--
-- Run only in a database where the table does not exist yet (the store checks first): a table
-- that exists belongs to Robotoff and is never altered, indexed or re-created by us.

-- name: prediction
CREATE TABLE prediction (
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
    confidence real,
    server_type varchar(10) NOT NULL
);
CREATE INDEX prediction_barcode ON prediction (barcode);
CREATE INDEX prediction_type ON prediction (type);
CREATE INDEX prediction_timestamp ON prediction ("timestamp");
CREATE INDEX prediction_server_type ON prediction (server_type);

-- name: product_insight
CREATE TABLE product_insight (
    id uuid PRIMARY KEY,
    barcode varchar(100) NOT NULL,
    type varchar(256) NOT NULL,
    data jsonb NOT NULL,
    "timestamp" timestamp,
    completed_at timestamp,
    annotation integer,
    annotated_result integer,
    n_votes integer NOT NULL,
    username text,
    countries jsonb,
    brands jsonb,
    process_after timestamp,
    value_tag text,
    value text,
    source_image text,
    automatic_processing boolean NOT NULL,
    server_type varchar(10),
    unique_scans_n integer NOT NULL,
    reserved_barcode boolean NOT NULL,
    predictor varchar(100),
    predictor_version varchar(100),
    campaign jsonb,
    confidence real,
    bounding_box jsonb,
    lc varchar(255)[],
    with_image boolean
);
CREATE INDEX product_insight_barcode ON product_insight (barcode);
CREATE INDEX product_insight_type ON product_insight (type);
CREATE INDEX product_insight_timestamp ON product_insight ("timestamp");
CREATE INDEX product_insight_annotation ON product_insight (annotation);
CREATE INDEX product_insight_n_votes ON product_insight (n_votes);
CREATE INDEX product_insight_countries ON product_insight USING gin (countries);
CREATE INDEX product_insight_brands ON product_insight USING gin (brands);
CREATE INDEX product_insight_value_tag ON product_insight (value_tag);
CREATE INDEX product_insight_value ON product_insight (value);
CREATE INDEX product_insight_source_image ON product_insight (source_image);
CREATE INDEX product_insight_automatic_processing ON product_insight (automatic_processing);
CREATE INDEX product_insight_server_type ON product_insight (server_type);
CREATE INDEX product_insight_unique_scans_n ON product_insight (unique_scans_n);
CREATE INDEX product_insight_reserved_barcode ON product_insight (reserved_barcode);
CREATE INDEX product_insight_predictor ON product_insight (predictor);
CREATE INDEX product_insight_campaign ON product_insight USING gin (campaign);
CREATE INDEX product_insight_lc ON product_insight USING gin (lc);
CREATE INDEX product_insight_with_image ON product_insight (with_image);
