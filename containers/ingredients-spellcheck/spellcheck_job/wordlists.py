"""General word lists of the CPU engine: per-language word frequencies, built once, cached.

Source: the data files that ship inside the ``wordfreq`` wheel (PyPI, code Apache-2.0, word
lists CC BY-SA 4.0: Wikipedia, OpenSubtitles, news, books, web text...). Each file
``{large,small}_{lang}.msgpack.gz`` is wordfreq's "cBpack": a header ``{"format": "cB",
"version": 1}`` then one list of words per frequency bucket, bucket ``i`` holding the words of
frequency ``10 ** (-i / 100)`` (centibels), i.e. Zipf value ``9 - i / 100``.

``build`` reads those files (with a small MessagePack decoder of its own), keeps per language the
words of Zipf >= ``min_zipf`` made of letters only (at most ``max_words``, most frequent
first; ``MAX_WORDS_BY_LANG`` for OFF's largest languages) and writes one small Parquet file
(lang, word, zipf100 = Zipf x 100), shipped in the
image as ``spellcheck_job/data/wordfreq_lexicon.parquet``: the engine itself needs only pyarrow
and reads no package at run time.

    pip install --no-deps wordfreq==3.1.1   # anywhere: only its data files are read
    python -m spellcheck_job.wordlists build [--source DIR] [--out FILE]

The shipped file keeps the CC BY-SA 4.0 licence of its source (see data/NOTICE.md).
"""

from __future__ import annotations

import argparse
import gzip
import importlib.util
import re
import sys
from collections.abc import Iterable
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.compute  # noqa: F401  (pa.compute)
import pyarrow.parquet as pq

DATA_DIR = Path(__file__).resolve().parent / "data"
DEFAULT_PATH = DATA_DIR / "wordfreq_lexicon.parquet"
SCHEMA = pa.schema(
    [
        pa.field("lang", pa.string()),
        pa.field("word", pa.string()),
        pa.field("zipf100", pa.int16()),
    ]
)
# The languages of most Open Food Facts products that wordfreq covers (Latin, Greek and
# Cyrillic scripts), largest lists first.
LANGS = ("en fr de es it pt nl pl ro sv cs hu el da fi nb ca bg sk sl lt lv tr ru").split()
MIN_ZIPF = 1.0
MAX_WORDS = 150_000
# Open Food Facts' largest languages keep more rare words (ingredient names are often rare).
MAX_WORDS_BY_LANG = {lang: 300_000 for lang in ("en", "fr", "de", "es", "it", "nl", "pt")}
_WORD = re.compile(r"^[^\W\d_]+$")


def wordfreq_data_dir() -> Path:
    """The ``data`` folder of the installed wordfreq package (located without importing it,
    so its own dependencies need not be installed)."""
    spec = importlib.util.find_spec("wordfreq")
    if spec is None or not spec.submodule_search_locations:
        raise FileNotFoundError("the wordfreq package is not installed")
    return Path(next(iter(spec.submodule_search_locations))) / "data"


def unpack(data: bytes) -> Any:
    """Decode the MessagePack subset that wordfreq's files use (arrays, maps, strings,
    integers, nil/bool), so that building needs no ``msgpack`` package."""
    value, end = _unpack(data, 0)
    if end != len(data):
        raise ValueError("trailing bytes after the MessagePack value")
    return value


def _unpack(data: bytes, i: int) -> tuple[Any, int]:  # noqa: C901, PLR0911, PLR0912
    b = data[i]
    i += 1
    if b <= 0x7F:
        return b, i
    if 0x80 <= b <= 0x8F:
        return _unpack_map(data, i, b & 0x0F)
    if 0x90 <= b <= 0x9F:
        return _unpack_array(data, i, b & 0x0F)
    if 0xA0 <= b <= 0xBF:
        n = b & 0x1F
        return data[i : i + n].decode("utf-8"), i + n
    if b == 0xC0:
        return None, i
    if b in (0xC2, 0xC3):
        return b == 0xC3, i
    if b >= 0xE0:
        return b - 0x100, i
    sizes = {0xCC: 1, 0xCD: 2, 0xCE: 4, 0xCF: 8, 0xD0: 1, 0xD1: 2, 0xD2: 4, 0xD3: 8}
    if b in sizes:
        n = sizes[b]
        return int.from_bytes(data[i : i + n], "big", signed=b >= 0xD0), i + n
    lengths = {0xD9: 1, 0xDA: 2, 0xDB: 4, 0xDC: 2, 0xDD: 4, 0xDE: 2, 0xDF: 4}
    if b not in lengths:
        raise ValueError(f"unsupported MessagePack type byte 0x{b:02x}")
    n = int.from_bytes(data[i : i + lengths[b]], "big")
    i += lengths[b]
    if b in (0xD9, 0xDA, 0xDB):
        return data[i : i + n].decode("utf-8"), i + n
    if b in (0xDC, 0xDD):
        return _unpack_array(data, i, n)
    return _unpack_map(data, i, n)


