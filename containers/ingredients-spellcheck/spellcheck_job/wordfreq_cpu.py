"""Offline CPU spellcheck engine, v2: general word frequencies + the dump's ingredient words.

Each text is corrected with its own language (``lang``), from two sources merged per language:

* the **general word list** of the language (Zipf frequencies from the ``wordfreq`` wheel,
  cached in ``data/wordfreq_lexicon.parquet``, see ``wordlists.py``): what "a word of the
  language" means and how common it is;
* the **food lexicon** (words of the dump's ingredients texts whose ingredients are all
  taxonomy-known, per product language, with counts:
  ``robotoff_batch/job_types/ingredients_spellcheck/lexicon.py``). A food word is never
  changed, whatever its language (E-numbers, additive and ingredient names stay), and it is a
  preferred correction target.

A word is replaced only when a *much more frequent* word of the text's language explains it by
one small edit (a noisy-channel decision, precision first):

* **known words stay**: a food word (any language), a word of Zipf >= ``keep_zipf`` in the
  text's language, or a common word of another language (Zipf >= ``foreign_zipf``: multilingual
  packs) is never touched; nor is a word with digits (``E330``), a mixed-case word (``McCain``)
  or a word shorter than ``min_length`` letters (accents excepted);
* **accents**: a word whose accent-stripped form matches one far more frequent accented word
  (``creme`` -> ``crème``, ``pêtales`` -> ``pétales``, ``sodico`` -> ``sódico``) takes it:
  the candidate must be ``accent_margin`` Zipf points above the word and above any rival;
* **typos**: candidates at edit distance 1 (Damerau-Levenshtein, OSA), from a SymSpell deletion
  index of the language's common words, plus OCR confusions (``rn``/``m``, ``cl``/``d``,
  ``l``/``i``, ``0``/``o``...); the best (OCR and accent edits first, then frequency) must be
  ``typo_margin`` above the word, ``dominance`` above a rival of the same edit class, and of
  Zipf >= ``target_zipf`` (or a food word); an edit confined to the last two letters of a word
  the language knows (inflection: ``tomate``/``tomates``) is refused;
* **glued words**: an unknown word that splits into two common words of the language
  (``degluten`` -> ``de gluten``, ``concentréou`` -> ``concentré ou``) is split;
  ``beurreAOP`` -> ``beurre AOP``;
* **text rules**: a word cut by a spaced hyphen (``léci - thines``) is joined when the joined
  word is known (for German also when the second part is lowercase: nouns are capitalised);
  a suspended hyphen is closed (``mono - and diglycerides`` -> ``mono- and diglycerides``);
  a missing space after a comma or full stop between two words (``blé,son``, ``OGM.Peut``) is
  added; Romanian cedilla letters become comma-below letters (``ş`` -> ``ș``);
* the casing pattern (UPPER, Title, lower) is re-applied; untouched parts stay byte-identical.

A word the language attests, even rarely, is never typo-corrected (only its accents may be);
words of Zipf < ``rare_zipf`` are kept as sorted 64-bit hashes, since only their presence
matters. Decisions are cached per (language, word) in a bounded dict, so a word seen before
costs one lookup: the engine runs at tens of thousands of texts per second on one core.
"""

from __future__ import annotations

import math
import re
from array import array
from bisect import bisect_left
from collections import defaultdict
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import NamedTuple

from spellcheck_job.lexicon_cpu import apply_case, normalise_lang, osa_distance, strip_accents
from spellcheck_job.word_index import (
    HashSet,
    Prebuilt,
    deletion_entries,
    key_hash,
    word_hash,
)

ENGINE_NAME = "lexicon-cpu"

