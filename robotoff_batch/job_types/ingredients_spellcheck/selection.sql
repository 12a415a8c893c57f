-- ingredients-spellcheck: the launch's ONE pass over the dump, then Robotoff's selection.
--
-- Robotoff's selection (robotoff/batch/__init__.py::extract_from_dataset), rewritten for
-- DuckDB >= 2.0 (`lambda x: ...` instead of the rejected `x -> ...`) and extended with optional
-- filters. Only columns present in BOTH the current (111 columns) and the older (110 columns,
-- ecoscore_*, no schema_version) dump schemas are required; `last_modified_t`, `brands_tags`
-- and `unique_scans_n` are read when the dump has them ({...} fragments, selection.py).
--
-- The dump is read once (`pass`): per row, its code and modification time, and for a product
-- the selection keeps (a candidate) what the launch stages: the input columns and the raw
-- columns the product facts are computed from (facts.sql, run on the selected rows); with the
-- CPU engine, also the row's lexicon words ({lexicon_*}, lexicon.py). Everything after reads
-- the pass's temporary table, bounded by DuckDB's memory_limit (it spills beyond it).
--
-- Nothing is staged that the import would refuse (issue 17, point 7):
--   * one row per barcode: when the dump holds a code more than once, the most recently
--     modified row (greatest last_modified_t, NULL lowest), then the later one in the file,
--     is the product; the other rows are dropped (`stale`), counted in the launch metadata;
--   * a row whose code is NULL, empty or holds a NUL character is dropped, counted;
--   * the NUL character, the one character PostgreSQL text cannot hold (every other one of
--     valid UTF-8, which is all DuckDB strings can be, it can), is removed from every staged
--     text (pg_text, extraction.PG_TEXT_MACROS) before the filters; the products it was
--     removed from are counted.
--
-- Named parameters (bound by DuckDB, never interpolated):
--   $dump_path      VARCHAR    the OFF Parquet dump
--   $limit          BIGINT     most popular N products
--   $min_fraction   DOUBLE     unknown/total ingredients must be > this (exclusive)
--   $max_fraction   DOUBLE     ... and <= this (inclusive)
--   $languages      VARCHAR[]  product `lang` in this list; NULL or [] for all
--   $countries      VARCHAR[]  any of countries_tags in this list; NULL or [] for all
--   $min_popularity BIGINT     popularity_key >= this; NULL for no minimum
--   $codes          VARCHAR[]  only these barcodes; NULL or [] for all
--
-- Output `input` (CONTRACTS.md, input Parquet of ingredients-spellcheck):
--   code, lang, text, product_name, popularity_key, fraction

-- name: scan
SELECT
    p.file_row_number AS dump_row,
    CAST(p.code AS VARCHAR) AS code,
    p.code IS NOT NULL AND trim(p.code) <> '' AND NOT has_nul(p.code) AS valid_code,
    {last_modified_t} AS last_modified_t,
    CAST(p.lang AS VARCHAR) AS lang,
    list_filter(p.ingredients_text, lambda x: x.lang = 'main')[1].text AS raw_text,
    pg_text(raw_text) AS text,
    coalesce(
        nullif(trim(list_filter(p.product_name, lambda x: x.lang = 'main')[1].text), ''),
        nullif(trim(list_filter(p.product_name, lambda x: x.lang = p.lang)[1].text), '')
    ) AS product_name,
    CAST(p.popularity_key AS BIGINT) AS popularity_key,
    p.ingredients_n,
    p.unknown_ingredients_n,
    CAST(p.unknown_ingredients_n AS DOUBLE) / p.ingredients_n AS fraction,
    p.countries_tags,
    {facts_columns},
    {lexicon_scan}
FROM read_parquet($dump_path, file_row_number = true) AS p

