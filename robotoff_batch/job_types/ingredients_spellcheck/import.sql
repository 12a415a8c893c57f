-- ingredients-spellcheck: its output as Robotoff's rows, run by PredictionStore.import_output
-- inside the import's transaction (docs/CONTRACTS.md, "Import").
--
-- Tables: batch_output (the task files: _file, _row, code, lang, text, correction, engine,
-- engine_version), batch_product (the job's product facts: code, lang, ingredients_text_lang,
-- countries, brands, unique_scans_n, from the dump the job was extracted from; _uuid, a
-- random uuid4 per product, the id of an insight created for it),
-- batch_prediction (the view of the SELECT below), Robotoff's prediction and product_insight.
-- Parameter: %(now)s, the import time (naive UTC, as Robotoff's now(UTC)).

-- name: predictions
-- One prediction per changed row, as robotoff/batch/__init__.py:58-73 builds it: the engine is
-- the predictor, its version the predictor_version, value_tag the product's lang. data.lang is
-- the product's lang too (Robotoff asks fastText; no detector runs here: lang_confidence null).
-- data.corrections: the CPU engine's corrections, each with its rule and confidence (absent when
-- the engine gives none: vllm, an older container); Robotoff ignores data keys it does not know
-- (robotoff/insights/importer.py:1444 copies data whole, 1460-1467 reads original and
-- correction; annotate.py:746-751 adds annotation and reads correction).
-- Columns, in order: _file, _row, barcode, type, data, timestamp, value_tag, value, source_image,
-- automatic_processing, predictor, predictor_version, confidence, server_type.
SELECT _file, _row, code, 'ingredient_spellcheck',
    jsonb_build_object('original', text, 'correction', correction, 'lang', lang,
        'lang_confidence', NULL)
        || CASE WHEN corrections IS NULL THEN '{}'::jsonb
            ELSE jsonb_build_object('corrections', corrections::jsonb) END,
    %(now)s, lang, NULL, NULL, false, engine, engine_version, NULL, 'off'
FROM batch_output
WHERE correction IS NOT NULL AND correction IS DISTINCT FROM text

-- name: scope
-- Every row with a verdict, unchanged ones included: Robotoff builds a prediction from every
-- row of the output (robotoff/batch/__init__.py:50-73), so the replace rule runs for each
-- (importer.py:2229-2255: the older version's prediction goes) and the product's insights are
-- regenerated (an unchanged text removes the stale insight of its product and language). A
-- row without a correction (the engine gave none) is no verdict and replaces nothing. The
-- unchanged row's own prediction is not stored (docs/CONTRACTS.md, "No-op predictions").
SELECT _file, _row, code, 'ingredient_spellcheck', 'off', NULL, engine_version
FROM batch_output
WHERE correction IS NOT NULL

-- name: handover
-- The robotoff_api target: postprocessed_data.parquet as Robotoff's importer reads it
-- (robotoff/batch/__init__.py:53-68 reads code, text, lang, correction): every row with a
-- correction, unchanged ones included, as Robotoff's own container writes them (its importer
-- then applies its replace rule and insight refresh to each).
SELECT code, text, lang, correction FROM batch_output
WHERE correction IS NOT NULL
ORDER BY _file, _row