_ALNUM = re.compile(r"[^\W_]+")
# "léci - thines": the right word in a lookahead, so that "a - b - c" yields (a, b) and (b, c).
_SPLIT = re.compile(r"(?<![\w-])([^\W\d_]{2,}) - (?=([^\W\d_]{2,})(?![\w-]))")
# "mono - and diglycerides": a suspended hyphen before a conjunction.
_HANGING = re.compile(r"(?<![\w-])([^\W\d_]{2,}) - ([^\W\d_]{1,3}) ([^\W\d_]{4,})")
# A comma or full stop glued to the next word: "blé,son", "OGM.Peut" (letters both sides;
# digits excluded: "0,4", "1.5"). The full stop only before a capitalised word, and not in a
# web or e-mail address.
_COMMA_GLUE = re.compile(r"([^\W\d_]{2,}),([^\W\d_]{2,})(?![\w.@/])")
_GLUED_COMMA = re.compile(r"[^\W\d_],[^\W\d_]")  # counted, overlaps included
_STOP_GLUE = re.compile(r"([^\W\d_]{2,})\.([^\W\d_][a-zà-ÿ]+)(?![\w.@/])")
_URLISH = re.compile(r"www|https?|@|\.(com|fr|org|net|de|es|it|eu|be|ch|uk)\b", re.IGNORECASE)
# "beurreAOP": a lowercase word followed by a capitals run.
_CAMEL = re.compile(r"\b([a-zà-ÿ]{3,})([A-ZÀ-Ý]{2,})\b")
_RO_CEDILLA = str.maketrans({"ş": "ș", "ţ": "ț", "Ş": "Ș", "Ţ": "Ț"})
# Words a German spaced hyphen may join to the previous word only if known as a compound.
_DE_FUNCTION = frozenset({"und", "oder", "bzw", "sowie", "mit", "ohne", "aus", "von", "zu"})
# OCR confusions: (seen, meant); applied one at a time.
OCR_CONFUSIONS: tuple[tuple[str, str], ...] = (
    ("rn", "m"),
    ("m", "rn"),
    ("cl", "d"),
    ("ri", "n"),
    ("vv", "w"),
    ("li", "h"),
    ("l", "i"),
    ("i", "l"),
    ("j", "i"),
    ("c", "e"),
    ("e", "c"),
    ("u", "ü"),
    ("n", "u"),
    ("u", "n"),
)
# The rules, each with its own measured precision (benchmarks/spellcheck_benchmark.py): accent
# restoration, OCR confusions, other one-letter typos, glued words split, hyphen-cut words
# joined, glued punctuation spaced, Romanian cedilla letters.
RULES: frozenset[str] = frozenset(
    {"accent", "ocr", "typo", "glued", "join", "punctuation", "romanian"}
)
# On by default: the rules whose precision alone is >= 0.85, judged out of fold on the dev slice
# when they changed >= 20 token positions there, else on the synthetic tune half
# (benchmarks/spellcheck_cv.py): accent (dev 0.867, with the mark channel), join (dev 1.000),
# romanian (dev 1.000, 4 cases), typo (synthetic 0.963) and ocr (synthetic 0.950) are on;
# glued (synthetic 0.600) and punctuation (synthetic 0.000) are off.
DEFAULT_RULES: frozenset[str] = frozenset({"accent", "join", "ocr", "romanian", "typo"})
# The noisy channel, log10 P(what is written | what was meant), by rule: a missing accent is
# as likely as not; an OCR confusion 3 times, any other typo 10 times less likely. An edit of
# the first letter costs another factor 10 (people and OCR get it right most often).
CHANNEL: dict[str, float] = {
    "accent": 0.0,
    "ocr": -0.5,
    "typo": -1.0,
    "glued": -1.0,
    "join": -0.5,
    "punctuation": -1.0,
}
FIRST_LETTER = -1.0
CAMEL_CONFIDENCE = 0.9  # "beurreAOP": a known lowercase word glued to a capitals run
ROMANIAN_CONFIDENCE = 0.99  # a spelling norm, not a guess
# Units are never corrected (``kcal``, ``mg``), nor a short word right after a number.
UNITS = frozenset(
    {
        "g",
        "gr",
        "grs",
        "kg",
        "mg",
        "mcg",
        "µg",
        "ug",
        "ml",
        "cl",
        "dl",
        "l",
        "lt",
        "kcal",
        "kj",
        "cal",
        "oz",
        "lb",
        "lbs",
        "iu",
        "ui",
        "ppm",
        "mmol",
    }
)
_CODE_AFTER = re.compile(r"[ -]?\d")  # "E 330", "INS-471": a code, not a word
_NUMBER_BEFORE = re.compile(r"\d ?$")
_GLUE_MARKS = frozenset("/\\|")
# Languages that elide ("d'olive"): a dropped first "d" or "l" is a lost apostrophe.
_ELISION = frozenset({"fr", "it", "ca"})
_CACHE_LIMIT = 500_000
_MASK32 = 0xFFFFFFFF
RARE_ZIPF = 1.5  # what a rare word (kept as a hash only) counts as


class Correction(NamedTuple):
    """One correction made in a text: what was written, what replaces it, the rule, and the
    confidence (0-1) that the replacement is what was meant."""

    before: str
    after: str
    rule: str
    confidence: float


# A word's decision: (replacement, rule, confidence).
Decision = tuple[str, str, float]


def posterior(best: float, others: Iterable[float]) -> float:
    """The share of the best hypothesis among all, each given as a log10 score (Zipf
    frequency + log10 channel probability): ``10**best / (10**best + sum 10**other)``."""
    return 1.0 / (1.0 + sum(10.0 ** (o - best) for o in others))


def protected(text: str, start: int, end: int) -> bool:
    """Whether the word ``text[start:end]`` is never changed: the last word of the text (a
    word cut off: ``LECITH``), a word glued to a slash or a bar (``Jtab/e``: OCR
    debris), a code's letters (``E 330``, ``INS-471``) or a short word after a number (a
    unit: ``100 gr``)."""
    if not text[end:].strip():
        return True
    if text[end : end + 1] in _GLUE_MARKS or (start and text[start - 1] in _GLUE_MARKS):
        return True  # ``Jtab/e``, ``a|b``: OCR debris or a notation, not a word to guess
    if _CODE_AFTER.match(text, end):
        return True
    return end - start <= 3 and _NUMBER_BEFORE.search(text, 0, start) is not None


def _drops_elision(word: str, cand: str) -> bool:
    """``dolive`` -> ``olive``: the first letter dropped is an elided article (``d'``)."""
    return len(word) == len(cand) + 1 and word[1:] == cand and word[0] in "dlnjscmt"


@dataclass(frozen=True)
class Settings:
    """Thresholds of the v2 engine (docs/spellcheck-cpu-engine.md explains how they were set)."""

    min_length: int = 4
    # A shorter unknown word that begins or ends a word of Zipf >= ``fragment_zipf`` gets
    # only OCR and accent fixes (``itish``, from ``british``, is not ``irish``).
    typo_min_length: int = 6
    fragment_zipf: float = 3.0
    keep_zipf: float = 3.0
    foreign_zipf: float = 3.5
    target_zipf: float = 2.5
    accent_margin: float = 1.0
    accent_min_length: int = 3
    typo_margin: float = 2.0
    dominance: float = 0.5
    caps_accents: bool = True
    split_glued: bool = True
    split_min_zipf: float = 3.0
    split_short_zipf: float = 5.0
    fix_punctuation: bool = True
    join_split_words: bool = True
    food_zipf: float = 3.0
    food_bonus: float = 2.5
    rare_zipf: float = 2.0
    allow_inflection_when_unknown: bool = True
    # What a word the language lacks counts as, as written (the "keep" hypothesis).
    unknown_zipf: float = RARE_ZIPF
    # Chosen by cross-validation on the dev slice (benchmarks/spellcheck_benchmark.py).
    min_confidence: float = 0.0
    # The share of a text's words its language must know for its words to be corrected.
    min_text_fit: float = 0.5
    rules: frozenset[str] = DEFAULT_RULES