-- name: pass
CREATE TEMP TABLE launch_pass AS
SELECT
    dump_row,
    code,
    last_modified_t,
    valid_code,
    coalesce(candidate, false) AS candidate,
    -- a candidate's columns, NULL for the other rows (kept narrow: the dedup reads them all)
    CASE WHEN candidate THEN popularity_key END AS popularity_key,
    CASE WHEN candidate THEN pg_text(lang) END AS lang,
    CASE WHEN candidate THEN text END AS text,
    CASE WHEN candidate THEN pg_text(product_name) END AS product_name,
    CASE WHEN candidate THEN fraction END AS fraction,
    CASE WHEN candidate THEN has_nul(raw_text) OR has_nul(product_name) OR has_nul(lang) END
        AS nul,
    CASE WHEN candidate THEN lang END AS f_lang,
    {facts_pass},
    {lexicon_select}
FROM (
    SELECT
        *,
        valid_code
        AND ingredients_n > 0
        AND unknown_ingredients_n IS NOT NULL
        AND (
            CAST($languages AS VARCHAR[]) IS NULL
            OR len(CAST($languages AS VARCHAR[])) = 0
            OR list_contains(CAST($languages AS VARCHAR[]), lang)
        )
        AND (
            CAST($countries AS VARCHAR[]) IS NULL
            OR len(CAST($countries AS VARCHAR[])) = 0
            OR list_has_any(countries_tags, CAST($countries AS VARCHAR[]))
        )
        AND (
            CAST($min_popularity AS BIGINT) IS NULL
            OR popularity_key >= CAST($min_popularity AS BIGINT)
        )
        AND (
            CAST($codes AS VARCHAR[]) IS NULL
            OR len(CAST($codes AS VARCHAR[])) = 0
            OR list_contains(CAST($codes AS VARCHAR[]), code)
        )
        AND text IS NOT NULL
        AND trim(text) <> ''
        AND fraction > CAST($min_fraction AS DOUBLE)
        AND fraction <= CAST($max_fraction AS DOUBLE) AS candidate
    FROM ({scan})
) AS p

-- name: stale
-- Every row of a barcode the dump holds more than once, but its most recent one.
CREATE TEMP TABLE launch_stale AS
SELECT dump_row, code
FROM launch_pass
WHERE valid_code
  AND code IN (SELECT code FROM launch_pass WHERE valid_code GROUP BY code HAVING count(*) > 1)
QUALIFY row_number() OVER (
    PARTITION BY code ORDER BY last_modified_t DESC NULLS LAST, dump_row DESC
) > 1

-- name: selected
-- Robotoff's order on the narrow columns first; only the chosen rows' texts are read after.
CREATE TEMP TABLE launch_selected AS
SELECT row_number() OVER (ORDER BY popularity_key DESC NULLS LAST, code) AS rank, *
FROM launch_pass
WHERE dump_row IN (
    SELECT dump_row
    FROM launch_pass
    WHERE candidate
      AND dump_row NOT IN (SELECT dump_row FROM launch_stale)
    ORDER BY popularity_key DESC NULLS LAST, code
    LIMIT CAST($limit AS BIGINT)
)

-- name: input
SELECT code, lang, text, product_name, popularity_key, fraction
FROM launch_selected
ORDER BY rank

-- name: facts_source
-- The selected products' raw fact columns, as the dump names them (facts.sql reads them),
-- NUL removed.
SELECT {facts_source}
FROM launch_selected
ORDER BY code

-- name: stats
SELECT
    count(*) AS dump_rows,
    count(*) FILTER (WHERE NOT valid_code) AS invalid_code_rows,
    (SELECT count(*) FROM launch_stale) AS stale_rows,
    (SELECT count(DISTINCT code) FROM launch_stale) AS duplicated_barcodes,
    count(*) FILTER (WHERE candidate) AS candidates,
    (SELECT count(*) FROM launch_selected) AS selected,
    (SELECT count(*) FROM launch_selected WHERE nul OR {facts_nul}) AS nul_cleaned
FROM launch_pass

-- name: lexicon_rows
-- The pass's rows the lexicon counts: one per product (stale copies and dropped codes out),
-- with a language.
(SELECT lexicon_lang AS lang, words FROM launch_pass
 WHERE words IS NOT NULL AND valid_code
   AND dump_row NOT IN (SELECT dump_row FROM launch_stale))
