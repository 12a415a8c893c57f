-- ingredients-spellcheck: the facts of the selected products that Robotoff's insight rules read
-- (written beside the input as products.parquet at launch; read again from the newest dump at
-- import). DuckDB.
--   $dump_path   VARCHAR  the OFF Parquet dump
--   $input_path  VARCHAR  the job's input.parquet (or any Parquet file with a `code` column)
-- {brands} and {unique_scans_n} are replaced by the store of constant fragments in
-- imports.py (NULL when an older or test dump lacks the column).

-- name: plain_text_macro
-- The plain ingredients text of one language, the one rule both the launch and the import use
-- (Robotoff's ingredients_text_<lang>, products.py:461-471). The dump holds two entries per
-- language when the product has allergens: `ingredients_text_<lc>` and Product Opener's
-- `ingredients_text_with_allergens_<lc>` (allergens wrapped in <span class="allergen">), in
-- either order (shared/reference/off_parquet_schema.md). The plain one is the first entry of
-- the language without that markup; a language whose only entries are marked has none (NULL).
CREATE OR REPLACE TEMP MACRO plain_ingredients_text(texts, language) AS
    list_filter(texts, lambda x: x.lang = language
        AND NOT contains(x.text, '<span class="allergen">'))[1].text

-- name: fact_columns
-- The facts' columns of one dump row `p`, and its copy number (1: the copy a code keeps),
-- shared by `facts` and `facts_at_import` ({brands}, {unique_scans_n}, {recency} filled in
-- imports.py).
CAST(p.code AS VARCHAR) AS code,
        pg_text(CAST(p.lang AS VARCHAR)) AS lang,
        CAST(pg_text(plain_ingredients_text(p.ingredients_text, p.lang)) AS VARCHAR)
            AS ingredients_text_lang,
        CAST(to_json(list_transform(coalesce(p.countries_tags, CAST([] AS VARCHAR[])),
            lambda t: pg_text(t))) AS VARCHAR) AS countries,
        {brands} AS brands,
        {unique_scans_n} AS unique_scans_n,
        row_number() OVER (PARTITION BY p.code ORDER BY {recency} DESC NULLS LAST,
            p.file_row_number DESC) AS copy_number

-- name: facts
-- At launch: the facts of the job's input products. One row per code, by the launch's rule
-- (selection.sql, `excluded`): a code the dump holds twice takes its most recently modified row
-- (greatest last_modified_t, NULL lowest), then the later one in the file; NUL, which
-- PostgreSQL text cannot hold, is removed from every text (pg_text, extraction.PG_TEXT_MACROS).
-- At launch the input is the launch pass's facts_source.parquet (already one row per code, NUL
-- removed, last_modified_t carried), so the rule holds for a raw dump too.
SELECT code, lang, ingredients_text_lang, countries, brands, unique_scans_n
FROM (
    SELECT
        {fact_columns}
    FROM read_parquet($dump_path, file_row_number = true) AS p
    WHERE p.code IN (SELECT code FROM read_parquet($input_path))
)
WHERE copy_number = 1
ORDER BY code

-- name: facts_at_import
-- At import: the same facts, from the newest dump, for every product of the job (`job_codes`,
-- the codes of the launch-time facts, registered from Arrow). A product the dump no longer
-- holds comes back with deleted = true (deleted since the launch: no prediction, no insight).
-- The same one-row-per-code and NUL rules as `facts`.
WITH dump AS (
    SELECT
        {fact_columns}
    FROM read_parquet($dump_path, file_row_number = true) AS p
    WHERE p.code IN (SELECT code FROM job_codes)
)
SELECT j.code, d.lang, d.ingredients_text_lang, d.countries, d.brands, d.unique_scans_n,
    d.code IS NULL AS deleted
FROM job_codes j LEFT JOIN dump d ON d.code = j.code AND d.copy_number = 1
ORDER BY j.code
