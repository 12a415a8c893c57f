-- ingredients-spellcheck insights: Robotoff's IngredientSpellcheckImporter (insights/importer.py
-- 1427-1474) and InsightImporter mechanics (217-369, 424-604), set-based, for every product of
-- batch_scope (every output row with a verdict: a prediction inserted or kept, or an unchanged
-- text, as Robotoff regenerates a product's insights for each row it got, even a duplicate).
-- Reference: shared/reference/robotoff_import.md §2.3-2.5.
--
-- Run after the replace rule and before the job's predictions are inserted (import_steps):
-- `prediction` holds the stored predictions as the rule left them (the kept ones included) and
-- `batch_new` the job's own, with what they will be; they are never read back.
--
-- Rules: a candidate is any ingredient_spellcheck prediction of the product (server off),
-- stored or this job's, whose data.original differs from data.correction, equals the product's
-- ingredients_text_<value_tag>, and whose value_tag is the product's lang. At most one insight
-- per (barcode, value_tag). An annotated or automatic insight of that value_tag blocks new ones
-- (kept). Otherwise the candidate updates the first non-annotated insight of that value_tag and
-- source image in place (id and votes kept, n_votes reset to 0, only Robotoff's updated
-- columns written), or is created; every other
-- non-annotated insight of the product is deleted. Ties, which Robotoff leaves to the database's
-- unordered read, are broken here by Robotoff's sort keys, then the lowest prediction id, and the
-- oldest insight (then lowest id) is the one updated.

-- name: by_index
-- (Robotoff's tables read by their indexes only, up to `joins`: their statistics may lag far
-- behind their rows, e.g. an embedded database's first import, never analysed, and a
-- sequential scan would test `= ANY(ARRAY(...))` row by row, linearly)
SET LOCAL enable_seqscan = off

-- name: stored
-- Robotoff's tables are read by the scope's barcodes only, each once, into analysed temporary
-- tables (a bitmap scan of the barcode index: `= ANY(ARRAY(...))`), and every join below is
-- between analysed temporary tables: no statement scans `prediction` or `product_insight` in
-- full or loops over them, whatever their size. First the product's insights of this type.
-- The scope's barcodes (every row with a verdict, unchanged ones included, so a product whose
-- text the new version leaves as is loses the older version's insight, as in Robotoff) go to
-- the index scan as they come: the index scan drops the array's repeats (no DISTINCT pass
-- over a million barcodes, no temporary table of them).
CREATE TEMP TABLE insight_stored ON COMMIT DROP AS
SELECT r.id, r.barcode, r.value_tag, r.source_image, r."timestamp", r.annotation,
    r.automatic_processing
FROM (
    -- the barcodes alone in this fenced scan (OFFSET 0): the barcode index, never another
    -- index with the barcodes tested row by row as a filter
    SELECT * FROM product_insight
    WHERE barcode = ANY (ARRAY(
        SELECT barcode FROM batch_scope
        WHERE type = 'ingredient_spellcheck' AND server_type = 'off'))
    OFFSET 0
) AS r
WHERE r.type = 'ingredient_spellcheck' AND r.server_type = 'off'

-- name: analyze_stored
ANALYZE insight_stored

-- name: sources
-- The stored predictions that can become an insight, with what the rule and the insight read.
-- Run before the job's predictions are inserted (import_steps: after the replace rule, so
-- the replaced ones are gone and the kept ones are here): the job's own predictions are read
-- from batch_new (the rows the INSERT will write), never back from `prediction`.
CREATE TEMP TABLE insight_source ON COMMIT DROP AS
SELECT p.id, p.barcode, p.value_tag, p.value, p.source_image,
    coalesce(p.automatic_processing, false) AS automatic_processing, p.predictor,
    p.predictor_version, p.confidence, p.data, p.data ->> 'original' AS original
FROM (
    -- (fenced, as above)
    SELECT * FROM prediction
    WHERE barcode = ANY (ARRAY(
        SELECT barcode FROM batch_scope
        WHERE type = 'ingredient_spellcheck' AND server_type = 'off'))
    OFFSET 0
) AS p
WHERE p.type = 'ingredient_spellcheck' AND p.server_type = 'off'
    AND (p.data ->> 'original') IS DISTINCT FROM (p.data ->> 'correction')

-- name: analyze_sources
-- (the joined columns only: `original` so that the candidates' join is estimated from its
-- values, not at 1/200 of the rows, which would make it loop over insight_stored)
ANALYZE insight_source (barcode, value_tag, original)

-- name: joins
SET LOCAL enable_seqscan = on

-- name: known
-- The scope's products with a stored source or a stored insight: only for these can a
-- product have more than one candidate (the job gives one row per product: its code is
-- unique, ImportSpec.unique), an insight to update, to keep or to delete. Every other
-- product's new prediction is its only candidate and nothing is stored for it.
CREATE TEMP TABLE insight_known ON COMMIT DROP AS
SELECT barcode FROM insight_source UNION SELECT barcode FROM insight_stored

-- name: analyze_known
ANALYZE insight_known

