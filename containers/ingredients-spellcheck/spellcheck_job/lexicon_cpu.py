"""Offline CPU spellcheck engine: a lexicon of taxonomy-known ingredient words, precision first.

A wrong suggestion costs a volunteer's time, so the engine only changes a word when it is
confident:

* the text is cut into letter-only words and everything else (spaces, punctuation, digits,
  E-numbers, percentages...) which is copied byte for byte; a run of letters glued to digits
  (``E330``, ``T0``, ``5e``) is never touched, and allergen markup (``_lait_``) is kept;
* a word already in the lexicon (any language) is left alone; so are words shorter than
  ``min_length`` letters (accent restoration excepted, see below);
* **accents**: an unknown word without accents whose accent-stripped form matches exactly one
  lexicon word (``creme`` -> ``crème``) takes that word's accents, only in languages that use
  them (``ACCENT_LANGS``) and never for all-capitals words; accents are never removed;
* **typos**: an unknown word with a unique best lexicon candidate at Damerau-Levenshtein
  (optimal string alignment) distance 1 (2 for words of ``long_length`` letters or more when
  ``max_distance`` is 2), frequent enough (``min_count``) and clearly more frequent than a
  runner-up at the same distance, is replaced; edits confined to the last two letters
  (inflections: ``tomates``/``tomate``, ``oliva``/``olive``) or adding a first letter
  (``ananas``/``bananas``) are refused, since both forms are usually valid words;
* **split words**: ``léci - thines`` (a word cut by a hyphen at a line break, surrounded by
  spaces) is joined when the joined form is a lexicon word;
* the original casing pattern (UPPER, Title, lower) is re-applied to the replacement.

Candidates are found with a SymSpell-style deletion index, so a lookup costs a few dict probes.
The engine is deterministic: ties are broken by count then alphabetically.
"""

from __future__ import annotations

import re
import unicodedata
from collections import defaultdict
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass

ENGINE_NAME = "lexicon-cpu"

# Runs of letters/digits (underscore excluded, as Python's \w includes it).
_ALNUM = re.compile(r"[^\W_]+")
# "léci - thines": letters, spaced hyphen, letters (line-break hyphenation kept by OCR).
_SPLIT = re.compile(r"(?<![\w-])([^\W\d_]{2,}) - ([^\W\d_]{2,})(?![\w-])")
# Endings whose addition or removal is an inflection, not a typo.
# Languages where a missing accent is a spelling error worth restoring.
ACCENT_LANGS = frozenset({"fr", "es", "it", "pt", "ca"})


@dataclass(frozen=True)
class Settings:
    """Thresholds of the engine (tuned for precision: docs/spellcheck-cpu-engine.md)."""

    min_length: int = 6
    max_distance: int = 1
    long_length: int = 8
    min_count: int = 2
    dominance: float = 3.0
    accent_min_length: int = 3
    join_split_words: bool = True


def strip_accents(word: str) -> str:
    """Remove combining marks (``crème`` -> ``creme``); other characters are kept."""
    decomposed = unicodedata.normalize("NFD", word)
    return "".join(c for c in decomposed if not unicodedata.combining(c))


def osa_distance(a: str, b: str, limit: int) -> int:
    """Damerau-Levenshtein (optimal string alignment) distance, ``limit + 1`` when above it."""
    if abs(len(a) - len(b)) > limit:
        return limit + 1
    prev2: list[int] = []
    prev = list(range(len(b) + 1))
    for i in range(1, len(a) + 1):
        cur = [i] + [0] * len(b)
        for j in range(1, len(b) + 1):
            cost = 0 if a[i - 1] == b[j - 1] else 1
            value = min(prev[j] + 1, cur[j - 1] + 1, prev[j - 1] + cost)
            if i > 1 and j > 1 and a[i - 1] == b[j - 2] and a[i - 2] == b[j - 1]:
                value = min(value, prev2[j - 2] + 1)
            cur[j] = value
        if min(cur) > limit:
            return limit + 1
        prev2, prev = prev, cur
    return prev[len(b)]


def _deletes(word: str, distance: int) -> set[str]:
    """All strings obtained from ``word`` by deleting up to ``distance`` characters."""
    result = {word}
    frontier = {word}
    for _ in range(distance):
        nxt: set[str] = set()
        for item in frontier:
            for i in range(len(item)):
                nxt.add(item[:i] + item[i + 1 :])
        result |= nxt
        frontier = nxt
    return result


def apply_case(template: str, word: str) -> str:
    """Give ``word`` the casing pattern of ``template`` (UPPER, Title or lower)."""
    if template.isupper() and len(template) > 1:
        return word.upper()
    if template[:1].isupper():
        return word[:1].upper() + word[1:]
    return word


def _is_risky_edit(a: str, b: str) -> bool:
    """Whether turning ``a`` into ``b`` looks like grammar or another word, not a typo.

    Refused: edits confined to the last two letters (inflections: ``tomate``/``tomates``,
    ``oliva``/``olive``, ``sweetener``/``sweetened``) and a letter added or dropped at the
    start (``ananas``/``bananas``).
    """
    prefix = 0
    for x, y in zip(a, b, strict=False):
        if x != y:
            break
        prefix += 1
    tail_a, tail_b = a[prefix:], b[prefix:]
    if len(tail_a) <= 2 and len(tail_b) <= 2:
        return not (len(tail_a) == 2 and tail_a == tail_b[::-1])  # a swap is a typo
    short, long_ = (a, b) if len(a) <= len(b) else (b, a)
    return len(long_) == len(short) + 1 and long_.endswith(short)


