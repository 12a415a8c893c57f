"""The lexicon of the offline CPU spellcheck engine, built from the OFF Parquet dump.

The dump's ``ingredients`` column is a JSON string: a list of parsed ingredient objects
(``id`` such as ``"en:sugar"``, ``text`` as written on the pack, ``is_in_taxonomy`` 1/0 or a
boolean, nested ``ingredients`` for sub-ingredients). Only ingredients known to the taxonomy are
kept; their ``text`` is lowercased and split into words, counted per **product language** (the
dump's ``lang`` column: the ``ingredients`` list is parsed from the product's main ingredients
text, which is written in ``lang``). The ingredient id's prefix is *not* used: it is the
taxonomy's canonical language (``en:`` for most entries, whatever the text's language), so it
would file the Spanish ``vainilla`` under English. Products without a ``lang`` are skipped.
Output schema (docs/CONTRACTS.md): lang, word, n.
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
    f"SELECT lang, unnest(json_extract(ingredients, '{path}')) AS obj FROM products"
    for path in _LEVEL_PATHS
)

# The path list is a constant of this module (no user value), so it is inlined; the dump
# path and the minimum word length are bound parameters.
_LEXICON_SQL = f"""
WITH products AS (
    SELECT
        lower(trim(CAST(lang AS VARCHAR))) AS lang,
        CAST(ingredients AS VARCHAR) AS ingredients
    FROM read_parquet($path)
    WHERE ingredients IS NOT NULL AND json_valid(CAST(ingredients AS VARCHAR))
      AND lang IS NOT NULL AND trim(CAST(lang AS VARCHAR)) <> ''
),
levels AS (
    {_LEVELS_UNION}
),
known AS (
    SELECT
        lang,
        json_extract_string(obj, '$.id') AS id,
        json_extract_string(obj, '$.text') AS text,
        lower(coalesce(json_extract_string(obj, '$.is_in_taxonomy'), '0')) AS in_taxonomy
    FROM levels
),
words AS (
    SELECT
        lang,
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
    """Count the lowercase words of taxonomy-known ingredients per product language.

    Works on both the current and the older dump schema (only ``lang`` and ``ingredients``
    are read). ``lang`` is the language of the product (of the text the ingredients were
    parsed from), lowercased; products without one are skipped.
    Words shorter than ``min_length`` letters are dropped. Returns a table with
    ``LEXICON_SCHEMA`` (lang, word, n), sorted by lang then decreasing count.
    """
    relation = con.sql(_LEXICON_SQL, params={"path": dump_path, "min_length": min_length})
    table = relation.to_arrow_table()
    return table.cast(LEXICON_SCHEMA)
