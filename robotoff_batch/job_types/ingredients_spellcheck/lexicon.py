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

# OFF's parser nests sub-ingredients; depth 4 covers what the dump holds in practice.
MAX_DEPTH = 4


def _tree_type(depth: int) -> str:
    """The json_transform type of the ingredient tree: only the fields the lexicon reads, so
    each product's JSON is parsed once (not once per level and field)."""
    fields = '"id":"VARCHAR","text":"VARCHAR","is_in_taxonomy":"VARCHAR"'
    if depth > 1:
        fields += f',"ingredients":{_tree_type(depth - 1)}'
    return f"[{{{fields}}}]"


_KNOWN = (
    "lower(coalesce(o.is_in_taxonomy, '0')) IN ('1', 'true') "
    "AND o.id LIKE '%:%' AND o.text IS NOT NULL"
)


def lexicon_tree_sql(table: str = "p") -> str:
    """The ingredient tree of a dump row (SQL), parsed once; NULL for a row without a
    language (skipped) or without a parseable ``ingredients`` JSON list."""
    return (
        f"CASE WHEN {lexicon_lang_sql(table)} IS NOT NULL "
        f"THEN try(json_transform(CAST({table}.ingredients AS VARCHAR), "
        f"'{_tree_type(MAX_DEPTH)}')) END"
    )


def lexicon_lang_sql(table: str = "p") -> str:
    """The lexicon language of a dump row (SQL): the product's ``lang``, lowercased and
    trimmed; NULL when missing or empty (the row is skipped)."""
    return f"nullif(lower(trim(CAST({table}.lang AS VARCHAR))), '')"


def lexicon_words_sql(source: str, *, min_length: int = 2) -> str:
    """``source`` (a subquery with a ``lexicon_tree`` column, :func:`lexicon_tree_sql`) with
    that column replaced by ``words``: the lowercase words of the row's taxonomy-known
    ingredients (every nesting level; an id ``lang:...`` and a text), of at least
    ``min_length`` letters (SQL).

    One rule, used by :func:`build_lexicon` and by the launch's single pass over the dump
    (``selection.py``); the words are counted by :data:`LEXICON_COUNTS_SQL`. Levels are
    flattened one subquery each, so the tree is walked once per level, not once per field.
    """
    query = f"SELECT * EXCLUDE (lexicon_tree), lexicon_tree AS lx0 FROM ({source})"
    for level in range(1, MAX_DEPTH):
        query = (
            f"SELECT *, flatten(list_transform(lx{level - 1}, lambda o: o.ingredients)) "
            f"AS lx{level} FROM ({query})"
        )
    per_level = ", ".join(
        f"flatten(list_transform(list_filter(lx{level}, lambda o: {_KNOWN}), "
        "lambda o: regexp_extract_all(lower(o.text), '\\p{L}+')))"
        for level in range(MAX_DEPTH)
    )
    drop = ", ".join(f"lx{level}" for level in range(MAX_DEPTH))
    return (
        f"SELECT * EXCLUDE ({drop}), list_filter(flatten([{per_level}]), "
        f"lambda w: length(w) >= {int(min_length)}) AS words FROM ({query})"
    )


# Counts of the words of a relation of (lang, words) rows ({source}: a table or subquery).
LEXICON_COUNTS_SQL = """
SELECT lang, word, count(*)::BIGINT AS n
FROM (SELECT lang, unnest(words) AS word FROM {source})
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
    ``LEXICON_SCHEMA`` (lang, word, n), sorted by lang then decreasing count. (A launch
    counts the same words in its one pass over the dump: ``selection.py``.)
    """
    rows = (
        f"(SELECT {lexicon_lang_sql()} AS lang, {lexicon_tree_sql()} AS lexicon_tree "
        "FROM read_parquet($path) AS p)"
    )
    source = f"({lexicon_words_sql(rows, min_length=min_length)})"
    relation = con.sql(LEXICON_COUNTS_SQL.format(source=source), params={"path": dump_path})
    return relation.to_arrow_table().cast(LEXICON_SCHEMA)