def _has_marks(word: str) -> bool:
    """Whether the word carries any accent (combining mark after NFD)."""
    return strip_accents(word) != word


class LexiconSpellchecker:
    """Correct ingredient texts against a word lexicon (word -> occurrences)."""

    name = ENGINE_NAME

    def __init__(self, counts: Mapping[str, int], settings: Settings | None = None) -> None:
        self.settings = settings or Settings()
        self.counts: dict[str, int] = {w.lower(): int(n) for w, n in counts.items() if w}
        self._accents: dict[str, list[str]] = defaultdict(list)
        self._index: dict[str, list[str]] = defaultdict(list)
        index_distance = self.settings.max_distance
        for word in sorted(self.counts):
            self._accents[strip_accents(word)].append(word)
            if self.counts[word] >= self.settings.min_count and len(word) >= 3:
                for key in _deletes(word, index_distance):
                    self._index[key].append(word)
        self._cache: dict[tuple[str, bool], str | None] = {}

    @classmethod
    def from_rows(
        cls, rows: Iterable[tuple[str | None, str, int]], settings: Settings | None = None
    ) -> LexiconSpellchecker:
        """Build the engine from lexicon rows (lang, word, n), summing counts over languages."""
        counts: dict[str, int] = defaultdict(int)
        for _lang, word, n in rows:
            if word:
                counts[word.lower()] += int(n)
        return cls(counts, settings)

    # -- one word ---------------------------------------------------------------------------

    def _suggest(self, lower: str, accents: bool) -> str | None:
        """The lowercase replacement of an unknown lowercase word, or None to keep it.

        ``accents``: whether restoring missing accents is allowed for this word.
        """
        s = self.settings
        if lower in self.counts:
            return None
        same = [w for w in self._accents.get(strip_accents(lower), []) if w != lower]
        if same:
            # Only restore accents on a bare word (never remove or move them: "magnésium" is
            # right in French even if the lexicon only knows English "magnesium").
            if (
                accents
                and len(same) == 1
                and len(lower) >= s.accent_min_length
                and not _has_marks(lower)
            ):
                return same[0]
            return None
        if len(lower) < s.min_length:
            return None
        limit = s.max_distance if len(lower) >= s.long_length else 1
        found: dict[str, int] = {}
        for key in _deletes(lower, limit):
            for cand in self._index.get(key, ()):
                if cand not in found:
                    found[cand] = osa_distance(lower, cand, limit)
        ranked = sorted((d, -self.counts[c], c) for c, d in found.items() if d <= limit)
        if not ranked:
            return None
        best_d, neg_n, best = ranked[0]
        if len(best) < s.min_length or _is_risky_edit(lower, best):
            return None
        rivals = [r for r in ranked[1:] if r[0] == best_d]
        if rivals and -neg_n < s.dominance * -rivals[0][1]:
            return None
        return best

    def correct_word(self, word: str, lang: str | None = None) -> str:
        """Return the corrected word (casing preserved), or ``word`` itself when unsure.

        Accents are restored only for ``lang`` in ``ACCENT_LANGS`` (or unknown) and never on
        an all-capitals word (capitals commonly drop accents).
        """
        if not word.isalpha():
            return word
        if not word.islower() and not word.isupper() and not word[1:].islower():
            return word  # mixed case such as "McCain": leave it
        lower = word.lower()
        accents = (lang is None or lang in ACCENT_LANGS) and not (word.isupper() and len(word) > 1)
        key = (lower, accents)
        if key not in self._cache:
            self._cache[key] = self._suggest(lower, accents)
        suggestion = self._cache[key]
        return word if suggestion is None else apply_case(word, suggestion)

    # -- whole text -------------------------------------------------------------------------

    def _join(self, match: re.Match[str]) -> str:
        left, right = match.group(1), match.group(2)
        joined = (left + right).lower()
        if self.counts.get(joined, 0) >= self.settings.min_count:
            return left + right.lower() if not right.isupper() else left + right
        return match.group(0)

    def correct(self, text: str, lang: str | None = None) -> str:
        """Correct one ingredient text; parts not corrected are returned byte-identical.

        ``lang`` is the text's language (the product's), used to decide on accents.
        """
        if not text:
            return text
        if self.settings.join_split_words and " - " in text:
            text = _SPLIT.sub(self._join, text)
        out: list[str] = []
        last = 0
        for match in _ALNUM.finditer(text):
            token = match.group(0)
            start, end = match.span()
            if not token.isalpha():  # digits inside: E330, T0, 5e, 100g...
                continue
            out.append(text[last:start])
            out.append(self.correct_word(token, lang))
            last = end
        out.append(text[last:])
        return "".join(out)

    def correct_batch(
        self, texts: Sequence[str | None], langs: Sequence[str | None] | None = None
    ) -> list[str | None]:
        """Correct many texts (None stays None); ``langs`` aligned with ``texts`` if given."""
        languages = langs if langs is not None else [None] * len(texts)
        return [
            None if t is None else self.correct(t, lang)
            for t, lang in zip(texts, languages, strict=True)
        ]
