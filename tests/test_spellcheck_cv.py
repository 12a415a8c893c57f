"""The cross-validation's rule gate (benchmarks/spellcheck_cv.py): a rule the training folds
barely saw is judged on the synthetic tune half, never on dev."""

from __future__ import annotations

import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "containers" / "ingredients-spellcheck"))

from spellcheck_job.wordfreq_cpu import RULES, Settings, WordFreqSpellchecker  # noqa: E402

from benchmarks.spellcheck_cv import Scorer, choose  # noqa: E402

GENERAL = {"fr": {"crème": 4.4, "creme": 2.9, "sucre": 4.5, "lait": 4.6, "sel": 4.5}}
ROWS = [
    {"original": "creme, sucre, lait.", "reference": "crème, sucre, lait.", "lang": "fr"},
    {"original": "sucre, creme, sel.", "reference": "sucre, crème, sel.", "lang": "fr"},
]


def _synthetic(precision: float, changed: int = 100) -> dict[str, dict[str, float]]:
    return {r: {"changed": changed, "correction_precision": precision} for r in RULES}


def test_rules_rare_in_the_training_folds_are_judged_on_the_synthetic_half() -> None:
    engine = WordFreqSpellchecker({}, GENERAL, Settings(rules=RULES))
    scorer = Scorer(ROWS, engine)
    # dev alone: only accents changed anything (right every time): only they are kept
    rules, _, evidence = choose(scorer, [0, 1])
    assert rules == frozenset({"accent"})
    assert evidence["accent"]["judged_on"] == "dev"
    assert 3 <= evidence["accent"]["changed"] < 20
    # the synthetic half's evidence decides for every rule dev barely saw
    rules, _, evidence = choose(scorer, [0, 1], _synthetic(0.95))
    assert rules == RULES
    assert {e["judged_on"] for e in evidence.values()} == {"synthetic tune half"}
    rules, _, _ = choose(scorer, [0, 1], _synthetic(0.60))
    assert rules == frozenset()
    # too little synthetic evidence is no evidence: dev's own decides
    rules, _, _ = choose(scorer, [0, 1], _synthetic(0.95, changed=2))
    assert rules == frozenset({"accent"})
