"""Classification metrics: accuracy, per-class and macro precision/recall/F1, confusion matrix,
and the majority-class baseline. Pure functions over integer label ids ``0..K-1``.

For class ``c`` with true positives ``TP_c``, false positives ``FP_c``, false negatives ``FN_c``:

    precision_c = TP_c / (TP_c + FP_c)     (0 when the class is never predicted)
    recall_c    = TP_c / (TP_c + FN_c)     (0 when the class never occurs)
    F1_c        = 2 P_c R_c / (P_c + R_c)  (0 when P_c + R_c = 0)

Macro averages are the unweighted means over the K classes (every class counts the same,
whatever its frequency), the convention of scikit-learn's ``average="macro"`` with
``zero_division=0``.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Sequence
from typing import Any


def _check(y_true: Sequence[int], y_pred: Sequence[int]) -> None:
    if len(y_true) != len(y_pred):
        raise ValueError(f"{len(y_true)} true labels but {len(y_pred)} predictions")


def accuracy(y_true: Sequence[int], y_pred: Sequence[int]) -> float:
    _check(y_true, y_pred)
    if not y_true:
        return 0.0
    return sum(t == p for t, p in zip(y_true, y_pred, strict=True)) / len(y_true)


def confusion_matrix(
    y_true: Sequence[int], y_pred: Sequence[int], n_classes: int
) -> list[list[int]]:
    """``m[t][p]`` = number of examples of true class ``t`` predicted as ``p``."""
    _check(y_true, y_pred)
    m = [[0] * n_classes for _ in range(n_classes)]
    for t, p in zip(y_true, y_pred, strict=True):
        m[t][p] += 1
    return m


def _ratio(num: int, den: int) -> float:
    return num / den if den else 0.0


def per_class(matrix: list[list[int]]) -> list[dict[str, float]]:
    """Precision, recall, F1 and support of every class, from a confusion matrix."""
    k = len(matrix)
    out = []
    for c in range(k):
        tp = matrix[c][c]
        predicted = sum(matrix[t][c] for t in range(k))
        support = sum(matrix[c])
        p, r = _ratio(tp, predicted), _ratio(tp, support)
        f1 = _ratio(2 * tp, predicted + support)  # = 2PR / (P + R), 0 when both are 0
        out.append({"precision": p, "recall": r, "f1": f1, "support": float(support)})
    return out


def macro(rows: list[dict[str, float]]) -> dict[str, float]:
    k = len(rows)
    return {
        key: sum(r[key] for r in rows) / k if k else 0.0 for key in ("precision", "recall", "f1")
    }


def classification_report(
    y_true: Sequence[int], y_pred: Sequence[int], labels: Sequence[str]
) -> dict[str, Any]:
    """Accuracy, macro P/R/F1, per-class figures (by label name) and the confusion matrix."""
    matrix = confusion_matrix(y_true, y_pred, len(labels))
    rows = per_class(matrix)
    m = macro(rows)
    return {
        "examples": len(y_true),
        "accuracy": accuracy(y_true, y_pred),
        "macro_precision": m["precision"],
        "macro_recall": m["recall"],
        "macro_f1": m["f1"],
        "per_class": {label: row for label, row in zip(labels, rows, strict=True)},
        "labels": list(labels),
        "confusion_matrix": matrix,
    }


def majority_class(train_labels: Sequence[int]) -> int:
    """The most frequent training label (the smallest id among ties)."""
    counts = Counter(train_labels)
    return min(counts, key=lambda c: (-counts[c], c))


def majority_baseline(
    train_labels: Sequence[int], y_true: Sequence[int], labels: Sequence[str]
) -> dict[str, Any]:
    """The report of always predicting the training set's most frequent class."""
    c = majority_class(train_labels)
    report = classification_report(y_true, [c] * len(y_true), labels)
    return {"predicts": labels[c], **report}
