"""Offline CPU spellcheck engine: a lexicon of taxonomy-known ingredient words, precision first.

A wrong suggestion costs a volunteer's time, so the engine only changes a word when it is
confident:

* the lexicon is per language (the language of the product texts its words were read from);
  a replacement is only ever taken from the lexicon of the text's own language (``lang``), never
  from another one (Spanish ``VAINILLA`` is not "corrected" to English ``VANILLA``); a text
  without a language is left unchanged;
* the text is cut into letter-only words and everything else (spaces, punctuation, digits,
  E-numbers, percentages...) which is copied byte for byte; a run of letters glued to digits
  (``E330``, ``T0``, ``5e``) is never touched, and allergen markup (``_lait_``) is kept;
* a word already in the lexicon of *any* language is left alone; so are words shorter than
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

Candidates are found with a SymSpell-style deletion index (one per language, built on first
use), so a lookup costs a few dict probes. The engine is deterministic: ties are broken by count
then alphabetically.
"""

from __future__ import annotations

import re
import unicodedata
from collections import defaultdict
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass

ENGINE_NAME = "lexicon-cpu"

# Runs of letters/digits (underscore excluded, as Python's \w includes it).
_ALNUM = re.compile(r"[^\W_]+")
# "léci - thines": letters, spaced hyphen, letters (line-break hyphenation kept by OCR).
_SPLIT = re.compile(r"(?<![\w-])([^\W\d_]{2,}) - ([^\W\d_]{2,})(?![\w-])")
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


def normalise_lang(lang: str | None) -> str | None:
    """A language code as the lexicon stores it (``" FR"`` -> ``"fr"``); empty -> None."""
    if lang is None:
        return None
    lang = lang.strip().lower()
    return lang or None


class _LanguageIndex:
    """The correction sources of one language: its word counts, accent map, deletion index."""

    def __init__(self, counts: Mapping[str, int], settings: Settings) -> None:
        self.counts = counts
        self.accents: dict[str, list[str]] = defaultdict(list)
        self.index: dict[str, list[str]] = defaultdict(list)
        for word in sorted(counts):
            self.accents[strip_accents(word)].append(word)
            if counts[word] >= settings.min_count and len(word) >= 3:
                for key in _deletes(word, settings.max_distance):
                    self.index[key].append(word)