def _unpack_array(data: bytes, i: int, n: int) -> tuple[list[Any], int]:
    out = []
    for _ in range(n):
        item, i = _unpack(data, i)
        out.append(item)
    return out, i


def _unpack_map(data: bytes, i: int, n: int) -> tuple[dict[Any, Any], int]:
    out = {}
    for _ in range(n):
        key, i = _unpack(data, i)
        out[key], i = _unpack(data, i)
    return out, i


def read_cbpack(path: Path) -> list[list[str]]:
    """The frequency buckets of one wordfreq file (index = centibels below 1)."""
    with gzip.open(path, "rb") as handle:
        data = unpack(handle.read())
    header = data[0]
    if not isinstance(header, dict) or header.get("format") != "cB":
        raise ValueError(f"{path}: not a wordfreq cBpack file")
    return [list(bucket) for bucket in data[1:]]


def select_words(
    buckets: list[list[str]], min_zipf: float = MIN_ZIPF, max_words: int = MAX_WORDS
) -> list[tuple[str, int]]:
    """(word, zipf100) of the letter-only words of Zipf >= ``min_zipf``, most frequent first,
    at most ``max_words``; a word listed twice keeps its first (highest) frequency."""
    seen: set[str] = set()
    out: list[tuple[str, int]] = []
    for index, bucket in enumerate(buckets):
        zipf100 = 900 - index
        if zipf100 < round(min_zipf * 100):
            break
        for word in bucket:
            word = word.lower()
            if word in seen or not _WORD.match(word):
                continue
            seen.add(word)
            out.append((word, zipf100))
            if len(out) >= max_words:
                return out
    return out


def build(
    source: Path,
    out: Path,
    langs: Iterable[str] = LANGS,
    min_zipf: float = MIN_ZIPF,
    max_words: int = MAX_WORDS,
) -> dict[str, int]:
    """Write the cached word list file from wordfreq's data folder; return words per lang."""
    cols: dict[str, list] = {"lang": [], "word": [], "zipf100": []}
    sizes: dict[str, int] = {}
    for lang in langs:
        path = source / f"large_{lang}.msgpack.gz"
        if not path.exists():
            path = source / f"small_{lang}.msgpack.gz"
        if not path.exists():
            continue
        cap = MAX_WORDS_BY_LANG.get(lang, max_words) if max_words == MAX_WORDS else max_words
        words = select_words(read_cbpack(path), min_zipf, cap)
        sizes[lang] = len(words)
        cols["lang"].extend([lang] * len(words))
        cols["word"].extend(w for w, _ in words)
        cols["zipf100"].extend(z for _, z in words)
    table = pa.table(cols, schema=SCHEMA)
    # Sorted by word within a language, delta-encoded: neighbours share prefixes (smaller
    # file); one row group per language, so that reading one language skips the others.
    table = table.sort_by([("lang", "ascending"), ("word", "ascending")])
    out.parent.mkdir(parents=True, exist_ok=True)
    with pq.ParquetWriter(
        out,
        SCHEMA,
        compression="zstd",
        compression_level=19,
        use_dictionary=["lang"],
        column_encoding={"word": "DELTA_BYTE_ARRAY", "zipf100": "DELTA_BINARY_PACKED"},
    ) as writer:
        for lang in sorted(sizes):
            writer.write_table(table.filter(pa.compute.equal(table["lang"], lang)))
    return sizes


def load(path: Path | str = DEFAULT_PATH) -> dict[str, dict[str, float]]:
    """lang -> word -> Zipf frequency, from a file written by ``build``."""
    table = pq.read_table(path, columns=["lang", "word", "zipf100"])
    result: dict[str, dict[str, float]] = {}
    for lang, word, zipf100 in zip(
        table.column("lang").to_pylist(),
        table.column("word").to_pylist(),
        table.column("zipf100").to_pylist(),
        strict=True,
    ):
        result.setdefault(lang, {})[word] = zipf100 / 100
    return result


def main(argv: list[str] | None = None) -> int:
    """CLI: ``build`` the cached word list file."""
    parser = argparse.ArgumentParser(description="Build the CPU engine's general word lists.")
    parser.add_argument("command", choices=["build"])
    parser.add_argument("--source", type=Path, default=None, help="wordfreq's data folder")
    parser.add_argument("--out", type=Path, default=DEFAULT_PATH)
    parser.add_argument("--min-zipf", type=float, default=MIN_ZIPF)
    parser.add_argument("--max-words", type=int, default=MAX_WORDS)
    args = parser.parse_args(argv)
    source = args.source or wordfreq_data_dir()
    sizes = build(source, args.out, min_zipf=args.min_zipf, max_words=args.max_words)
    print(f"wrote {sum(sizes.values())} words to {args.out}: {sizes}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
