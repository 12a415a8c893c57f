"""Per-language indexes of the general word lists, built once and loaded in a blink.

What the CPU engine derives from a language's general word list alone (its frequencies, the
hashes of its rare words, its accent map, its SymSpell deletion index, its alphabet) does not
depend on the dump: it is built once per word-list file and engine settings, written as Arrow
IPC files (``<dir>/<key>/<lang>.*.arrow``), and read back by a task in about 0.1 s a language
instead of being rebuilt in seconds. Only the languages a task's texts have are loaded; the
dump's food words are merged in at load time (``wordfreq_cpu._Language.from_prebuilt``).

Where: ``WORDINDEX_DIR``, else ``data/index/`` beside the shipped word list when writable (the
image builds it at build time: ``python -m spellcheck_job.build_indexes``), else
``~/.cache/spellcheck_job/index``. A language missing there is built on first use and written
(atomically: a concurrent task sees all of it or none), so a fresh checkout pays it once.

The hashes are stable across processes (CRC32 of the deletion keys, BLAKE2b-64 of the rare
words), unlike Python's salted ``hash``: an index written by one process is valid in another.
"""

from __future__ import annotations

import hashlib
import json
import os
import tempfile
import zlib
from array import array
from bisect import bisect_left
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.ipc as ipc

FORMAT = 1
_MASK32 = 0xFFFFFFFF


def key_hash(key: str) -> int:
    """A deletion key's stable 32-bit hash."""
    return zlib.crc32(key.encode("utf-8"))


def word_hash(word: str) -> int:
    """A word's stable signed 64-bit hash (rare words and common foreign words are kept as
    sorted arrays of these: 8 bytes a word)."""
    digest = hashlib.blake2b(word.encode("utf-8"), digest_size=8).digest()
    return int.from_bytes(digest, "little", signed=True)


def _deletes1(word: str) -> list[str]:
    return [word[:i] + word[i + 1 :] for i in range(len(word))]


def deletion_entries(words: Sequence[str]) -> array:
    """The sorted entries ``key_hash(key) << 32 | word id`` of each word and its one-letter
    deletions (the SymSpell index at distance 1)."""
    entries: list[int] = []
    for i, word in enumerate(words):
        for key in {word, *_deletes1(word)}:
            entries.append((key_hash(key) << 32) | i)
    entries.sort()
    return array("Q", entries)


class HashSet:
    """A set of words kept as sorted 64-bit hashes (membership only)."""

    def __init__(self, hashes: array) -> None:
        self.hashes = hashes

    @classmethod
    def of(cls, words: Iterable[str]) -> HashSet:
        return cls(array("q", sorted({word_hash(w) for w in words})))

    def __contains__(self, word: object) -> bool:
        if not isinstance(word, str):
            return False
        h = word_hash(word)
        i = bisect_left(self.hashes, h)
        return i < len(self.hashes) and self.hashes[i] == h

    def __len__(self) -> int:
        return len(self.hashes)


@dataclass
class Prebuilt:
    """What the engine derives from one language's general word list (no food word in it)."""

    freq: dict[str, float]  # words of Zipf >= rare_zipf
    rare: array  # sorted word_hash of the words below rare_zipf
    targets: list[str]  # words of Zipf >= target_zipf and 4+ letters: correction targets
    entries: array  # deletion_entries(targets)
    accents: dict[str, list[str]]  # accent-stripped form -> target-worthy accented words
    alphabet: frozenset[str]
    rich: bool


