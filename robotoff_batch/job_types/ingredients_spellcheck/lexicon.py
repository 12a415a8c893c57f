"""The lexicon of the offline CPU spellcheck engine, built from the OFF Parquet dump.

The words of the main ingredients text (the ``ingredients_text`` entry ``main``: the text OFF's
parser read the product's ingredients from) of every product whose ingredients the parser
*all* recognised (``ingredients_n > 0`` and ``unknown_ingredients_n = 0``: every ingredient is
known to the taxonomy, so the text's words are those of known ingredients and of the list
around them), lowercased, letter runs of at least ``min_length`` letters, counted per
**product language** (the dump's ``lang``: the main text is written in it). Products without a
``lang`` are skipped. Output schema (docs/CONTRACTS.md): lang, word, n.

Why not the ``ingredients`` JSON (each parsed ingredient's ``text`` and ``is_in_taxonomy``,
the rule before issue 23): on a 1M-row dump that column is 5.3 GB uncompressed; reading it
alone cost more CPU than Robotoff's whole selection, parsing it ~6x (benchmarks/results/
launch.md), so the launch on a new dump took 9.4x the bare selection. The per-product counts
are the same parser's verdict, and the main text is read by the selection anyway: the launch
now counts the lexicon for 0.4-0.8x the bare selection's CPU (benchmarks/results/launch.md),
at the quality benchmarks/spellcheck_benchmark.py reports (dev recall -0.7 point, precision
held: docs/spellcheck-cpu-engine.md).

The words are counted in two steps, vectorised in DuckDB: the text is split at spaces and the
(lang, token) pairs counted (a cheap split; tokens repeat), then only the distinct tokens are
lowercased and cut into letter runs (``regexp_extract_all``), their counts summed. Splitting at
a space (not a letter) never cuts nor joins a letter run, so the counts are exactly those of
the letter runs of the whole lowercased text, for a quarter of the CPU.
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

# The dump's columns the lexicon reads (all of them also read by the selection).
LEXICON_COLUMNS = ("lang", "ingredients_text", "ingredients_n", "unknown_ingredients_n")


def lexicon_lang_sql(table: str = "p") -> str:
    """The lexicon language of a dump row (SQL): the product's ``lang``, lowercased and
    trimmed; NULL when missing or empty (the row is skipped)."""
    return f"nullif(lower(trim(CAST({table}.lang AS VARCHAR))), '')"


def lexicon_text_sql(table: str = "p") -> str:
    """The text a dump row gives the lexicon (SQL): its main ingredients text when the row has a
    language and every one of its ingredients is known to the taxonomy; else NULL (skipped)."""
    return (
        f"CASE WHEN {lexicon_lang_sql(table)} IS NOT NULL AND {table}.ingredients_n > 0 "
        f"AND {table}.unknown_ingredients_n = 0 "
        f"THEN list_filter({table}.ingredients_text, lambda x: x.lang = 'main')[1].text END"
    )


def lexicon_counts_sql(source: str, *, min_length: int = 2) -> str:
    """The lexicon counts (lang, word, n) of ``source``, a table or subquery of (lang, text)
    rows, one per product (rows with a NULL lang or text are skipped); sorted by lang then
    decreasing count then word. One rule, used by :func:`build_lexicon` and by the launch's
    single pass over the dump (``selection.py``)."""
    return f"""
SELECT lang, word, sum(n)::BIGINT AS n
FROM (
    SELECT lang, unnest(regexp_extract_all(lower(token), '\\p{{L}}+')) AS word, n
    FROM (
        SELECT lang, token, count(*) AS n
        FROM (
            SELECT lang, unnest(string_split(text, ' ')) AS token
            FROM {source}
            WHERE lang IS NOT NULL AND text IS NOT NULL
        )
        GROUP BY lang, token
    )
)
WHERE length(word) >= {int(min_length)}
GROUP BY lang, word
ORDER BY lang, n DESC, word
"""


def build_lexicon(
    con: duckdb.DuckDBPyConnection, dump_path: str, *, min_length: int = 2
) -> pa.Table:
    """Count the lowercase words of the main ingredients texts whose ingredients are all
    taxonomy-known, per product language (the module's rule).

    Works on both the current and the older dump schema (only :data:`LEXICON_COLUMNS` are
    read). Words shorter than ``min_length`` letters are dropped. Returns a table with
    ``LEXICON_SCHEMA`` (lang, word, n), sorted by lang then decreasing count. Every row of the
    file counts (a launch counts the same words in its one pass over the dump, each barcode
    once: ``selection.py``).
    """
    rows = (
        f"(SELECT {lexicon_lang_sql()} AS lang, {lexicon_text_sql()} AS text "
        "FROM read_parquet($path) AS p)"
    )
    relation = con.sql(lexicon_counts_sql(rows, min_length=min_length), params={"path": dump_path})
    return relation.to_arrow_table().cast(LEXICON_SCHEMA)
