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

-- name: facts
-- At launch: the facts of the job's input products. One row per code: a code the dump holds
-- twice takes its most recently modified row (last_modified_t), then the first in the file;
-- NUL bytes, which PostgreSQL text cannot hold, are removed from the text.
SELECT code, lang, ingredients_text_lang, countries, brands, unique_scans_n
FROM (
    SELECT
        CAST(p.code AS VARCHAR) AS code,
        CAST(p.lang AS VARCHAR) AS lang,
        CAST(replace(plain_ingredients_text(p.ingredients_text, p.lang), chr(0), '') AS VARCHAR)
            AS ingredients_text_lang,
        CAST(to_json(coalesce(p.countries_tags, CAST([] AS VARCHAR[]))) AS VARCHAR) AS countries,
        {brands} AS brands,
        {unique_scans_n} AS unique_scans_n,
        row_number() OVER (PARTITION BY p.code ORDER BY {recency} DESC NULLS LAST,
            p.file_row_number) AS copy_number
    FROM read_parquet($dump_path, file_row_number = true) AS p
    WHERE p.code IN (SELECT code FROM read_parquet($input_path))
)
WHERE copy_number = 1
ORDER BY code

-- name: facts_at_import
-- At import: the same facts, from the newest dump, for every product of the job (`job_codes`,
-- the codes of the launch-time facts, registered from Arrow). A product the dump no longer
-- holds comes back with deleted = true (deleted since the launch: no prediction, no insight).
WITH dump AS (
    SELECT
        CAST(p.code AS VARCHAR) AS code,
        CAST(p.lang AS VARCHAR) AS lang,
        CAST(replace(plain_ingredients_text(p.ingredients_text, p.lang), chr(0), '') AS VARCHAR)
            AS ingredients_text_lang,
        CAST(to_json(coalesce(p.countries_tags, CAST([] AS VARCHAR[]))) AS VARCHAR) AS countries,
        {brands} AS brands,
        {unique_scans_n} AS unique_scans_n,
        row_number() OVER (PARTITION BY p.code ORDER BY {recency} DESC NULLS LAST,
            p.file_row_number) AS copy_number
    FROM read_parquet($dump_path, file_row_number = true) AS p
    WHERE p.code IN (SELECT code FROM job_codes)
)
SELECT j.code, d.lang, d.ingredients_text_lang, d.countries, d.brands, d.unique_scans_n,
    d.code IS NULL AS deleted
FROM job_codes j LEFT JOIN dump d ON d.code = j.code AND d.copy_number = 1
ORDER BY j.code