def build_language(
    general: Mapping[str, float],
    *,
    rare_zipf: float,
    target_zipf: float,
    strip_accents: Callable[[str], str],
) -> Prebuilt:
    """Derive a language's :class:`Prebuilt` from its general list (word -> Zipf)."""
    from collections import defaultdict

    freq = {w: z for w, z in general.items() if z >= rare_zipf}
    rare = array("q", sorted({word_hash(w) for w, z in general.items() if z < rare_zipf}))
    letters: dict[str, int] = defaultdict(int)
    for word in general:
        for ch in set(word):
            letters[ch] += 1
    floor = max(2, len(general) // 5000)
    alphabet = frozenset(ch for ch, n in letters.items() if n >= floor)
    accents: dict[str, list[str]] = defaultdict(list)
    targets: list[str] = []
    for word, z in freq.items():
        if z < target_zipf:
            continue
        bare = strip_accents(word)
        if bare != word:
            accents[bare].append(word)
        if len(word) >= 4:
            targets.append(word)
    return Prebuilt(
        freq=freq,
        rare=rare,
        targets=targets,
        entries=deletion_entries(targets),
        accents=dict(accents),
        alphabet=alphabet,
        rich=bool(general) and min(general.values()) <= 2.0,
    )


def _write(table: pa.Table, path: Path) -> None:
    with ipc.new_file(str(path), table.schema) as writer:
        writer.write_table(table)


def _read(path: Path) -> pa.Table:
    with pa.memory_map(str(path)) as source:
        return ipc.open_file(source).read_all()


def _ints(column: pa.ChunkedArray, typecode: str) -> array:
    out = array(typecode)
    for chunk in column.chunks:
        buf = chunk.buffers()[1]
        width = out.itemsize
        out.frombytes(memoryview(buf)[chunk.offset * width : (chunk.offset + len(chunk)) * width])
    return out


def write_language(pre: Prebuilt, directory: Path, lang: str) -> None:
    """Write ``pre`` as ``<lang>.*`` files into ``directory``, atomically (all or none)."""
    directory.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{lang}-", dir=directory))
    try:
        words = list(pre.freq)
        _write(
            pa.table(
                {
                    "word": pa.array(words, pa.string()),
                    "zipf100": pa.array([round(pre.freq[w] * 100) for w in words], pa.int16()),
                }
            ),
            tmp / "freq.arrow",
        )
        _write(pa.table({"h": pa.array(pre.rare, pa.int64())}), tmp / "rare.arrow")
        _write(pa.table({"word": pa.array(pre.targets, pa.string())}), tmp / "targets.arrow")
        _write(pa.table({"e": pa.array(pre.entries, pa.uint64())}), tmp / "entries.arrow")
        pairs = [(b, w) for b, ws in pre.accents.items() for w in ws]
        _write(
            pa.table(
                {
                    "bare": pa.array([b for b, _ in pairs], pa.string()),
                    "word": pa.array([w for _, w in pairs], pa.string()),
                }
            ),
            tmp / "accents.arrow",
        )
        meta = {"format": FORMAT, "alphabet": "".join(sorted(pre.alphabet)), "rich": pre.rich}
        (tmp / "meta.json").write_text(json.dumps(meta, ensure_ascii=False), encoding="utf-8")
        try:
            os.replace(tmp, directory / lang)
        except OSError:  # another task wrote it first: theirs is the same
            pass
    finally:
        if tmp.exists():
            import shutil

            shutil.rmtree(tmp, ignore_errors=True)


def read_language(directory: Path, lang: str) -> Prebuilt | None:
    """The :class:`Prebuilt` written for ``lang`` in ``directory``, or None if absent."""
    base = directory / lang
    meta_path = base / "meta.json"
    if not meta_path.exists():
        return None
    meta = json.loads(meta_path.read_text(encoding="utf-8"))
    if meta.get("format") != FORMAT:
        return None
    freq_t = _read(base / "freq.arrow")
    # z / 100 in Python, the same doubles as Arrow's divide, whose first call in a process
    # costs ~0.5 s (its kernels' set-up): a task's start-up (benchmarks/task_setup_benchmark.py)
    zipf = [z / 100 for z in freq_t.column("zipf100").to_pylist()]
    freq = dict(zip(freq_t.column("word").to_pylist(), zipf, strict=True))
    accents: dict[str, list[str]] = {}
    acc = _read(base / "accents.arrow")
    for bare, word in zip(
        acc.column("bare").to_pylist(), acc.column("word").to_pylist(), strict=True
    ):
        accents.setdefault(bare, []).append(word)
    return Prebuilt(
        freq=freq,
        rare=_ints(_read(base / "rare.arrow").column("h"), "q"),
        targets=_read(base / "targets.arrow").column("word").to_pylist(),
        entries=_ints(_read(base / "entries.arrow").column("e"), "Q"),
        accents=accents,
        alphabet=frozenset(meta["alphabet"]),
        rich=bool(meta["rich"]),
    )


def index_dir(wordlist: Path, settings_key: str) -> Path:
    """The directory of the indexes of ``wordlist`` (its content's hash) for these settings."""
    digest = hashlib.sha256(wordlist.read_bytes()).hexdigest()[:12]
    key = f"v{FORMAT}-{digest}-{settings_key}"
    configured = os.environ.get("WORDINDEX_DIR", "").strip()
    if configured:
        return Path(configured) / key
    beside = wordlist.parent / "index"
    try:
        beside.mkdir(parents=True, exist_ok=True)
        if os.access(beside, os.W_OK) or (beside / key).exists():
            return beside / key
    except OSError:
        pass
    return Path.home() / ".cache" / "spellcheck_job" / "index" / key


def common_words(directory: Path, build: Callable[[], Iterable[str]]) -> HashSet:
    """The words common in some language (read from ``directory``, else built and written)."""
    path = directory / "common.arrow"
    if path.exists():
        return HashSet(_ints(_read(path).column("h"), "q"))
    found = HashSet.of(build())
    directory.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".common.{os.getpid()}.arrow")
    _write(pa.table({"h": pa.array(found.hashes, pa.int64())}), tmp)
    os.replace(tmp, path)
    return found


__all__: Sequence[Any] = (
    "HashSet",
    "Prebuilt",
    "build_language",
    "deletion_entries",
    "index_dir",
    "key_hash",
    "read_language",
    "word_hash",
    "write_language",
)
