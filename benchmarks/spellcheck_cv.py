"""K-fold cross-validation of the CPU spellcheck engine's settings on the dev slice.

The dev slice (53 rows) is too small to tune on and report on: a threshold chosen on all of it
fits it. Here every figure is **out of fold**: the rows are split into ``k`` folds (seeded);
for each fold, the settings are chosen on the other folds only, then scored on it:

1. per rule (accent, ocr, typo, glued, join, punctuation, romanian), the rule alone is scored
   on the training folds; a rule is kept when its correction precision is >= ``RULE_FLOOR``
   (0.85) on at least ``MIN_EVIDENCE`` (3) changed token positions (fewer is no evidence);
2. the confidence threshold is the one of ``THRESHOLDS`` with the best training recall among
   those whose training correction precision is >= ``TARGET_PRECISION``;
3. the held-back fold is scored with those rules and that threshold.

Counts are pooled over the held-back folds (OFF's metric sums counts too); the per-fold
spread is reported beside them. Per rule, each rule alone is scored on each held-back fold at
that fold's threshold: a rule under ``RULE_FLOOR`` out of fold is off by default. The
defaults the engine ships are the rules kept that way and the median of the fold thresholds.
Predictions and scores are cached per row and prediction (an engine's word decisions do not
depend on the threshold or the rules: those filter them), so a grid costs little.
"""

from __future__ import annotations

import random
import statistics
from collections.abc import Callable, Sequence
from dataclasses import replace
from typing import Any

from spellcheck_job.wordfreq_cpu import RULES, WordFreqSpellchecker

from benchmarks.spellcheck_metric import cl100k_encoding, score_row

K = 5
SEED = 21
RULE_FLOOR = 0.85
TARGET_PRECISION = 0.90
MIN_EVIDENCE = 3
THRESHOLDS = (0.0, 0.5, 0.6, 0.7, 0.8, 0.9, 0.95, 0.98)
Counts = dict[str, int]


def folds(n: int, k: int = K, seed: int = SEED) -> list[list[int]]:
    """Row indices split into ``k`` folds after a seeded shuffle."""
    order = list(range(n))
    random.Random(seed).shuffle(order)
    return [sorted(order[f::k]) for f in range(k)]


def ratios(c: Counts) -> dict[str, float]:
    """Correction precision and recall of pooled counts."""
    changed, needed = c["tp"] + c["fp"], c["tp"] + c["fn"]
    return {
        "correction_precision": c["correction_tp"] / changed if changed else 0.0,
        "correction_recall": c["correction_tp"] / needed if needed else 0.0,
    }


class Scorer:
    """Per-row counts of an engine under given rules and threshold, cached."""

    def __init__(
        self,
        rows: Sequence[dict[str, Any]],
        engine: WordFreqSpellchecker,
        pick: Callable[[dict[str, Any]], WordFreqSpellchecker] | None = None,
    ) -> None:
        """``pick``: the engine of a row (default ``engine``; all share its settings)."""
        self.rows = rows
        self.engine = engine
        self.pick = pick or (lambda row: engine)
        self.engines = {id(self.pick(row)): self.pick(row) for row in rows} or {0: engine}
        self.base = engine.settings
        enc = cl100k_encoding()
        self.encode: Callable[[str], list[int]] = lambda t: list(enc.encode_ordinary(t))
        self._scores: dict[tuple[int, str], Counts] = {}
        self._configs: dict[tuple[frozenset[str], float], list[Counts]] = {}

    def per_row(self, rules: frozenset[str], threshold: float) -> list[Counts]:
        key = (rules, threshold)
        if key not in self._configs:
            for engine in self.engines.values():
                engine.settings = replace(self.base, rules=rules, min_confidence=threshold)
            out = []
            for i, row in enumerate(self.rows):
                pred = self.pick(row).correct(row["original"], row["lang"])
                if (i, pred) not in self._scores:
                    self._scores[(i, pred)] = score_row(
                        row["original"], row["reference"], pred, self.encode
                    )
                out.append(self._scores[(i, pred)])
            for engine in self.engines.values():
                engine.settings = self.base
            self._configs[key] = out
        return self._configs[key]

    def pooled(self, rules: frozenset[str], threshold: float, idx: Sequence[int]) -> Counts:
        per_row = self.per_row(rules, threshold)
        total = {"tp": 0, "fp": 0, "fn": 0, "correction_tp": 0}
        for i in idx:
            for key in total:
                total[key] += per_row[i][key]
        return total


def choose(
    scorer: Scorer,
    train: Sequence[int],
    synthetic: dict[str, dict[str, Any]] | None = None,
) -> tuple[frozenset[str], float, dict]:
    """Rules and threshold chosen on ``train`` rows only (see the module docstring).

    ``synthetic``: each rule alone on the synthetic tune half (``rules_alone``), never dev:
    a rule that changed fewer than ``DEV_EVIDENCE`` positions in the training folds is
    judged there, as the shipped defaults are (``default_rules``)."""
    kept = set()
    evidence: dict[str, dict[str, Any]] = {}
    for rule in sorted(RULES):
        c = scorer.pooled(frozenset({rule}), THRESHOLDS[0], train)
        p = ratios(c)["correction_precision"]
        changed = c["tp"] + c["fp"]
        evidence[rule] = {"changed": changed, "precision": round(p, 3), "judged_on": "dev"}
        if synthetic is not None and changed < DEV_EVIDENCE:
            syn = synthetic[rule]
            if syn["changed"] >= MIN_EVIDENCE:
                changed, p = syn["changed"], syn["correction_precision"]
                evidence[rule]["judged_on"] = "synthetic tune half"
        if changed >= MIN_EVIDENCE and p >= RULE_FLOOR:
            kept.add(rule)
    rules = frozenset(kept)
    best: tuple[float, float, float] | None = None  # (recall, threshold, precision)
    fallback: tuple[float, float] | None = None  # (precision, threshold)
    for t in THRESHOLDS:
        r = ratios(scorer.pooled(rules, t, train))
        p, rec = r["correction_precision"], r["correction_recall"]
        if p >= TARGET_PRECISION and (best is None or rec > best[0]):
            best = (rec, t, p)
        if fallback is None or p > fallback[0]:
            fallback = (p, t)
    assert fallback is not None
    threshold = best[1] if best is not None else fallback[1]
    return rules, threshold, evidence