def _has_marks(word: str) -> bool:
    return strip_accents(word) != word


def _marks(word: str) -> int:
    """How many letters of ``word`` carry a mark."""
    return sum(1 for ch in word if _has_marks(ch))


# log10 P(a letter written so | the letter meant), for the accent rule: a mark left out is
# as likely as not (keyboards, capitals); a mark written wrong (``ä`` for ``ă``, a foreign
# letter) 3 times less likely; a mark written where none is meant (printing adds none by
# itself) 30 times less likely.
MARK_WRONG = -0.5
MARK_SPURIOUS = -1.5


def mark_channel(written: str, meant: str) -> float:
    """log10 P(``written`` | ``meant``) for two spellings of one word that differ only in
    their marks (``bauturà`` is likelier ``băutură``, a mark written wrong, than
    ``băutura``, a mark written where none is meant)."""
    if len(written) != len(meant):
        return 0.0
    cost = 0.0
    for a, b in zip(written, meant, strict=True):
        if a != b and _has_marks(a):
            cost += MARK_WRONG if _has_marks(b) else MARK_SPURIOUS
    return cost


def marks_only_where_written(written: str, meant: str) -> bool:
    """Whether ``meant`` changes only letters that ``written`` marks, when ``written``
    carries a mark: a writer who types marks (``zahär``) left the other letters bare on
    purpose, so ``Bauturà`` is at most ``Bautură``, never ``Băutură``."""
    if len(written) != len(meant) or not _has_marks(written):
        return True
    return all(a == b or _has_marks(a) for a, b in zip(written, meant, strict=True))


def _deletes1(word: str) -> list[str]:
    return [word[:i] + word[i + 1 :] for i in range(len(word))]


def _tail_only(a: str, b: str) -> bool:
    """Whether the edit from ``a`` to ``b`` is confined to the last two letters (not a swap)."""
    prefix = 0
    for x, y in zip(a, b, strict=False):
        if x != y:
            break
        prefix += 1
    ta, tb = a[prefix:], b[prefix:]
    if len(ta) <= 2 and len(tb) <= 2:
        return not (len(ta) == 2 and ta == tb[::-1])
    return False


