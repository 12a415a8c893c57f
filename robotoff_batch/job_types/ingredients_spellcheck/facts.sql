-- ingredients-spellcheck: the facts of the selected products that Robotoff's insight rules read
-- (written beside the input as products.parquet, read back by the import). DuckDB.
--   $dump_path   VARCHAR  the OFF Parquet dump the input was extracted from
--   $input_path  VARCHAR  the job's input.parquet
-- {brands} and {unique_scans_n} are replaced by the store of constant fragments in
-- imports.py (NULL when an older or test dump lacks the column).
SELECT
    CAST(p.code AS VARCHAR) AS code,
    CAST(p.lang AS VARCHAR) AS lang,
    CAST(list_filter(p.ingredients_text, lambda x: x.lang = p.lang)[1].text AS VARCHAR)
        AS ingredients_text_lang,
    CAST(to_json(coalesce(p.countries_tags, CAST([] AS VARCHAR[]))) AS VARCHAR) AS countries,
    {brands} AS brands,
    {unique_scans_n} AS unique_scans_n
FROM read_parquet($dump_path) AS p
WHERE p.code IN (SELECT code FROM read_parquet($input_path))
ORDER BY p.code