def cross_validate(
    rows: Sequence[dict[str, Any]],
    engine: WordFreqSpellchecker,
    k: int = K,
    synthetic: dict[str, dict[str, Any]] | None = None,
) -> dict[str, Any]:
    """Out-of-fold figures, per fold and pooled, per rule, and the defaults they give
    (``synthetic``: see ``choose``)."""
    scorer = Scorer(rows, engine)
    parts = folds(len(rows), k)
    pooled = {"tp": 0, "fp": 0, "fn": 0, "correction_tp": 0}
    per_rule: dict[str, Counts] = {r: dict(pooled) for r in sorted(RULES)}
    fold_rows = []
    for f, held in enumerate(parts):
        train = [i for i in range(len(rows)) if i not in set(held)]
        rules, threshold, evidence = choose(scorer, train, synthetic)
        c = scorer.pooled(rules, threshold, held)
        for key in pooled:
            pooled[key] += c[key]
        for rule in per_rule:
            alone = scorer.pooled(frozenset({rule}), threshold, held)
            for key in pooled:
                per_rule[rule][key] += alone[key]
        fold_rows.append(
            {
                "fold": f,
                "rows": len(held),
                "rules": sorted(rules),
                "threshold": threshold,
                "train_rule_precision": evidence,
                **c,
                **{key: round(v, 3) for key, v in ratios(c).items()},
            }
        )
    rules_table = {}
    for rule, c in per_rule.items():
        r = ratios(c)
        changed = c["tp"] + c["fp"]
        rules_table[rule] = {
            **c,
            "changed": changed,
            "correction_precision": round(r["correction_precision"], 3),
            "floor_met": changed >= MIN_EVIDENCE and r["correction_precision"] >= RULE_FLOOR,
        }
    precisions = [fr["correction_precision"] for fr in fold_rows]
    recalls = [fr["correction_recall"] for fr in fold_rows]
    return {
        "k": k,
        "seed": SEED,
        "rule_floor": RULE_FLOOR,
        "target_precision": TARGET_PRECISION,
        "thresholds": list(THRESHOLDS),
        "pooled": {**pooled, **{key: round(v, 3) for key, v in ratios(pooled).items()}},
        "spread": {
            "precision_min": min(precisions),
            "precision_max": max(precisions),
            "precision_stdev": round(statistics.pstdev(precisions), 3),
            "recall_min": min(recalls),
            "recall_max": max(recalls),
            "recall_stdev": round(statistics.pstdev(recalls), 3),
        },
        "folds": fold_rows,
        "per_rule": rules_table,
        "defaults": {
            "rules_floor_met_out_of_fold": sorted(
                r for r, v in rules_table.items() if v["floor_met"]
            ),
            "min_confidence": statistics.median(fr["threshold"] for fr in fold_rows),
        },
    }


# Fewer changed token positions than this out of fold on dev is too little evidence to judge
# a rule (53 rows): it is judged on the synthetic tune half instead.
DEV_EVIDENCE = 20


def rules_alone(scorer: Scorer, threshold: float) -> dict[str, dict[str, Any]]:
    """Each rule alone on all of ``scorer``'s rows: counts and correction precision."""
    out = {}
    for rule in sorted(RULES):
        c = scorer.pooled(frozenset({rule}), threshold, range(len(scorer.rows)))
        out[rule] = {
            **c,
            "changed": c["tp"] + c["fp"],
            "correction_precision": round(ratios(c)["correction_precision"], 3),
        }
    return out


def default_rules(
    dev_oof: dict[str, dict[str, Any]], synthetic_tune: dict[str, dict[str, Any]]
) -> dict[str, dict[str, Any]]:
    """Per rule: the evidence it is judged on (dev out of fold when it changed at least
    ``DEV_EVIDENCE`` token positions there, else the synthetic tune half), its precision
    there and whether it is on (>= ``RULE_FLOOR`` on at least ``MIN_EVIDENCE`` positions).
    A rule with no evidence anywhere (Romanian letters: no Romanian synthetic row) is on
    only if it never failed on dev."""
    out = {}
    for rule, dev in dev_oof.items():
        syn = synthetic_tune[rule]
        if dev["changed"] >= DEV_EVIDENCE or syn["changed"] < MIN_EVIDENCE:
            source, r = "dev out of fold", dev
        else:
            source, r = "synthetic tune half", syn
        on = r["changed"] >= MIN_EVIDENCE and r["correction_precision"] >= RULE_FLOOR
        out[rule] = {"judged_on": source, "precision": r["correction_precision"], "on": on}
    return out
