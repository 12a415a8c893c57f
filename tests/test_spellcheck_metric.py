"""OFF's spellcheck metric on hand-made cases with known counts (real cl100k_base tokens)."""

from __future__ import annotations

import pytest

from benchmarks.spellcheck_metric import align, cl100k_encoding, evaluate, line_up, normalise

ROW = {"original": "Farine de ble, sucre", "reference": "Farine de blé, sucre"}


def test_cl100k_is_the_real_encoding_offline() -> None:
    enc = cl100k_encoding()
    assert enc.encode("hello world") == [15339, 1917]


def test_identity_prediction_scores_zero_with_false_negatives() -> None:
    result = evaluate([{**ROW, "prediction": ROW["original"]}])
    assert result["tp"] == 0 and result["fp"] == 0 and result["fn"] > 0
    assert result["correction_precision"] == 0 and result["correction_recall"] == 0
    assert result["changed_texts"] == 0


def test_perfect_prediction_scores_one() -> None:
    result = evaluate([{**ROW, "prediction": ROW["reference"]}])
    assert result["fn"] == 0 and result["fp"] == 0 and result["tp"] > 0
    assert result["correction_precision"] == 1.0 and result["correction_recall"] == 1.0


def test_wrong_token_counts_as_tp_but_not_correction_tp() -> None:
    # Word-level encoder: one changed token at one position.
    def encode(text: str) -> list[int]:
        return [hash(w) for w in text.split()]

    rows = [
        {"original": "a ble c", "reference": "a blé c", "prediction": "a blè c"},
        {"original": "x y z", "reference": "x y z", "prediction": "x w z"},
    ]
    result = evaluate(rows, encode=encode)
    assert (result["tp"], result["fp"], result["fn"], result["correction_tp"]) == (1, 1, 0, 0)
    assert result["precision"] == pytest.approx(0.5)
    assert result["correction_precision"] == 0.0


def test_case_and_whitespace_are_normalised() -> None:
    assert normalise("  Sucre \n\t SEL ") == "sucre sel"
    result = evaluate([{"original": "SUCRE  sel", "reference": "sucre sel", "prediction": "x"}])
    assert result["fn"] == 0  # the reference only changes case/space: nothing to correct


def test_alignment_and_neutral_pairs() -> None:
    assert align([1, 2, 3], [1, 9, 3]) == [(1, 1), (2, 9), (3, 3)]
    assert align([1, 2], [1, 5, 2]) == [(1, 1), (None, 5), (2, 2)]
    ref, pred = line_up([(1, 1), (None, 5), (2, 2)], [(1, 1), (2, 2)])
    assert len(ref) == len(pred) == 3 and pred[1] == (None, None)
