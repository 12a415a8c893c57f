-- ingredients-spellcheck: the launch's ONE pass over the dump, then Robotoff's selection.
--
-- Robotoff's selection (robotoff/batch/__init__.py::extract_from_dataset), rewritten for
-- DuckDB >= 2.0 (`lambda x: ...` instead of the rejected `x -> ...`) and extended with optional
-- filters. Only columns present in BOTH the current (111 columns) and the older (110 columns,
-- ecoscore_*, no schema_version) dump schemas are required; `last_modified_t`, `brands_tags`
-- and `unique_scans_n` are read when the dump has them ({...} fragments, selection.py).
--
-- Each column of the dump is read once, except `code` (and `lang` with the CPU engine): `keys`
-- reads every row's code and modification time (and, with the CPU engine, the main text of the
-- rows whose ingredients are all known, for the lexicon: {lexicon_*}, lexicon.py; so `lang`,
-- `ingredients_text`, `ingredients_n`, `unknown_ingredients_n` are read twice, ~0.4 s CPU on a
-- 1M dump, in place of the `ingredients` JSON before issue 23); `selected` is
-- Robotoff's selection, without the rows `keys` excludes, carrying the raw columns the product
-- facts are computed from (`facts`, facts.sql's columns, on the selected rows only, in the same
-- connection): no second scan for the facts. DuckDB's memory_limit bounds it all (it spills
-- beyond it).
--
-- Nothing is staged that the import would refuse (issue 17, point 7):
--   * one row per barcode: when the dump holds a code more than once, the most recently
--     modified row (greatest last_modified_t, NULL lowest), then the later one in the file,
--     is the product; the other rows are dropped (`stale`), counted in the launch metadata;
--   * a row whose code is NULL, empty or holds a NUL character is dropped, counted;
--   * the NUL character, the one character PostgreSQL text cannot hold (every other one of
--     valid UTF-8, which is all DuckDB strings can be, it can), is removed from every staged
--     text (pg_text, extraction.PG_TEXT_MACROS) before the filters; the products it was
--     removed from (a staged text of input.parquet or products.parquet) are counted.
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
-- With skip_unchanged (issue 22), the rows of known.sql's launch_unchanged (this model already
-- gave a verdict on their current text) are left out before the top N ({unchanged_filter}).
--
-- Output `input` (CONTRACTS.md, input Parquet of ingredients-spellcheck):
--   code, lang, text, product_name, popularity_key, fraction

-- name: keys
CREATE TEMP TABLE launch_keys AS
SELECT dump_row, code, valid_code, last_modified_t, {lexicon_select}
FROM ({scan}) AS p

-- name: scan
SELECT
    p.file_row_number AS dump_row,
    CAST(p.code AS VARCHAR) AS code,
    -- a code starting with a printable ASCII character is not empty once trimmed: only the
    -- others (rare) pay the trim (~0.06 s of CPU on 1M rows)
    CASE
        WHEN ascii(p.code) BETWEEN 33 AND 126 THEN NOT has_nul(p.code)
        ELSE coalesce(p.code IS NOT NULL AND trim(p.code) <> '' AND NOT has_nul(p.code), false)
    END AS valid_code,
    {last_modified_t} AS last_modified_t,
    {lexicon_scan}
FROM read_parquet($dump_path, file_row_number = true) AS p

-- name: excluded
-- The rows no product is selected from: a bad code, or a barcode's older copy (every row of a
-- code the dump holds more than once but its most recent one).
CREATE TEMP TABLE launch_excluded AS
SELECT dump_row, code, 'invalid_code' AS why FROM launch_keys WHERE NOT valid_code
UNION ALL
SELECT dump_row, code, 'stale' AS why
FROM launch_keys
WHERE valid_code
  AND code IN (SELECT code FROM launch_keys WHERE valid_code GROUP BY code HAVING count(*) > 1)
QUALIFY row_number() OVER (
    PARTITION BY code ORDER BY last_modified_t DESC NULLS LAST, dump_row DESC
) > 1

