-- ingredients-spellcheck: the facts of the selected products that Robotoff's insight rules read
-- (written beside the input as products.parquet at launch; read again from the newest dump at
-- import). DuckDB.
--   $dump_path   VARCHAR  the OFF Parquet dump
--   $input_path  VARCHAR  the job's input.parquet (or any Parquet file with a `code` column)
-- {fact_columns} and {copy_number} are filled in imports.py (fact_columns_sql: NULL for a column
-- an older or test dump lacks).

-- name: plain_text_macro
-- The plain ingredients text of one language, the one rule both the launch and the import use
-- (Robotoff's ingredients_text_<lang>, products.py:461-471). The dump holds two entries per
-- language when the product has allergens: `ingredients_text_<lc>` and Product Opener's
-- `ingredients_text_with_allergens_<lc>` (allergens wrapped in <span class="allergen">), in
-- either order (shared/reference/off_parquet_schema.md). The plain one is the first entry of
-- the language without that markup; a language whose only entries are marked has none (NULL).
-- The first and second entries are tried before the list is filtered (the dump's order is
-- `main`, then the product's language: 86% of the real sample's products, 69% of the generated
-- 1M dump's): the same entry as the filter alone, without building a filtered list per
-- product (the launch computes it for every candidate row, benchmarks/results/launch.md).
CREATE OR REPLACE TEMP MACRO plain_ingredients_text(texts, language) AS
    CASE
        WHEN texts[1].lang = language AND NOT contains(texts[1].text, '<span class="allergen">')
            THEN texts[1].text
        WHEN texts[2].lang = language AND NOT contains(texts[2].text, '<span class="allergen">')
            THEN texts[2].text
        ELSE list_filter(texts, lambda x: x.lang = language
            AND NOT contains(x.text, '<span class="allergen">'))[1].text
    END

-- name: fact_columns
-- The facts' columns of one row `p`, shared by `facts`, `facts_at_import` and the launch's pass
-- (selection.sql's `facts`, on the rows it selected). Its fragments (imports.py,
-- fact_columns_sql): the raw plain ingredients text of the row (here plain_ingredients_text of
-- the dump row; the pass computed it with the same macro), the brands and unique scans (NULL
-- when the dump lacks the column).
CAST(p.code AS VARCHAR) AS code,
        pg_text(CAST(p.lang AS VARCHAR)) AS lang,
        CAST(pg_text({ingredients_text_lang}) AS VARCHAR) AS ingredients_text_lang,
        CAST(to_json(list_transform(coalesce(p.countries_tags, CAST([] AS VARCHAR[])),
            lambda t: pg_text(t))) AS VARCHAR) AS countries,
        {brands} AS brands,
        {unique_scans_n} AS unique_scans_n

-- name: copy_number
-- A dump row's copy number (1: the copy its code keeps), its recency filled in imports.py.
row_number() OVER (PARTITION BY p.code ORDER BY {recency} DESC NULLS LAST,
            p.file_row_number DESC) AS copy_number

-- name: facts
-- At launch: the facts of the job's input products. One row per code, by the launch's rule
-- (selection.sql, `excluded`): a code the dump holds twice takes its most recently modified row
-- (greatest last_modified_t, NULL lowest), then the later one in the file; NUL, which
-- PostgreSQL text cannot hold, is removed from every text (pg_text, extraction.PG_TEXT_MACROS).
-- The launch's pass writes the same facts from the rows it selected (selection.sql, `facts`);
-- this statement reads them from a dump (tests compare the two).
SELECT code, lang, ingredients_text_lang, countries, brands, unique_scans_n
FROM (
    SELECT
        {fact_columns},
        {copy_number}
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
        {fact_columns},
        {copy_number}
    FROM read_parquet($dump_path, file_row_number = true) AS p
    WHERE p.code IN (SELECT code FROM job_codes)
)
SELECT j.code, d.lang, d.ingredients_text_lang, d.countries, d.brands, d.unique_scans_n,
    d.code IS NULL AS deleted
FROM job_codes j LEFT JOIN dump d ON d.code = j.code AND d.copy_number = 1
ORDER BY j.code
