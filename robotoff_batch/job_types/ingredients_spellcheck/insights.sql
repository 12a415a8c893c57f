-- ingredients-spellcheck insights: Robotoff's IngredientSpellcheckImporter (insights/importer.py
-- 1427-1474) and InsightImporter mechanics (217-369, 424-604), set-based, for every product of
-- batch_scope (every output row with a verdict: a prediction inserted or kept, or an unchanged
-- text, as Robotoff regenerates a product's insights for each row it got, even a duplicate).
-- Reference: shared/reference/robotoff_import.md §2.3-2.5.
--
-- Rules: a candidate is any stored ingredient_spellcheck prediction of the product (server off)
-- whose data.original differs from data.correction, equals the product's
-- ingredients_text_<value_tag>, and whose value_tag is the product's lang. At most one insight
-- per (barcode, value_tag). An annotated or automatic insight of that value_tag blocks new ones
-- (kept). Otherwise the candidate updates the first non-annotated insight of that value_tag and
-- source image in place (id and votes kept, n_votes reset to 0, only Robotoff's updated
-- columns written), or is created; every other
-- non-annotated insight of the product is deleted. Ties, which Robotoff leaves to the database's
-- unordered read, are broken here by Robotoff's sort keys, then the lowest prediction id, and the
-- oldest insight (then lowest id) is the one updated.

-- name: scope
-- (batch_scope: every row with a verdict, unchanged ones included, so a product whose text
-- the new version leaves as is loses the older version's insight, as in Robotoff)
CREATE TEMP TABLE insight_scope ON COMMIT DROP AS
SELECT DISTINCT barcode FROM batch_scope
WHERE type = 'ingredient_spellcheck' AND server_type = 'off'

-- name: analyze_scope
-- (temporary tables have no statistics until analysed: without them the planner guesses)
ANALYZE insight_scope

-- name: candidates
-- (data stays in `prediction`: the statements below join it back by id, so the sort carries
-- only small columns)
CREATE TEMP TABLE insight_candidate ON COMMIT DROP AS
SELECT DISTINCT ON (p.barcode, p.value_tag)
    p.id AS prediction_id, p.barcode, p.value_tag, p.value, p.source_image,
    p.automatic_processing, p.predictor, p.predictor_version, p.confidence,
    coalesce(f.countries::jsonb, '[]'::jsonb) AS countries,
    coalesce(f.brands::jsonb, '[]'::jsonb) AS brands,
    coalesce(f.unique_scans_n, 0)::integer AS unique_scans_n
FROM (
    -- the facts of the products in scope, joined first: two analysed temporary tables, one
    -- hash join (OFFSET 0 keeps the planner from re-ordering it behind `prediction`, whose
    -- statistics lag behind the rows this import just inserted)
    SELECT f.* FROM insight_scope s JOIN batch_product f ON f.code = s.barcode OFFSET 0
) AS f
JOIN (
    -- the stored predictions that can become an insight, reduced to what the rule reads (the
    -- whole `data` stays out of the join's hash table and of the sort)
    SELECT p.id, p.barcode, p.value_tag, p.value, p.source_image,
        coalesce(p.automatic_processing, false) AS automatic_processing, p.predictor,
        p.predictor_version, p.confidence, p.data ->> 'original' AS original,
        coalesce((p.data ->> 'priority')::integer, 1) AS priority
    FROM prediction p
    WHERE p.type = 'ingredient_spellcheck' AND p.server_type = 'off'
        AND (p.data ->> 'original') IS DISTINCT FROM (p.data ->> 'correction')
    OFFSET 0
) AS p ON p.barcode = f.code AND p.original = nullif(f.ingredients_text_lang, '')
    AND p.value_tag = f.lang
WHERE NOT EXISTS (
    SELECT 1 FROM product_insight r
    WHERE r.barcode = p.barcode AND r.type = 'ingredient_spellcheck' AND r.server_type = 'off'
        AND (r.annotation IS NOT NULL OR r.automatic_processing)
        AND r.value_tag IS NOT DISTINCT FROM p.value_tag
)
ORDER BY p.barcode, p.value_tag, p.priority, p.automatic_processing DESC,
    coalesce(p.predictor, 'z'), p.id

-- name: analyze_candidates
ANALYZE insight_candidate

-- name: mapping
CREATE TEMP TABLE insight_mapping ON COMMIT DROP AS
SELECT DISTINCT ON (c.prediction_id) c.prediction_id, r.id AS insight_id
FROM insight_candidate c
JOIN product_insight r ON r.barcode = c.barcode AND r.type = 'ingredient_spellcheck'
    AND r.server_type = 'off' AND r.annotation IS NULL AND NOT r.automatic_processing
    AND r.value_tag IS NOT DISTINCT FROM c.value_tag
    AND r.source_image IS NOT DISTINCT FROM c.source_image
ORDER BY c.prediction_id, r."timestamp" NULLS LAST, r.id

-- name: deleted
DELETE FROM product_insight r USING insight_scope s
WHERE r.barcode = s.barcode AND r.type = 'ingredient_spellcheck' AND r.server_type = 'off'
    AND r.annotation IS NULL AND NOT r.automatic_processing
    AND NOT EXISTS (SELECT 1 FROM insight_mapping m WHERE m.insight_id = r.id)

-- name: updated
-- Only the columns Robotoff's update writes (importer.py:264-281: the fields the candidate
-- carries, i.e. generate_candidates' ProductInsight(lc=..., **prediction.to_dict()), the
-- model's defaults and add_fields at 564-604, less id, barcode, type, server_type): data,
-- timestamp, n_votes 0, countries, brands, unique_scans_n, value_tag, value, source_image,
-- automatic_processing, reserved_barcode, predictor, predictor_version, campaign [] (default),
-- confidence, lc, with_image, and process_after only for an automatic candidate. completed_at,
-- annotation, annotated_result, username and bounding_box keep their values.
UPDATE product_insight r SET
    data = p.data, "timestamp" = %(now)s, n_votes = 0, countries = c.countries,
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
FROM insight_mapping m JOIN insight_candidate c ON c.prediction_id = m.prediction_id
JOIN prediction p ON p.id = c.prediction_id
WHERE r.id = m.insight_id

-- name: created
INSERT INTO product_insight (id, barcode, type, data, "timestamp", completed_at, annotation,
    annotated_result, n_votes, username, countries, brands, process_after, value_tag, value,
    source_image, automatic_processing, server_type, unique_scans_n, reserved_barcode,
    predictor, predictor_version, campaign, confidence, bounding_box, lc, with_image)
SELECT gen_random_uuid(), c.barcode, 'ingredient_spellcheck', p.data, %(now)s, NULL, NULL,
    NULL, 0, NULL, c.countries, c.brands,
    CASE WHEN c.automatic_processing THEN %(now)s + interval '10 minutes' END,
    c.value_tag, c.value, c.source_image, c.automatic_processing, 'off', c.unique_scans_n,
    (CASE WHEN left(c.barcode, 1) = '0' THEN substr(c.barcode, 2) ELSE c.barcode END)
        LIKE '2%%',
    c.predictor, c.predictor_version, '[]'::jsonb, c.confidence, NULL,
    ARRAY[c.value_tag]::varchar(255)[], c.source_image IS NOT NULL
FROM insight_candidate c
JOIN prediction p ON p.id = c.prediction_id
WHERE NOT EXISTS (SELECT 1 FROM insight_mapping m WHERE m.prediction_id = c.prediction_id)

-- name: kept
SELECT count(*) FROM product_insight r JOIN insight_scope s ON s.barcode = r.barcode
WHERE r.type = 'ingredient_spellcheck' AND r.server_type = 'off'
    AND (r.annotation IS NOT NULL OR r.automatic_processing)
