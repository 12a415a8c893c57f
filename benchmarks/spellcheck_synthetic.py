"""Held-out spellcheck rows: real OFF ingredient texts with typos injected by a seeded noise model.

The dev slice (53 rows) is what the engine's thresholds were chosen on; these rows are texts it
has never seen. Source: the main ingredients texts of the two sample dumps whose parsed
ingredients are almost all known to the taxonomy (a proxy for a clean text), in languages the
engine has word lists for. The *reference* is the text as it is; the *original* is the text
with noise: per word of 4+ letters, with probability ``rate``, one of the errors seen on
packs (OCR and typing): accents dropped, a letter deleted, two letters swapped, an OCR
confusion (``m``->``rn``, ``e``->``c``, ``l``->``i``...), a letter replaced or inserted, or the
space before a short word removed (``de gluten`` -> ``degluten``).
Rows alternate between a ``tune`` half and a ``heldout`` half. The food lexicon used for a
row is built from the *other* sample dump only, so the row's own words are not in it by
construction.

Data: Open Food Facts contributors, ODbL 1.0.
"""

from __future__ import annotations

import random
import re
import unicodedata
from pathlib import Path

import duckdb

# Each source dump's rows are corrected with a food lexicon built from the other dump.
PAIRS = (
    ("off/food_sample_2026.parquet", "off/food_sample_2025_old_schema.parquet"),
    ("off/food_sample_2025_old_schema.parquet", "off/food_sample_2026.parquet"),
)
LANGS = ("fr", "en", "de", "es", "it", "nl", "pt")
_WORD = re.compile(r"[^\W\d_]+")
_OCR = (("m", "rn"), ("e", "c"), ("l", "i"), ("i", "l"), ("n", "u"), ("d", "cl"), ("o", "0"))
_LETTERS = "abcdefghijklmnopqrstuvwxyz"


def clean_texts(data_dir: Path, dump: str, min_known: float = 0.95) -> list[dict[str, str]]:
    """(code, lang, text) of the sample's main texts whose ingredients are nearly all known."""
    con = duckdb.connect()
    rows = con.sql(
        """
        SELECT code, lang, text FROM (
            SELECT code, lower(lang) AS lang,
                   list_filter(ingredients_text, lambda x: x.lang = 'main')[1].text AS text,
                   known_ingredients_n, ingredients_n
            FROM read_parquet($path)
        )
        WHERE text IS NOT NULL AND length(text) >= 20 AND ingredients_n >= 3
          AND known_ingredients_n >= $min_known * ingredients_n
          AND text NOT LIKE '%<%'
        ORDER BY code
        """,
        params={"path": str(data_dir / dump), "min_known": min_known},
    ).fetchall()
    return [{"code": c, "lang": lang, "text": t} for c, lang, t in rows if lang in LANGS]


def _strip(word: str) -> str:
    return "".join(c for c in unicodedata.normalize("NFD", word) if not unicodedata.combining(c))


def corrupt_word(word: str, rng: random.Random) -> str:
    """One error in ``word`` (4+ letters)."""
    kind = rng.choice(["accent", "delete", "swap", "ocr", "replace", "insert"])
    if kind == "accent" and _strip(word) != word:
        return unicodedata.normalize("NFC", _strip(word))
    i = rng.randrange(1, len(word) - 1)
    if kind == "delete":
        return word[:i] + word[i + 1 :]
    if kind == "swap":
        return word[:i] + word[i + 1] + word[i] + word[i + 2 :]
    if kind == "ocr":
        options = [(a, b) for a, b in _OCR if a in word.lower()]
        if options:
            a, b = rng.choice(options)
            j = word.lower().find(a)
            b = b.upper() if word[j].isupper() else b
            return word[:j] + b + word[j + len(a) :]
    if kind == "insert":
        c = rng.choice(_LETTERS)
        return word[:i] + (c.upper() if word.isupper() else c) + word[i:]
    c = rng.choice(_LETTERS)
    return word[:i] + (c.upper() if word.isupper() else c) + word[i + 1 :]


def corrupt(text: str, rng: random.Random, rate: float) -> str:
    """``text`` with noise (see the module docstring); may return it unchanged."""
    out: list[str] = []
    last = 0
    for match in _WORD.finditer(text):
        word = match.group(0)
        start, end = match.span()
        gap = text[last:start]
        if len(word) <= 3 and gap == " " and out and word.islower() and rng.random() < rate / 2:
            gap = ""  # "de gluten" -> "degluten"
        out.append(gap)
        out.append(corrupt_word(word, rng) if len(word) >= 4 and rng.random() < rate else word)
        last = end
    out.append(text[last:])
    return "".join(out)


def synthetic_rows(
    data_dir: Path, seed: int = 11, rate: float = 0.06
) -> dict[str, list[dict[str, str]]]:
    """{"tune": rows, "heldout": rows}: original (noisy), reference (clean), lang, and
    ``lexicon_dump`` (the dump whose food lexicon corrects the row)."""
    rng = random.Random(seed)
    halves: dict[str, list[dict[str, str]]] = {"tune": [], "heldout": []}
    k = 0
    for source, lexicon in PAIRS:
        for row in clean_texts(data_dir, source):
            noisy = corrupt(row["text"], rng, rate)
            if noisy == row["text"]:
                continue
            half = "tune" if k % 2 == 0 else "heldout"
            k += 1
            halves[half].append(
                {
                    "original": noisy,
                    "reference": row["text"],
                    "lang": row["lang"],
                    "lexicon_dump": lexicon,
                }
            )
    return halves