class LexiconSpellchecker:
    """Correct ingredient texts against per-language word lexicons (lang -> word -> count).

    A word is *known* when any language's lexicon has it; a replacement comes only from the
    lexicon of the text's language.
    """

    name = ENGINE_NAME

    def __init__(
        self, lexicon: Mapping[str, Mapping[str, int]], settings: Settings | None = None
    ) -> None:
        self.settings = settings or Settings()
        self.lexicons: dict[str, dict[str, int]] = {}
        for lang, words in lexicon.items():
            if not isinstance(words, Mapping):
                raise TypeError(
                    "lexicon must map a language to its word counts, e.g. {'fr': {'sucre': 3}}"
                )
            key = normalise_lang(lang)
            if key is None:
                continue
            merged = self.lexicons.setdefault(key, {})
            for word, n in words.items():
                if word:
                    merged[word.lower()] = merged.get(word.lower(), 0) + int(n)
        # Every word of every language, counts summed: what "known" means (and the size logged).
        self.counts: dict[str, int] = defaultdict(int)
        for words in self.lexicons.values():
            for word, n in words.items():
                self.counts[word] += n
        self.counts = dict(self.counts)
        self._known_accents: set[str] = {strip_accents(w) for w in self.counts}
        self._languages: dict[str, _LanguageIndex] = {}
        self._cache: dict[tuple[str, bool, str], str | None] = {}

    @classmethod
    def from_rows(
        cls, rows: Iterable[tuple[str | None, str, int]], settings: Settings | None = None
    ) -> LexiconSpellchecker:
        """Build the engine from lexicon rows (lang, word, n); rows without a language are
        dropped (their words could not be attributed to a text language)."""
        lexicon: dict[str, dict[str, int]] = defaultdict(lambda: defaultdict(int))
        for lang, word, n in rows:
            key = normalise_lang(lang)
            if word and key is not None:
                lexicon[key][word.lower()] += int(n)
        return cls(lexicon, settings)

    @property
    def languages(self) -> list[str]:
        """The languages the lexicon has words for, sorted."""
        return sorted(self.lexicons)

    def _language(self, lang: str) -> _LanguageIndex | None:
        """The (lazily built) index of one language, or None when the lexicon lacks it."""
        if lang not in self._languages:
            words = self.lexicons.get(lang)
            if not words:
                return None
            self._languages[lang] = _LanguageIndex(words, self.settings)
        return self._languages[lang]

    # -- one word ---------------------------------------------------------------------------

    def _suggest(self, lower: str, accents: bool, lang: str) -> str | None:
        """The lowercase replacement of an unknown lowercase word, or None to keep it.

        ``accents``: whether restoring missing accents is allowed for this word. Candidates
        come only from ``lang``'s lexicon; a word known in any language is kept.
        """
        s = self.settings
        if lower in self.counts:
            return None
        own = self._language(lang)
        if own is None:
            return None
        bare = strip_accents(lower)
        if bare in self._known_accents:
            # An accent variant of a known word (in some language): never typo-correct it.
            # Only restore accents on a bare word, from the text's language (never remove or
            # move them: "magnésium" is right in French even if English has "magnesium").
            same = [w for w in own.accents.get(bare, []) if w != lower]
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
            for cand in own.index.get(key, ()):
                if cand not in found:
                    found[cand] = osa_distance(lower, cand, limit)
        ranked = sorted((d, -own.counts[c], c) for c, d in found.items() if d <= limit)
        if not ranked:
            return None
        best_d, neg_n, best = ranked[0]
        if len(best) < s.min_length or _is_risky_edit(lower, best):
            return None
        rivals = [r for r in ranked[1:] if r[0] == best_d]
        if rivals and -neg_n < s.dominance * -rivals[0][1]:
            return None
        return best

    def correct_word(self, word: str, lang: str | None) -> str:
        """Return the corrected word (casing preserved), or ``word`` itself when unsure.

        ``lang`` is the text's language: replacements come only from its lexicon, and a word
        of a text without a language is never changed. Accents are restored only for ``lang``
        in ``ACCENT_LANGS`` and never on an all-capitals word (capitals commonly drop accents).
        """
        code = normalise_lang(lang)
        if code is None or not word.isalpha():
            return word
        if not word.islower() and not word.isupper() and not word[1:].islower():
            return word  # mixed case such as "McCain": leave it
        lower = word.lower()
        accents = code in ACCENT_LANGS and not (word.isupper() and len(word) > 1)
        key = (lower, accents, code)
        if key not in self._cache:
            self._cache[key] = self._suggest(lower, accents, code)
        suggestion = self._cache[key]
        return word if suggestion is None else apply_case(word, suggestion)

    # -- whole text -------------------------------------------------------------------------

    def _joiner(self, lang: str) -> Callable[[re.Match[str]], str]:
        """Join ``léci - thines`` when ``lang``'s lexicon has the joined word."""
        words = self.lexicons.get(lang, {})

        def join(match: re.Match[str]) -> str:
            left, right = match.group(1), match.group(2)
            joined = (left + right).lower()
            if words.get(joined, 0) >= self.settings.min_count:
                return left + right.lower() if not right.isupper() else left + right
            return match.group(0)

        return join

    def correct(self, text: str, lang: str | None) -> str:
        """Correct one ingredient text; parts not corrected are returned byte-identical.

        ``lang`` is the text's language (the product's): corrections come only from that
        language's lexicon, so a text whose language is None (or absent from the lexicon) is
        returned unchanged.
        """
        code = normalise_lang(lang)
        if not text or code is None or code not in self.lexicons:
            return text
        if self.settings.join_split_words and " - " in text:
            text = _SPLIT.sub(self._joiner(code), text)
        out: list[str] = []
        last = 0
        for match in _ALNUM.finditer(text):
            token = match.group(0)
            start, end = match.span()
            if not token.isalpha():  # digits inside: E330, T0, 5e, 100g...
                continue
            out.append(text[last:start])
            out.append(self.correct_word(token, code))
            last = end
        out.append(text[last:])
        return "".join(out)

    def correct_batch(
        self, texts: Sequence[str | None], langs: Sequence[str | None] | None = None
    ) -> list[str | None]:
        """Correct many texts (None stays None); ``langs`` aligned with ``texts``.

        Without ``langs`` no text has a language, so nothing is changed.
        """
        languages = langs if langs is not None else [None] * len(texts)
        return [
            None if t is None else self.correct(t, lang)
            for t, lang in zip(texts, languages, strict=True)
        ]
