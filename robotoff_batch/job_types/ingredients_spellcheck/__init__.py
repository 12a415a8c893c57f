"""ingredients-spellcheck: correct typos in the ingredient lists of products.

Selection (Robotoff's): the product's main ingredients text, non-empty, with a fraction of
ingredients unknown to the taxonomy in (min_fraction, max_fraction], most popular first.
The container writes one Parquet per task (code, lang, text, correction, engine...); rows whose
correction differs from the text become Robotoff predictions of type ``ingredient_spellcheck``
and, by Robotoff's importer rules, ``ingredient_spellcheck`` insights (``import.sql``,
``insights.sql``), checked against the product facts the extraction wrote beside the input
(``products.parquet``). See README.md in this directory.
"""

from robotoff_batch.job_types.ingredients_spellcheck.imports import FACTS_SCHEMA
from robotoff_batch.job_types.ingredients_spellcheck.job_type import (
    JOB_TYPE,
    IngredientsSpellcheck,
    cached_lexicon,
    extract,
)
from robotoff_batch.job_types.ingredients_spellcheck.selection import (
    SPELLCHECK_INPUT_SCHEMA,
    SPELLCHECK_REQUIRED_COLUMNS,
    SpellcheckLaunch,
    extract_spellcheck_products,
)

__all__ = [
    "FACTS_SCHEMA",
    "JOB_TYPE",
    "SPELLCHECK_INPUT_SCHEMA",
    "SPELLCHECK_REQUIRED_COLUMNS",
    "IngredientsSpellcheck",
    "SpellcheckLaunch",
    "cached_lexicon",
    "extract",
    "extract_spellcheck_products",
]