-- name: selected
-- Robotoff's top N + (the number of excluded rows), the excluded ones then dropped: the same N
-- products as excluding them first, and the top-N statement stays join-free. {top_n} is that
-- number as a literal (selection.py: an int), as Robotoff writes its LIMIT. The NUL is
-- removed (and counted) from the chosen rows only, after the top-N: cleaning every candidate
-- row's texts cost more than the rest of the statement. The filter on the text holds on the
-- cleaned text (a text of NULs and spaces only is empty): `trim(pg_text(t)) <> ''` is
-- Robotoff's `t IS NOT NULL AND trim(t) <> ''` when t holds no NUL, and implies it when it does
-- (DuckDB's trim removes Unicode spaces too: U+00A0, U+3000).
-- What it costs (benchmarks/results/launch.md): every expression of a candidate row runs on
-- ~410k rows of the 1M dump, and the filter's, pushed into the scan's, once per use. So the
-- cheap fraction filter comes first, each text is one entry read (language_text, the first
-- entries tried before a filtered list is built), and the facts carry one string (the product
-- language's plain ingredients text, facts.sql's macro), not that language's list.
CREATE TEMP TABLE launch_selected AS
SELECT
    row_number() OVER (ORDER BY popularity_key DESC NULLS LAST, code) AS rank,
    * EXCLUDE (raw_lang, raw_text, raw_product_name),
    pg_text(raw_lang) AS lang,
    pg_text(raw_text) AS text,
    pg_text(raw_product_name) AS product_name,
    has_nul(raw_text) OR has_nul(raw_product_name) OR has_nul(raw_lang) AS nul
FROM (
    SELECT *
    FROM (
        SELECT
            p.file_row_number AS dump_row,
            CAST(p.code AS VARCHAR) AS code,
            CAST(p.lang AS VARCHAR) AS raw_lang,
            language_text(p.ingredients_text, 'main') AS raw_text,
            coalesce(
                nullif(trim(language_text(p.product_name, 'main')), ''),
                nullif(trim(language_text(p.product_name, p.lang)), '')
            ) AS raw_product_name,
            CAST(p.popularity_key AS BIGINT) AS popularity_key,
            CAST(p.unknown_ingredients_n AS DOUBLE) / p.ingredients_n AS fraction,
            {facts_columns}
        FROM read_parquet($dump_path, file_row_number = true) AS p
        WHERE {candidate_rows}
    )
    WHERE fraction > CAST($min_fraction AS DOUBLE)
      AND fraction <= CAST($max_fraction AS DOUBLE)
      AND CASE  -- a printable ASCII first character stays once cleaned and trimmed
          WHEN ascii(raw_text) BETWEEN 33 AND 126 THEN true
          ELSE trim(pg_text(raw_text)) <> ''
      END
      AND {unchanged_filter} -- skip_unchanged: known.sql's anti-join; else true
    ORDER BY popularity_key DESC NULLS LAST, code
    LIMIT {top_n}
)
WHERE dump_row NOT IN (SELECT dump_row FROM launch_excluded)
QUALIFY rank <= CAST($limit AS BIGINT)

-- name: input
SELECT code, lang, text, product_name, popularity_key, fraction
FROM launch_selected
ORDER BY rank

-- name: facts
-- The selected products' facts (products.parquet), by facts.sql's rule (fact_columns) on
-- the raw columns the selection carried (launch_selected is one row per code already).
SELECT {fact_columns}
FROM (SELECT {facts_source} FROM launch_selected) AS p
ORDER BY code

-- name: stats
SELECT
    count(*) AS dump_rows,
    count(*) FILTER (WHERE NOT valid_code) AS invalid_code_rows,
    (SELECT count(*) FROM launch_excluded WHERE why = 'stale') AS stale_rows,
    (SELECT count(DISTINCT code) FROM launch_excluded WHERE why = 'stale') AS duplicated_barcodes,
    (SELECT count(*) FROM launch_selected) AS selected,
    (SELECT count(*) FROM launch_selected WHERE nul OR {facts_nul}) AS nul_cleaned
FROM launch_keys

-- name: lexicon_rows
-- The rows the lexicon counts: one per product (older copies and bad codes out), with a
-- language.
(SELECT lexicon_lang AS lang, lexicon_text AS text FROM launch_keys
 WHERE lexicon_text IS NOT NULL AND dump_row NOT IN (SELECT dump_row FROM launch_excluded))

-- name: text_macro
-- A language's text from a language field (`list<struct<lang, text>>`): the first entry of
-- that language, as `list_filter(texts, lambda x: x.lang = language)[1].text` (Robotoff's
-- rule for `main`), the first two entries tried before a filtered list is built (the dump puts
-- `main` first, then usually the product's language).
CREATE OR REPLACE TEMP MACRO language_text(texts, language) AS
    CASE
        WHEN texts[1].lang = language THEN texts[1].text
        WHEN texts[2].lang = language THEN texts[2].text
        ELSE list_filter(texts, lambda x: x.lang = language)[1].text
    END

-- name: candidate_rows
-- The dump rows (as `p`) the launch's parameters admit, before the text and fraction filters:
-- a fragment of `selected`, shared with known.sql's `unchanged` so that skipped_unchanged
-- counts only products this launch would otherwise have selected.
p.code IS NOT NULL
  AND p.ingredients_n > 0
  AND p.unknown_ingredients_n IS NOT NULL
  AND (
      CAST($languages AS VARCHAR[]) IS NULL
      OR len(CAST($languages AS VARCHAR[])) = 0
      OR list_contains(CAST($languages AS VARCHAR[]), p.lang)
  )
  AND (
      CAST($countries AS VARCHAR[]) IS NULL
      OR len(CAST($countries AS VARCHAR[])) = 0
      OR list_has_any(p.countries_tags, CAST($countries AS VARCHAR[]))
  )
  AND (
      CAST($min_popularity AS BIGINT) IS NULL
      OR p.popularity_key >= CAST($min_popularity AS BIGINT)
  )
  AND (
      CAST($codes AS VARCHAR[]) IS NULL
      OR len(CAST($codes AS VARCHAR[])) = 0
      OR list_contains(CAST($codes AS VARCHAR[]), CAST(p.code AS VARCHAR))
  )
