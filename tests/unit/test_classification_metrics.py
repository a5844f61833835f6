"""Classification metrics and loss against hand-worked numbers."""

from __future__ import annotations

import math

import pytest
import torch

from tunesmith.eval.classification import (
    accuracy,
    classification_report,
    confusion_matrix,
    majority_baseline,
    majority_class,
)
from tunesmith.losses.classification import classification_loss

Y_TRUE = [0, 0, 0, 1, 1, 2]
Y_PRED = [0, 0, 1, 1, 2, 2]


def test_confusion_matrix_rows_are_true_classes() -> None:
    assert confusion_matrix(Y_TRUE, Y_PRED, 3) == [[2, 1, 0], [0, 1, 1], [0, 0, 1]]


def test_report_by_hand() -> None:
    r = classification_report(Y_TRUE, Y_PRED, ["a", "b", "c"])
    assert r["accuracy"] == pytest.approx(4 / 6)
    # a: TP 2, predicted 2, support 3 -> P 1, R 2/3, F1 2*2/(2+3) = 0.8
    assert r["per_class"]["a"]["precision"] == 1.0
    assert r["per_class"]["a"]["recall"] == pytest.approx(2 / 3)
    assert r["per_class"]["a"]["f1"] == pytest.approx(0.8)
    # b: TP 1, predicted 2, support 2 -> P 0.5, R 0.5, F1 0.5
    assert r["per_class"]["b"]["f1"] == pytest.approx(0.5)
    # c: TP 1, predicted 2, support 1 -> P 0.5, R 1, F1 2/3
    assert r["per_class"]["c"]["f1"] == pytest.approx(2 / 3)
    assert r["macro_precision"] == pytest.approx((1 + 0.5 + 0.5) / 3)
    assert r["macro_recall"] == pytest.approx((2 / 3 + 0.5 + 1) / 3)
    assert r["macro_f1"] == pytest.approx((0.8 + 0.5 + 2 / 3) / 3)


def test_never_predicted_class_scores_zero_not_nan() -> None:
    r = classification_report([0, 1], [0, 0], ["a", "b"])
    assert r["per_class"]["b"] == {"precision": 0.0, "recall": 0.0, "f1": 0.0, "support": 1.0}
    assert r["per_class"]["a"]["precision"] == 0.5


def test_majority_baseline() -> None:
    assert majority_class([1, 1, 0, 2]) == 1
    assert majority_class([2, 0, 2, 0]) == 0  # ties: the smallest id
    b = majority_baseline([1, 1, 0, 2], Y_TRUE, ["a", "b", "c"])
    assert b["predicts"] == "b"
    assert b["accuracy"] == pytest.approx(2 / 6)
    # b: TP 2, predicted 6, support 2 -> F1 = 2*2 / (6 + 2) = 0.5; a and c score 0
    assert b["macro_f1"] == pytest.approx(0.5 / 3)


def test_accuracy_length_mismatch_is_an_error() -> None:
    with pytest.raises(ValueError, match="2 true labels but 1"):
        accuracy([0, 1], [0])


def test_classification_loss_by_hand() -> None:
    logits = torch.tensor([[0.0, math.log(3.0)], [0.0, math.log(3.0)]])
    # softmax = [1/4, 3/4]: label 1 -> -ln 0.75, label 0 -> -ln 0.25; mean of the two
    loss = classification_loss(logits, torch.tensor([1, 0]))
    assert loss.item() == pytest.approx((-math.log(0.75) - math.log(0.25)) / 2, rel=1e-6)