-- name: candidates
-- The known products' candidates, one per (barcode, value_tag), by Robotoff's sort keys (the
-- new prediction's id, once inserted, is higher than any stored one: NULLS LAST); an
-- annotated or automatic insight of the value_tag blocks. Narrow (no data, no text: data is
-- read at the write from insight_source by id, or from batch_new by (_file, _row), whose
-- prediction id is NULL); `cand` names the candidate (the prediction id, or a negative key
-- from (_file, _row)).
CREATE TEMP TABLE insight_candidate ON COMMIT DROP AS
SELECT DISTINCT ON (p.barcode, p.value_tag)
    coalesce(p.id, -1 - ((p._file::bigint << 40) + p._row)) AS cand,
    p.id AS prediction_id, p._file, p._row, p.barcode, p.value_tag, p.value, p.source_image,
    p.automatic_processing, p.predictor, p.predictor_version, p.confidence,
    coalesce(f.countries::jsonb, '[]'::jsonb) AS countries,
    coalesce(f.brands::jsonb, '[]'::jsonb) AS brands,
    coalesce(f.unique_scans_n, 0)::integer AS unique_scans_n, f._uuid AS new_id
FROM (
    SELECT s.id, NULL::integer AS _file, NULL::bigint AS _row, s.barcode::text AS barcode,
        s.value_tag, s.value, s.source_image, s.automatic_processing,
        s.predictor::text AS predictor, s.predictor_version::text AS predictor_version,
        s.confidence, s.original, coalesce((s.data ->> 'priority')::integer, 1) AS priority
    FROM insight_source s
    UNION ALL
    SELECT NULL, n._file, n._row, n.barcode, n.value_tag, n.value, n.source_image,
        coalesce(n.automatic_processing, false), n.predictor, n.predictor_version,
        n.confidence, n.data ->> 'original', coalesce((n.data ->> 'priority')::integer, 1)
    FROM batch_new n
    WHERE n.barcode IN (SELECT k.barcode FROM insight_known k)
        AND n.type = 'ingredient_spellcheck' AND n.server_type = 'off'
        AND (n.data ->> 'original') IS DISTINCT FROM (n.data ->> 'correction')
) AS p
JOIN batch_product f ON f.code = p.barcode
    AND p.original = nullif(f.ingredients_text_lang, '') AND p.value_tag = f.lang
WHERE NOT EXISTS (
    SELECT 1 FROM insight_stored r
    WHERE r.barcode = p.barcode AND (r.annotation IS NOT NULL OR r.automatic_processing)
        AND r.value_tag IS NOT DISTINCT FROM p.value_tag
)
ORDER BY p.barcode, p.value_tag, p.priority, p.automatic_processing DESC,
    coalesce(p.predictor, 'z'), p.id NULLS LAST

-- name: analyze_candidates
ANALYZE insight_candidate

-- name: mapping
-- (the insight each known candidate updates)
CREATE TEMP TABLE insight_mapping ON COMMIT DROP AS
SELECT DISTINCT ON (c.cand) c.cand, r.id AS insight_id
FROM insight_candidate c
JOIN insight_stored r ON r.barcode = c.barcode AND r.annotation IS NULL
    AND NOT r.automatic_processing
    AND r.value_tag IS NOT DISTINCT FROM c.value_tag
    AND r.source_image IS NOT DISTINCT FROM c.source_image
ORDER BY c.cand, r."timestamp" NULLS LAST, r.id

-- name: analyze_mapping
ANALYZE insight_mapping

-- name: by_index
-- (as above)
SET LOCAL enable_seqscan = off

-- name: deleted
DELETE FROM product_insight r
WHERE r.id = ANY (ARRAY(
    SELECT s.id FROM insight_stored s
    WHERE s.annotation IS NULL AND NOT s.automatic_processing
        AND NOT EXISTS (SELECT 1 FROM insight_mapping m WHERE m.insight_id = s.id)
))

-- name: updated
-- Only the columns Robotoff's update writes (importer.py:264-281: the fields the candidate
-- carries, i.e. generate_candidates' ProductInsight(lc=..., **prediction.to_dict()), the
-- model's defaults and add_fields at 564-604, less id, barcode, type, server_type): data,
-- timestamp, n_votes 0, countries, brands, unique_scans_n, value_tag, value, source_image,
-- automatic_processing, reserved_barcode, predictor, predictor_version, campaign [] (default),
-- confidence, lc, with_image, and process_after only for an automatic candidate. completed_at,
-- annotation, annotated_result, username and bounding_box keep their values.
UPDATE product_insight r SET
    data = coalesce(p.data, n.data), "timestamp" = %(now)s, n_votes = 0, countries = c.countries,
    brands = c.brands,
    process_after = CASE WHEN c.automatic_processing
        THEN %(now)s + interval '10 minutes' ELSE r.process_after END,
    value_tag = c.value_tag, value = c.value, source_image = c.source_image,
    automatic_processing = c.automatic_processing, unique_scans_n = c.unique_scans_n,
    reserved_barcode = (CASE WHEN left(c.barcode, 1) = '0' THEN substr(c.barcode, 2)
        ELSE c.barcode END) LIKE '2%%',
    predictor = c.predictor, predictor_version = c.predictor_version, campaign = '[]'::jsonb,
    confidence = c.confidence, lc = ARRAY[c.value_tag]::varchar(255)[],
    with_image = c.source_image IS NOT NULL
FROM insight_mapping m JOIN insight_candidate c ON c.cand = m.cand
LEFT JOIN insight_source p ON p.id = c.prediction_id
LEFT JOIN batch_new n ON n._file = c._file AND n._row = c._row
WHERE r.id = m.insight_id AND r.id = ANY (ARRAY(SELECT insight_id FROM insight_mapping))

-- name: joins
SET LOCAL enable_seqscan = on

-- name: created
-- (a new insight's id: its product's batch_product._uuid, a random uuid4 made by the client
-- as Robotoff's ORM makes one, uuid4(); one insight per product at most, as each product has
-- one lang)
-- First every other product of the scope: its new prediction, when it matches the facts, is
-- its only candidate and nothing is stored to update, keep or delete, so it is created, in one
-- pass over the job's rows (data built once, in the fenced scan of batch_new), no sort, no
-- temporary table. Then the known products' candidates without an insight to update, with
-- their prediction's data: from batch_new (by _file, _row) or insight_source (by id).
INSERT INTO product_insight (id, barcode, type, data, "timestamp", completed_at, annotation,
    annotated_result, n_votes, username, countries, brands, process_after, value_tag, value,
    source_image, automatic_processing, server_type, unique_scans_n, reserved_barcode,
    predictor, predictor_version, campaign, confidence, bounding_box, lc, with_image)
SELECT c.new_id, c.barcode, 'ingredient_spellcheck', c.data, %(now)s, NULL, NULL,
    NULL, 0, NULL, c.countries, c.brands,
    CASE WHEN c.automatic_processing THEN %(now)s + interval '10 minutes' END,
    c.value_tag, c.value, c.source_image, c.automatic_processing, 'off', c.unique_scans_n,
    (CASE WHEN left(c.barcode, 1) = '0' THEN substr(c.barcode, 2) ELSE c.barcode END)
        LIKE '2%%',
    c.predictor, c.predictor_version, '[]'::jsonb, c.confidence, NULL,
    ARRAY[c.value_tag]::varchar(255)[], c.source_image IS NOT NULL
FROM (
    SELECT n.barcode, n.value_tag, n.value, n.source_image,
        coalesce(n.automatic_processing, false) AS automatic_processing, n.predictor,
        n.predictor_version, n.confidence, n.data,
        coalesce(f.countries::jsonb, '[]'::jsonb) AS countries,
        coalesce(f.brands::jsonb, '[]'::jsonb) AS brands,
        coalesce(f.unique_scans_n, 0)::integer AS unique_scans_n, f._uuid AS new_id
    FROM (
        SELECT * FROM batch_new
        WHERE type = 'ingredient_spellcheck' AND server_type = 'off' OFFSET 0
    ) AS n
    JOIN batch_product f ON f.code = n.barcode
        AND (n.data ->> 'original') = nullif(f.ingredients_text_lang, '')
        AND n.value_tag = f.lang
    -- (Robotoff's original <> correction rule needs no test here: import.sql's predictions
    -- are the rows whose correction differs from their text, data's original and correction)
    WHERE NOT EXISTS (SELECT 1 FROM insight_known k WHERE k.barcode = n.barcode)
    UNION ALL
    SELECT c.barcode, c.value_tag, c.value, c.source_image, c.automatic_processing,
        c.predictor, c.predictor_version, c.confidence, coalesce(p.data, n.data), c.countries,
        c.brands, c.unique_scans_n, c.new_id
    FROM insight_candidate c
    LEFT JOIN insight_source p ON p.id = c.prediction_id
    LEFT JOIN batch_new n ON n._file = c._file AND n._row = c._row
    WHERE NOT EXISTS (SELECT 1 FROM insight_mapping m WHERE m.cand = c.cand)
) AS c

-- name: kept
-- The scope's annotated or automatic insights once written: the stored ones (the statements
-- above touch none of them) and the candidates written automatic (each updated one insight or
-- created one): the known products' from insight_candidate, the others' from batch_new (none
-- for this job type: import.sql writes automatic_processing false, a constant the planner
-- folds, so that count reads nothing).
SELECT (SELECT count(*) FROM insight_stored r
        WHERE r.annotation IS NOT NULL OR r.automatic_processing)
    + (SELECT count(*) FROM insight_candidate c WHERE c.automatic_processing)
    + (SELECT count(*) FROM batch_new n
        JOIN batch_product f ON f.code = n.barcode
            AND (n.data ->> 'original') = nullif(f.ingredients_text_lang, '')
            AND n.value_tag = f.lang
        WHERE n.automatic_processing
            AND n.type = 'ingredient_spellcheck' AND n.server_type = 'off'
            AND (n.data ->> 'original') IS DISTINCT FROM (n.data ->> 'correction')
            AND NOT EXISTS (SELECT 1 FROM insight_known k WHERE k.barcode = n.barcode))
