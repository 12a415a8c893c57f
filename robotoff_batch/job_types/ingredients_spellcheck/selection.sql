-- ingredients-spellcheck: select the products whose main ingredients text goes to the spellchecker.
--
-- Robotoff's selection (robotoff/batch/__init__.py::extract_from_dataset), rewritten for
-- DuckDB >= 2.0 (`lambda x: ...` instead of the rejected `x -> ...`) and extended with optional
-- filters. Only columns present in BOTH the current (111 columns) and the older (110 columns,
-- ecoscore_*, no schema_version) dump schemas are referenced.
--
-- Columns read (checked beforehand by extraction.check_dump with
-- extraction.SPELLCHECK_REQUIRED_COLUMNS):
--   code VARCHAR, lang VARCHAR, ingredients_text STRUCT(lang, text)[],
--   product_name STRUCT(lang, text)[], popularity_key BIGINT, ingredients_n INTEGER,
--   unknown_ingredients_n INTEGER, countries_tags VARCHAR[]
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
-- Output (CONTRACTS.md, input Parquet of ingredients-spellcheck):
--   code, lang, text, product_name, popularity_key, fraction
WITH products AS (
    SELECT
        code,
        lang,
        list_filter(ingredients_text, lambda x: x.lang = 'main')[1].text AS text,
        coalesce(
            nullif(trim(list_filter(product_name, lambda x: x.lang = 'main')[1].text), ''),
            nullif(trim(list_filter(product_name, lambda x: x.lang = p.lang)[1].text), '')
        ) AS product_name,
        popularity_key,
        CAST(unknown_ingredients_n AS DOUBLE) / ingredients_n AS fraction
    FROM read_parquet($dump_path) AS p
    WHERE code IS NOT NULL
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
          OR code IN (SELECT unnest(CAST($codes AS VARCHAR[])))
      )
)
SELECT
    CAST(code AS VARCHAR) AS code,
    CAST(lang AS VARCHAR) AS lang,
    CAST(text AS VARCHAR) AS text,
    CAST(product_name AS VARCHAR) AS product_name,
    CAST(popularity_key AS BIGINT) AS popularity_key,
    CAST(fraction AS DOUBLE) AS fraction
FROM products
WHERE text IS NOT NULL
  AND trim(text) <> ''
  AND fraction > CAST($min_fraction AS DOUBLE)
  AND fraction <= CAST($max_fraction AS DOUBLE)
ORDER BY popularity_key DESC NULLS LAST, code
LIMIT CAST($limit AS BIGINT)
