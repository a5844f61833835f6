"""Metric functions against numbers worked out by hand."""

from __future__ import annotations

import pytest

from tunesmith.eval.compare import wilson_interval, win_stats
from tunesmith.eval.scorers import (
    classification_scores,
    exact_match,
    json_match,
    json_valid,
    normalize_answer,
    rouge_l,
    token_f1,
)


def test_normalize_and_exact_match() -> None:
    assert normalize_answer("  The Cat, sat!  ") == "cat sat"
    assert exact_match("Paris.", "paris") == 1.0
    assert exact_match("Paris is it", "Paris") == 0.0


def test_token_f1_by_hand() -> None:
    # pred "cat sat on mat" (4 tokens, "the" dropped), ref "cat sat" (2): common 2
    # P = 2/4, R = 2/2, F1 = 2 * 0.5 * 1 / 1.5 = 2/3
    assert token_f1("the cat sat on mat", "a cat sat") == pytest.approx(2 / 3)
    # repeated tokens count min(pred, ref) times: {x:2,y:1} & {x:1,y:2} = 2 -> P = R = 2/3
    assert token_f1("x x y", "x y y") == pytest.approx(2 / 3)
    assert token_f1("dog", "cat") == 0.0
    assert token_f1("", "") == 1.0 and token_f1("", "cat") == 0.0


def test_rouge_l_by_hand() -> None:
    # LCS of [the cat sat on the mat] and [the cat is on the mat] = the cat on the mat (5)
    # P = R = 5/6 -> F = 5/6
    assert rouge_l("the cat sat on the mat", "the cat is on the mat") == pytest.approx(5 / 6)
    assert rouge_l("completely different", "nothing shared here") == 0.0


def test_json_metrics() -> None:
    assert json_valid('{"a": 1}') == 1.0 and json_valid('```json\n{"a": 1}\n```') == 0.0
    assert json_match('{"b": 2, "a": 1}', '{"a":1,"b":2}') == 1.0
    assert json_match('{"a": "1"}', '{"a": 1}') == 0.0  # a string is not a number


def test_classification_scores_by_hand() -> None:
    preds, refs = ["a", "a", "b", "b", "c"], ["a", "b", "b", "c", "c"]
    out = classification_scores(preds, refs, ["a", "b", "c"])
    # confusion rows = reference, columns = prediction
    assert out["confusion_matrix"] == [[1, 0, 0], [1, 1, 0], [0, 1, 1]]
    # a: P 1/2 R 1/1; b: P 1/2 R 1/2; c: P 1/1 R 1/2
    assert out["accuracy"] == pytest.approx(3 / 5)
    assert out["macro_precision"] == pytest.approx((0.5 + 0.5 + 1.0) / 3)
    assert out["macro_recall"] == pytest.approx((1.0 + 0.5 + 0.5) / 3)
    # F1: a 2/3, b 1/2, c 2/3
    assert out["macro_f1"] == pytest.approx((2 / 3 + 0.5 + 2 / 3) / 3)


def test_classification_free_text_outside_the_labels_is_a_miss() -> None:
    # "maybe" is no label: a false negative for "yes", no false positive for any class
    out = classification_scores(["yes", "maybe", "no"], ["yes", "yes", "no"], ["no", "yes"])
    assert out["unlabelled_predictions"] == 1
    assert out["confusion_matrix"] == [[1, 0], [0, 1]]
    assert out["accuracy"] == pytest.approx(2 / 3)
    assert out["per_class"]["yes"]["recall"] == pytest.approx(1 / 2)
    assert out["per_class"]["yes"]["precision"] == 1.0


def test_wilson_interval_by_hand() -> None:
    # 8 of 10, z = 1.96: centre = (0.8 + 3.8415/20) / (1 + 3.8415/10) = 0.71675,
    # half = 1.96/1.38415 * sqrt(0.8*0.2/10 + 3.8415/400) = 1.41602 * 0.160012 = 0.22658
    lo, hi = wilson_interval(8, 10)  # type: ignore[misc]
    assert lo == pytest.approx(0.4902, abs=1e-4) and hi == pytest.approx(0.9433, abs=1e-4)
    assert wilson_interval(0, 0) is None
    lo0, hi0 = wilson_interval(0, 5)  # type: ignore[misc]
    assert lo0 == 0.0 and 0.0 < hi0 < 1.0


def test_win_stats_counts_ties_apart() -> None:
    pairs = [{"winner": w} for w in ("b", "b", "a", "tie")]
    out = win_stats(pairs)
    assert (out["wins_a"], out["wins_b"], out["ties"], out["n"]) == (1, 2, 1, 4)
    assert out["win_rate_b"] == pytest.approx(2 / 3)  # ties excluded
    assert out["win_rate_b_ties_half"] == pytest.approx(2.5 / 4)  # a tie = half a win
