-- ingredients-spellcheck: the known set of incremental launches (issue 22,
-- robotoff_batch/predictions/known.py). Three statements, two dialects:

-- name: known
-- PostgreSQL, in the import's transaction, over batch_output (bad rows already removed):
-- every row with a verdict, unchanged texts included (the `scope` rows of import.sql: a
-- correction, equal to the text or not), as barcode, lang, text, predictor, predictor_version.
-- A row without a correction (the engine skipped it: too long, failed) is no verdict: it is
-- selected again next time.
SELECT code, lang, text, engine, engine_version
FROM batch_output
WHERE correction IS NOT NULL

-- name: known_predictions
-- PostgreSQL (postgres target): Robotoff's stored spellcheck predictions of the model
-- identity, as Robotoff stores them (robotoff/batch/__init__.py:58-73 and import.sql:
-- data->>'original' the text, value_tag the product's lang), hex md5 of the UTF-8 text.
-- Parameters: %(predictor)s, %(predictor_version)s.
SELECT barcode, value_tag, md5(convert_to(data->>'original', 'UTF8'))
FROM prediction
WHERE type = 'ingredient_spellcheck' AND server_type = 'off'
  AND predictor = %(predictor)s AND predictor_version = %(predictor_version)s
  AND data->>'original' IS NOT NULL

-- name: unchanged
-- DuckDB, in the launch's connection, before `selected` (selection.py): the dump rows the
-- launch would otherwise select (selection.sql's {{candidate_rows}} and `selected`'s text and
-- fraction filters) whose (code, lang, md5 of the main ingredients text) is in launch_known,
-- the known set loaded from Arrow (a text may come twice: a semi-join). One narrow scan and one
-- hash join: no per-product query. code, lang and text are computed as `selected` computes
-- them (language_text, NUL removed), so the hash is that of the text staged, which the
-- container echoes into its output. `selected` anti-joins it by dump_row ({{unchanged_filter}}); its count is the
-- launch's skipped_unchanged.
CREATE TEMP TABLE launch_unchanged AS
SELECT p.dump_row
FROM (
    SELECT
        p.file_row_number AS dump_row,
        CAST(p.code AS VARCHAR) AS code,
        coalesce(pg_text(CAST(p.lang AS VARCHAR)), '') AS lang,
        pg_text(language_text(p.ingredients_text, 'main')) AS text,
        CAST(p.unknown_ingredients_n AS DOUBLE) / p.ingredients_n AS fraction
    FROM read_parquet($dump_path, file_row_number = true) AS p
    WHERE {candidate_rows}
) AS p
SEMI JOIN launch_known AS k
    ON k.code = p.code AND k.lang = p.lang AND k.text_hash = md5(p.text)
WHERE trim(p.text) <> ''
  AND p.fraction > CAST($min_fraction AS DOUBLE)
  AND p.fraction <= CAST($max_fraction AS DOUBLE)

-- name: unchanged_filter
-- DuckDB, the fragment of selection.sql's `selected` that leaves the unchanged rows out before
-- the top N (so `limit` counts products that need work).
dump_row NOT IN (SELECT dump_row FROM launch_unchanged)
