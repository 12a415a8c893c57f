"""The lexicon of the offline CPU spellcheck engine, built from the OFF Parquet dump.

The dump's ``ingredients`` column is a JSON string: a list of parsed ingredient objects
(``id`` such as ``"en:sugar"``, ``text`` as written on the pack, ``is_in_taxonomy`` 1/0 or a
boolean, nested ``ingredients`` for sub-ingredients). Only ingredients known to the taxonomy are
kept; their ``text`` is lowercased and split into words, counted per taxonomy language (the
prefix of the ingredient id). Output schema (docs/CONTRACTS.md): lang, word, n.
"""

from __future__ import annotations

import duckdb
import pyarrow as pa

LEXICON_SCHEMA = pa.schema(
    [
        pa.field("lang", pa.string()),
        pa.field("word", pa.string()),
        pa.field("n", pa.int64()),
    ]
)

# JSON paths of the ingredient objects, one per nesting level (OFF's parser nests
# sub-ingredients; depth 4 covers what the dump holds in practice).
MAX_DEPTH = 4
_LEVEL_PATHS = ["$[*]" + ".ingredients[*]" * level for level in range(MAX_DEPTH)]

_LEVELS_UNION = "\n    UNION ALL\n    ".join(
    f"SELECT unnest(json_extract(ingredients, '{path}')) AS obj FROM products"
    for path in _LEVEL_PATHS
)

# The path list is a constant of this module (no user value), so it is inlined; the dump
# path and the minimum word length are bound parameters.
_LEXICON_SQL = f"""
WITH products AS (
    SELECT CAST(ingredients AS VARCHAR) AS ingredients
    FROM read_parquet($path)
    WHERE ingredients IS NOT NULL AND json_valid(CAST(ingredients AS VARCHAR))
),
levels AS (
    {_LEVELS_UNION}
),
known AS (
    SELECT
        json_extract_string(obj, '$.id') AS id,
        json_extract_string(obj, '$.text') AS text,
        lower(coalesce(json_extract_string(obj, '$.is_in_taxonomy'), '0')) AS in_taxonomy
    FROM levels
),
words AS (
    SELECT
        lower(split_part(id, ':', 1)) AS lang,
        unnest(regexp_extract_all(lower(text), '\\p{{L}}+')) AS word
    FROM known
    WHERE in_taxonomy IN ('1', 'true') AND id LIKE '%:%' AND text IS NOT NULL
)
SELECT lang, word, count(*)::BIGINT AS n
FROM words
WHERE length(word) >= $min_length
GROUP BY lang, word
ORDER BY lang, n DESC, word
"""


def build_lexicon(
    con: duckdb.DuckDBPyConnection, dump_path: str, *, min_length: int = 2
) -> pa.Table:
    """Count the lowercase words of taxonomy-known ingredients in an OFF Parquet dump.

    Works on both the current and the older dump schema (only ``ingredients`` is read).
    Words shorter than ``min_length`` letters are dropped. Returns a table with
    ``LEXICON_SCHEMA`` (lang, word, n), sorted by lang then decreasing count.
    """
    relation = con.sql(_LEXICON_SQL, params={"path": dump_path, "min_length": min_length})
    table = relation.to_arrow_table()
    return table.cast(LEXICON_SCHEMA)