class _Language:
    """One language's merged frequencies, accent map and deletion index (built on first use)."""

    def __init__(
        self, general: Mapping[str, float], food: Mapping[str, int], settings: Settings
    ) -> None:
        s = settings
        self.food = food
        freq: dict[str, float] = dict(general)
        for word, n in food.items():
            boosted = s.food_zipf + min(1.5, 0.5 * math.log10(max(1, n)))
            if freq.get(word, 0.0) < boosted:
                freq[word] = boosted
        # Rare words (Zipf < ``rare_zipf``, not food) only tell that the language has them:
        # kept as sorted 64-bit hashes (8 bytes a word instead of ~110 in a dict).
        self.rare = array(
            "q",
            sorted({word_hash(w) for w, z in freq.items() if z < s.rare_zipf and w not in food}),
        )
        self.freq = {w: z for w, z in freq.items() if z >= s.rare_zipf or w in food}
        del freq
        # A large list (down to Zipf 1-2) attests rare words; a small one (Zipf >= 3) does
        # not, so its language gets only accent and OCR fixes.
        self.rich = bool(general) and min(general.values()) <= 2.0
        letters: dict[str, int] = defaultdict(int)
        for word in general:
            for ch in set(word):
                letters[ch] += 1
        floor = max(2, len(general) // 5000)
        self.alphabet = frozenset(ch for ch, n in letters.items() if n >= floor) or frozenset(
            ch for word in food for ch in word
        )
        self.accents: dict[str, list[str]] = defaultdict(list)
        targets: list[str] = []
        for word, z in self.freq.items():
            if z < s.target_zipf and word not in food:
                continue
            bare = strip_accents(word)
            if bare != word:
                self.accents[bare].append(word)
            if len(word) >= 4:
                targets.append(word)
        self.accents = dict(self.accents)
        self.index: DeleteIndex | MergedIndex = DeleteIndex(targets)

    @classmethod
    def from_prebuilt(cls, pre: Prebuilt, food: Mapping[str, int], settings: Settings) -> _Language:
        """The same language as ``_Language(general, food, settings)``, from the general
        list's prebuilt index (``word_index``) with the dump's food words merged in: only
        what the food words add is computed here (a few thousand words, not 300,000)."""
        s = settings
        self = cls.__new__(cls)
        self.food = food
        self.freq = dict(pre.freq)
        self.rare = pre.rare  # a food word there is shadowed by its entry in freq
        self.rich = pre.rich
        self.alphabet = pre.alphabet or frozenset(ch for word in food for ch in word)
        accents = {bare: list(words) for bare, words in pre.accents.items()}
        extra: list[str] = []
        for word, n in food.items():
            general = pre.freq.get(word, 0.0)
            boosted = s.food_zipf + min(1.5, 0.5 * math.log10(max(1, n)))
            if general < boosted:
                self.freq[word] = boosted
            if general >= s.target_zipf:
                continue  # already a target of the general list (and in its accent map)
            bare = strip_accents(word)
            if bare != word and word not in accents.get(bare, ()):
                accents.setdefault(bare, []).append(word)
            if len(word) >= 4:
                extra.append(word)
        self.accents = accents
        general_index = DeleteIndex.from_entries(pre.targets, pre.entries)
        self.index = MergedIndex(general_index, DeleteIndex(extra)) if extra else general_index
        return self

    def fragment(self, word: str, min_zipf: float) -> bool:
        """Whether ``word`` begins or ends a longer word of Zipf >= ``min_zipf`` (``itish``:
        ``british``); the sorted word lists are built on first use (a few ms)."""
        ends = getattr(self, "_ends", None)
        if ends is None or ends[0] != min_zipf:
            common = [w for w, z in self.freq.items() if z >= min_zipf]
            ends = (min_zipf, sorted(common), sorted(w[::-1] for w in common))
            self._ends = ends
        for words, key in ((ends[1], word), (ends[2], word[::-1])):
            i = bisect_left(words, key)
            if i < len(words) and words[i] == key:
                i += 1
            if i < len(words) and words[i].startswith(key):
                return True
        return False

    def zipf(self, word: str) -> float:
        """The word's Zipf frequency in this language (``RARE_ZIPF`` for a rare word), 0 when
        the language does not have it."""
        z = self.freq.get(word)
        if z is not None:
            return z
        rare = self.rare
        h = word_hash(word)
        i = bisect_left(rare, h)
        return RARE_ZIPF if i < len(rare) and rare[i] == h else 0.0


class DeleteIndex:
    """A compact SymSpell index (distance 1): every word and its one-letter deletions, as
    sorted 64-bit integers ``hash32(key) << 32 | word id`` in one ``array`` (8 bytes an
    entry instead of ~200 for a dict of lists); a lookup is a binary search. Hash collisions
    only add candidates, which the caller checks by edit distance."""

    def __init__(self, words: Sequence[str]) -> None:
        self.words = list(words)
        self.entries = deletion_entries(self.words)

    @classmethod
    def from_entries(cls, words: list[str], entries: array) -> DeleteIndex:
        """The index of ``words`` whose ``deletion_entries`` are ``entries`` (prebuilt)."""
        self = cls.__new__(cls)
        self.words = words
        self.entries = entries
        return self

    def __len__(self) -> int:
        return len(self.entries)

    def get(self, key: str) -> list[str]:
        """The words whose deletion set holds ``key`` (plus rare hash collisions)."""
        h = key_hash(key) << 32
        entries = self.entries
        i = bisect_left(entries, h)
        out: list[str] = []
        n = len(entries)
        while i < n and entries[i] >> 32 == h >> 32:
            out.append(self.words[entries[i] & _MASK32])
            i += 1
        return out


class MergedIndex:
    """Two deletion indexes looked up as one (a prebuilt general one, the food words')."""

    def __init__(self, first: DeleteIndex, second: DeleteIndex) -> None:
        self.first, self.second = first, second

    def __len__(self) -> int:
        return len(self.first) + len(self.second)

    def get(self, key: str) -> list[str]:
        return self.first.get(key) + self.second.get(key)


class WordFreqSpellchecker:
    """Correct ingredient texts with per-language word frequencies and the dump's food words."""

    name = ENGINE_NAME

    def __init__(
        self,
        food: Mapping[str, Mapping[str, int]],
        general: Mapping[str, Mapping[str, float]] | Callable[[str], Mapping[str, float]],
        settings: Settings | None = None,
        foreign_common: Iterable[str] | HashSet | None = None,
        prebuilt: Callable[[str], Prebuilt | None] | None = None,
    ) -> None:
        """``food``: lang -> word -> count (the dump's lexicon); ``general``: lang -> word ->
        Zipf, or a function loading one language's list; ``foreign_common``: words common in
        some language (kept in any text; defaults to those of ``general`` when a mapping);
        ``prebuilt``: a language's prebuilt general index (``word_index``), or None to build
        it from ``general``: the same engine, ready in a fraction of the time."""
        self.settings = settings or Settings()
        self.food: dict[str, dict[str, int]] = {}
        for lang, words in food.items():
            key = normalise_lang(lang)
            if key is None:
                continue
            merged = self.food.setdefault(key, {})
            for word, n in words.items():
                if word:
                    merged[word.lower()] = merged.get(word.lower(), 0) + int(n)
        self.food_words: frozenset[str] = frozenset(w for ws in self.food.values() for w in ws)
        if callable(general):
            self._load_general = general
        else:
            mapping = {normalise_lang(k): v for k, v in general.items()}
            self._load_general = lambda lang: mapping.get(lang, {})
            if foreign_common is None:
                foreign_common = (
                    w
                    for ws in mapping.values()
                    for w, z in ws.items()
                    if z >= self.settings.foreign_zipf
                )
        self.foreign_common: frozenset[str] | HashSet = (
            foreign_common
            if isinstance(foreign_common, HashSet)
            else frozenset(foreign_common or ())
        )
        self._prebuilt = prebuilt
        self._languages: dict[str, _Language | None] = {}
        self._cache: dict[str, dict[str, str | Decision]] = {}
        # Edits made so far (words replaced, hyphens joined, spaces added, Romanian letters
        # normalised): the job's summary logs it.
        self.corrections = 0
        # The corrections of the last text corrected (``correct_detailed``).
        self.details: list[Correction] = []

    @property
    def counts(self) -> dict[str, int]:
        """Every food word (any language) with its summed count (the size logged)."""
        out: dict[str, int] = defaultdict(int)
        for words in self.food.values():
            for w, n in words.items():
                out[w] += n
        return dict(out)

    def prepare(self, langs: Iterable[str | None]) -> list[str]:
        """Build the indexes of ``langs`` now (else on first use); return those it has."""
        codes = sorted({c for c in (normalise_lang(x) for x in langs) if c is not None})
        return [c for c in codes if self._language(c) is not None]

    def _language(self, lang: str) -> _Language | None:
        if lang not in self._languages:
            food = self.food.get(lang, {})
            pre = self._prebuilt(lang) if self._prebuilt is not None else None
            if pre is not None and pre.freq:
                self._languages[lang] = _Language.from_prebuilt(pre, food, self.settings)
                return self._languages[lang]
            general = self._load_general(lang)
            self._languages[lang] = (
                _Language(general, food, self.settings) if (general or food) else None
            )
        return self._languages[lang]

    # -- one word ---------------------------------------------------------------------------

    def _candidates(self, lower: str, own: _Language) -> dict[str, int]:
        """Candidate words at distance <= 1 (or one OCR confusion) -> edit class (0 best:
        OCR or accent; 1: any other edit)."""
        found: dict[str, int] = {}
        index = own.index
        keys = [lower, *_deletes1(lower)]
        for key in keys:
            for cand in index.get(key):
                if cand != lower and cand not in found:
                    if osa_distance(lower, cand, 1) <= 1:
                        found[cand] = 1
        for seen, meant in OCR_CONFUSIONS:
            start = lower.find(seen)
            while start != -1:
                cand = lower[:start] + meant + lower[start + len(seen) :]
                if cand != lower and own.zipf(cand) > 0.0:
                    found[cand] = 0
                start = lower.find(seen, start + 1)
        for cand in list(found):
            if strip_accents(cand) == strip_accents(lower):
                found[cand] = 0
        return found

    def _suggest(self, lower: str, lang: str, accents: bool) -> Decision | None:
        """The replacement of a lowercase word (may contain a space: a split) with its rule
        and confidence, or None. Every candidate rule is returned here; which rules are on
        and the confidence threshold are applied when a text is corrected."""
        s = self.settings
        if lower in self.food_words or lower in UNITS:
            return None
        own = self._language(lang)
        if own is None:
            return None
        z = own.zipf(lower)
        if z >= s.keep_zipf:
            return None
        if z == 0.0 and lower in self.foreign_common:
            return None
        # The word as written, if the language lacks it, counts as a rare word.
        keep = max(z, s.unknown_zipf)
        bare = strip_accents(lower)
        foreign = {ch for ch in lower if ch not in own.alphabet}
        # Accent variants.
        if accents and len(lower) >= s.accent_min_length:
            variants = [
                w
                for w in own.accents.get(bare, ())
                if w != lower
                and self._keeps_marks(lower, w, own)
                and marks_only_where_written(lower, w)
            ]
            # A short list (Zipf >= 3 only) cannot tell a bare form from a rare accented
            # one (``Bauturà`` is ``Băutură``, not ``Bautura``): there, marks are never dropped.
            if foreign and own.rich and bare != lower and own.zipf(bare) > 0.0:
                variants.append(bare)
            if variants:

                def marked(w: str) -> float:  # frequency + log10 P(marks written | w meant)
                    return own.zipf(w) + mark_channel(lower, w)

                ranked = sorted(variants, key=lambda w: (-marked(w), w))
                best = ranked[0]
                zb = own.zipf(best)
                rival = marked(ranked[1]) if len(ranked) > 1 else 0.0
                if (
                    zb - z >= s.accent_margin
                    and marked(best) - rival >= s.accent_margin
                    and (zb >= s.target_zipf or best in own.food)
                ):
                    others = [marked(w) for w in ranked[1:]]
                    return best, "accent", posterior(marked(best), [*others, keep])
        if z > 0.0:
            return None  # a word the language attests: only its accents may be fixed
        if len(lower) < s.min_length:
            return None
        found = self._candidates(lower, own)
        if found and len(lower) < s.typo_min_length and own.fragment(lower, s.fragment_zipf):
            # A short unknown word that begins or ends a common longer word is likelier that
            # word cut off (``itish``: British; ``Igar``) than a typo of a neighbour
            # (``irish``, ``agar``): only OCR confusions and accents there.
            found = {w: c for w, c in found.items() if c == 0}
        if found:
            food, bonus = own.food, s.food_bonus

            def score(w: str) -> float:  # ingredient words are likelier in a food text
                return own.zipf(w) + (bonus if w in food else 0.0)

            ranked = sorted(found, key=lambda w: (found[w], -score(w), w))
            best = ranked[0]
            zb = own.zipf(best)
            rivals = [w for w in ranked[1:] if found[w] == found[best]]
            rival = score(rivals[0]) - (bonus if best in food else 0.0) if rivals else 0.0
            accent_only = strip_accents(best) == bare
            if accent_only and (not accents or not self._keeps_marks(lower, best, own)):
                return None  # accents not restored here, or a valid accent removed
            if accent_only and not marks_only_where_written(lower, best):
                return None  # a mark added next to the marks the writer typed
            if accent_only and not own.rich and _marks(best) < _marks(lower):
                return None  # a short list cannot tell a bare form from a rare accented one
            ok = (
                zb - z >= s.typo_margin
                and zb - rival >= s.dominance
                and (zb >= s.target_zipf or best in own.food)
                and len(best) >= s.min_length - 1
                and (own.rich or found[best] == 0)
                and not (lang in _ELISION and _drops_elision(lower, best))
            )
            if ok and _tail_only(lower, best):
                ok = s.allow_inflection_when_unknown and found[best] == 0
            if not ok:
                return None
            rule = "accent" if accent_only else ("ocr" if found[best] == 0 else "typo")

            def channel(w: str) -> float:  # log10 P(what is written | w was meant)
                kind = (
                    "accent" if strip_accents(w) == bare else ("ocr" if found[w] == 0 else "typo")
                )
                first = w[:1] != lower[:1] and kind != "accent"
                return CHANNEL[kind] + (FIRST_LETTER if first else 0.0)

            others = [score(w) + channel(w) for w in ranked[1:]]
            return best, rule, posterior(score(best) + channel(best), [*others, keep])
        if s.split_glued and own.rich:
            return self._split(lower, own)
        return None

    @staticmethod
    def _keeps_marks(word: str, cand: str, own: _Language) -> bool:
        """Whether ``cand`` keeps every accented letter of ``word`` that the language uses
        (``germés`` never becomes ``germes``; ``gommę`` may become ``gomme`` in French)."""
        if len(word) != len(cand):
            return True
        for a, b in zip(word, cand, strict=True):
            if a != b and _has_marks(a) and a in own.alphabet and not _has_marks(b):
                return False
        return True

    def _split(self, lower: str, own: _Language) -> Decision | None:
        """``degluten`` -> ``de gluten``: the best split into two common words, if clear."""
        s = self.settings
        best: tuple[float, str] | None = None
        for i in range(2, len(lower) - 1):
            left, right = lower[:i], lower[i:]
            zl, zr = own.zipf(left), own.zipf(right)
            short, long_ = (zl, zr) if len(left) <= len(right) else (zr, zl)
            if min(len(left), len(right)) > 3 or max(len(left), len(right)) < 4:
                continue  # one short function word ("de", "ou", "of") and one real word
            if short >= s.split_short_zipf and long_ >= s.split_min_zipf:
                score = min(zl, zr)
                if best is None or score > best[0]:
                    best = (score, f"{left} {right}")
        if best is None:
            return None
        return best[1], "glued", posterior(best[0] + CHANNEL["glued"], [s.unknown_zipf])

    def decide_word(self, word: str, lang: str | None) -> Decision | None:
        """The decision on one word (casing kept): (replacement, rule, confidence), or None
        when it stays. Cached per (language, word); rules and threshold are not applied."""
        code = normalise_lang(lang)
        if code is None or not word.isalpha():
            return None
        cache = self._cache.setdefault(code, {})
        hit = cache.get(word)
        if hit is None:
            hit = self._correct_word(word, code) or word
            if len(cache) >= _CACHE_LIMIT:
                cache.clear()
            cache[word] = hit
        return None if isinstance(hit, str) else hit

    def correct_word(self, word: str, lang: str | None) -> str:
        """The corrected word (casing kept), or ``word`` itself when unsure (enabled rules
        and confidence threshold applied; no text context)."""
        decision = self.decide_word(word, lang)
        return decision[0] if decision is not None and self._emits(decision) else word

    def _emits(self, decision: Decision) -> bool:
        s = self.settings
        return decision[1] in s.rules and decision[2] >= s.min_confidence

    def _correct_word(self, word: str, code: str) -> Decision | None:
        upper = word.isupper() and len(word) > 1
        if not word.islower() and not upper and not word[1:].islower():
            match = _CAMEL.fullmatch(word)
            if match and self.settings.split_glued:
                own = self._language(code)
                left = match.group(1)
                if own is not None and own.zipf(left.lower()) >= self.settings.keep_zipf:
                    return f"{left} {match.group(2)}", "glued", CAMEL_CONFIDENCE
            return None
        accents = not upper or self.settings.caps_accents
        suggestion = self._suggest(word.lower(), code, accents)
        if suggestion is None:
            return None
        new, rule, confidence = suggestion
        return " ".join(apply_case(word, part) for part in new.split(" ")), rule, confidence

    # -- whole text -------------------------------------------------------------------------

    def _accept(self, rule: str, confidence: float, before: str, after: str) -> bool:
        """Whether a text-level edit is emitted (rule on, confidence at the threshold);
        an emitted edit is recorded in ``self.details``."""
        s = self.settings
        if rule not in s.rules or confidence < s.min_confidence:
            return False
        self.corrections += 1
        self.details.append(Correction(before, after, rule, round(confidence, 3)))
        return True

    def _spacer(self, lang: str, mark: str) -> Callable[[re.Match[str]], str]:
        """Add the space after ``mark`` between two words the language knows."""
        own = self._language(lang)
        s = self.settings

        def space(match: re.Match[str]) -> str:
            left, right = match.group(1), match.group(2)
            if own is None:
                return match.group(0)
            zipfs = [
                max(own.zipf(w.lower()), s.food_zipf if w.lower() in self.food_words else 0.0)
                for w in (left, right)
            ]
            if min(zipfs) >= s.target_zipf:
                confidence = posterior(min(zipfs) + CHANNEL["punctuation"], [s.unknown_zipf])
                if self._accept("punctuation", confidence, match.group(0), f"{left}{mark} {right}"):
                    return f"{left}{mark} {right}"
            return match.group(0)

        return space

    def _join_split_words(self, text: str, lang: str) -> str:
        """Join ``léci - thines`` (known joined word; German: see ``_joinable``) and close a
        suspended hyphen (``mono - and diglycerides`` -> ``mono- and diglycerides`` when
        ``monoglycerides`` is a word)."""
        own = self._language(lang)
        if own is None:
            return text
        out: list[str] = []
        last = 0
        for match in _SPLIT.finditer(text):
            start = match.start()
            if start < last:
                continue  # its left word was joined to the previous one
            left, right = match.group(1), match.group(2)
            confidence = self._joinable(left, right, lang, own)
            joined = left + (right if right.isupper() else right.lower())
            if confidence and self._accept("join", confidence, f"{left} - {right}", joined):
                out.append(text[last:start])
                out.append(joined)
                last = match.end() + len(right)
        if out:
            out.append(text[last:])
            text = "".join(out)
        if " - " in text:
            text = _HANGING.sub(lambda m: self._hang(m, own), text)
        return text

    def _joinable(self, left: str, right: str, lang: str, own: _Language) -> float:
        """The confidence that ``left - right`` is one word cut by a hyphen (0: it is not)."""
        s = self.settings
        joined = own.zipf((left + right).lower())
        parts = min(own.zipf(left.lower()), own.zipf(right.lower()))
        if joined > 0.0:
            return posterior(max(joined, RARE_ZIPF) + CHANNEL["join"], [parts])
        if (
            lang == "de"
            and right.islower()
            and left[:1].isupper()
            and right not in _DE_FUNCTION
            and own.zipf(right) > 0.0
        ):
            return posterior(s.unknown_zipf + CHANNEL["join"], [parts])
        return 0.0

    def _hang(self, match: re.Match[str], own: _Language) -> str:
        left, conj, after = match.group(1), match.group(2), match.group(3)
        if own.zipf(conj.lower()) < self.settings.split_short_zipf:
            return match.group(0)  # not a frequent short word (a conjunction)
        lower = after.lower()
        for k in range(1, 5):
            z = own.zipf((left + lower[k:]).lower())
            if z > 0.0:
                confidence = posterior(max(z, RARE_ZIPF) + CHANNEL["join"], [own.zipf(left)])
                fixed = f"{left}- {conj} {after}"
                if self._accept("join", confidence, match.group(0), fixed):
                    return fixed
                return match.group(0)
        return match.group(0)

    def correct(self, text: str, lang: str | None) -> str:
        """Correct one ingredient text; parts not corrected are returned byte-identical."""
        return self.correct_detailed(text, lang)[0]

    def correct_detailed(self, text: str, lang: str | None) -> tuple[str, list[Correction]]:
        """The corrected text and its corrections (before, after, rule, confidence), only
        those of the enabled rules at or above ``min_confidence``; protected tokens (see
        ``protected``) are never changed."""
        self.details = []
        code = normalise_lang(lang)
        if not text or code is None or self._language(code) is None:
            return text, self.details
        s = self.settings
        original = text
        if code == "ro" and "romanian" in s.rules:
            text = text.translate(_RO_CEDILLA)
            if text != original:
                for a, b in zip(text, original, strict=True):
                    if a != b:
                        self.corrections += 1
                        self.details.append(Correction(b, a, "romanian", ROMANIAN_CONFIDENCE))
        if s.join_split_words and " - " in text:
            text = self._join_split_words(text, code)
        if s.fix_punctuation and not _URLISH.search(text):
            # Commas without spaces all along (``MILK,CHOCOLATE,SUGAR``) are the text's
            # style, an enumeration: left alone. A single glued comma is a slip.
            if "," in text and len(_GLUED_COMMA.findall(text)) == 1:
                text = _COMMA_GLUE.sub(self._spacer(code, ","), text)
            if "." in text:
                text = _STOP_GLUE.sub(self._spacer(code, "."), text)
        out: list[str] = []
        last = 0
        cache = self._cache.setdefault(code, {})
        fits: bool | None = None  # whether the text is in its language (computed if needed)
        for match in _ALNUM.finditer(text):
            token = match.group(0)
            hit = cache.get(token)
            if hit is None:
                if not token.isalpha():
                    continue
                self.decide_word(token, code)
                hit = cache[token]
            if isinstance(hit, str):
                continue
            if not self._emits(hit):
                continue
            start, end = match.span()
            if protected(text, start, end):
                continue
            if fits is None:
                fits = self._fits(text, code)
            if not fits:
                break
            out.append(text[last:start])
            out.append(hit[0])
            last = end
            self.corrections += 1
            self.details.append(Correction(token, hit[0], hit[1], round(hit[2], 3)))
        if not out:
            return (text if text != original else original), self.details
        out.append(text[last:])
        return "".join(out), self.details

    def _fits(self, text: str, code: str) -> bool:
        """Whether most words of ``text`` (more than ``min_text_fit`` of its 4+ words of 3+
        letters) are words of its language: a text in another language than its label, or
        OCR debris, gets no word correction."""
        own = self._language(code)
        if own is None:
            return False
        words = [w.lower() for w in _ALNUM.findall(text) if w.isalpha() and len(w) >= 3]
        if len(words) < 4:
            return True  # a share of fewer words says nothing
        food = self.food_words
        known = sum(1 for w in words if w in food or own.zipf(w) > 0.0)
        return known > self.settings.min_text_fit * len(words)

    def correct_batch(
        self, texts: Sequence[str | None], langs: Sequence[str | None] | None = None
    ) -> list[str | None]:
        """Correct many texts (None stays None); ``langs`` aligned with ``texts``."""
        languages = langs if langs is not None else [None] * len(texts)
        return [
            None if t is None else self.correct(t, lang)
            for t, lang in zip(texts, languages, strict=True)
        ]

    def correct_batch_detailed(
        self, texts: Sequence[str | None], langs: Sequence[str | None] | None = None
    ) -> list[tuple[str | None, list[Correction]]]:
        """``correct_batch`` with each text's corrections (see ``correct_detailed``)."""
        languages = langs if langs is not None else [None] * len(texts)
        return [
            (None, []) if t is None else self.correct_detailed(t, lang)
            for t, lang in zip(texts, languages, strict=True)
        ]


def load_language(path: Path | str, lang: str) -> dict[str, float]:
    """One language's general list (word -> Zipf) from a ``wordlists`` Parquet file."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    part = pq.read_table(path, columns=["word", "zipf100"], filters=[("lang", "=", lang)])
    words, zipfs = part["word"].to_pylist(), part["zipf100"].to_pylist()
    del part
    pa.default_memory_pool().release_unused()
    shared: dict[int, float] = {}  # one float object per frequency bucket (memory)
    return {w: shared.setdefault(z, z / 100) for w, z in zip(words, zipfs, strict=True)}


def parquet_general_loader(
    path: Path | str, foreign_zipf: float = Settings.foreign_zipf
) -> tuple[Callable[[str], dict[str, float]], set[str]]:
    """A per-language loader over a ``wordlists`` Parquet file (one language at a time) and
    the words common (Zipf >= ``foreign_zipf``) in any of its languages."""
    import pyarrow as pa
    import pyarrow.compute as pc
    import pyarrow.parquet as pq

    def load(lang: str) -> dict[str, float]:
        return load_language(path, lang)

    common: set[str] = set()
    with pq.ParquetFile(path) as handle:  # one row group per language
        for group in range(handle.num_row_groups):
            part = handle.read_row_group(group, columns=["word", "zipf100"])
            keep = pc.greater_equal(part["zipf100"], round(foreign_zipf * 100))
            common.update(part["word"].filter(keep).to_pylist())
    pa.default_memory_pool().release_unused()
    return load, common


def food_from_rows(rows: Iterable[tuple[str | None, str, int]]) -> dict[str, dict[str, int]]:
    """The food lexicon (lang -> word -> n) from lexicon rows; rows without a language are
    dropped (their words could not be attributed to a text language)."""
    food: dict[str, dict[str, int]] = defaultdict(dict)
    for lang, word, n in rows:
        key = normalise_lang(lang)
        if word and key is not None:
            lower = word.lower()
            food[key][lower] = food[key].get(lower, 0) + int(n)
    return dict(food)


def general_lists(
    path: Path | str | None = None, foreign_zipf: float = Settings.foreign_zipf
) -> tuple[Callable[[str], dict[str, float]], set[str], list[str]]:
    """The shipped (or given) general word lists: loader, common words, languages."""
    import pyarrow.parquet as pq

    from spellcheck_job.wordlists import DEFAULT_PATH

    target = path or DEFAULT_PATH
    load, common = parquet_general_loader(target, foreign_zipf)
    langs = pq.read_table(target, columns=["lang"]).column("lang").unique().to_pylist()
    return load, common, sorted(langs)


def _languages_of(path: Path) -> list[str]:
    """The languages of a ``wordlists`` file, from its footer (one row group a language, its
    ``lang`` statistics); the column is read only when statistics are missing."""
    import pyarrow.compute as pc
    import pyarrow.parquet as pq

    with pq.ParquetFile(path) as handle:  # not read_table: it imports pyarrow.dataset
        meta = handle.metadata
        found: set[str] = set()
        index = handle.schema_arrow.get_field_index("lang")
        for i in range(meta.num_row_groups):
            stats = meta.row_group(i).column(index).statistics
            if stats is None or not stats.has_min_max or stats.min != stats.max:
                column = handle.read(columns=["lang"]).column("lang")
                return sorted(str(x) for x in pc.unique(column).to_pylist() if x)
            found.add(str(stats.min))
    return sorted(found)


def prebuilt_lists(
    path: Path | str | None = None, settings: Settings | None = None
) -> tuple[Callable[[str], Prebuilt | None], HashSet, list[str]]:
    """The shipped (or given) general word lists as prebuilt per-language indexes
    (``word_index``; a language not built yet is built on first use and kept): the index
    loader, the words common in some language, the languages."""

    from spellcheck_job import word_index
    from spellcheck_job.wordlists import DEFAULT_PATH

    s = settings or Settings()
    target = Path(path or DEFAULT_PATH)
    directory = word_index.index_dir(
        target, f"r{s.rare_zipf:g}-t{s.target_zipf:g}-f{s.foreign_zipf:g}"
    )
    langs = _languages_of(target)
    loaded: dict[str, Prebuilt | None] = {}

    def prebuilt(lang: str) -> Prebuilt | None:
        if lang not in loaded:
            pre = word_index.read_language(directory, lang)
            if pre is None and lang in langs:
                pre = word_index.build_language(
                    load_language(target, lang),
                    rare_zipf=s.rare_zipf,
                    target_zipf=s.target_zipf,
                    strip_accents=strip_accents,
                )
                word_index.write_language(pre, directory, lang)
            loaded[lang] = pre
        return loaded[lang]

    def common_source() -> set[str]:
        return parquet_general_loader(target, s.foreign_zipf)[1]

    common = word_index.common_words(directory, common_source)
    return prebuilt, common, langs
