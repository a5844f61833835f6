"""Per-example scores for generation and multiple-choice evaluation, and their aggregates.

Every function here is pure: strings (or labels) in, a float out. ``normalize_answer`` follows
the SQuAD v1.1 evaluation script (Rajpurkar et al. 2016): lower-case, drop punctuation, drop the
articles a/an/the, collapse whitespace.

    exact_match = [normalize(prediction) == normalize(reference)]
    token_f1    = 2 P R / (P + R),  P = |common| / |pred tokens|,  R = |common| / |ref tokens|
                  (common counts each token min(count in pred, count in ref) times)
    rouge_l     = ROUGE-L F-measure over the longest common subsequence (Lin 2004), via rouge_score
"""

from __future__ import annotations

import json
import re
import string
from collections import Counter
from collections.abc import Callable
from functools import lru_cache
from typing import Any

_ARTICLES = re.compile(r"\b(a|an|the)\b")
_PUNCT = set(string.punctuation)


def normalize_answer(text: str) -> str:
    """SQuAD-style normalisation: lower case, no punctuation, no articles, single spaces."""
    text = text.lower()
    text = "".join(ch for ch in text if ch not in _PUNCT)
    text = _ARTICLES.sub(" ", text)
    return " ".join(text.split())


def exact_match(prediction: str, reference: str) -> float:
    """1.0 when the normalised strings are equal, else 0.0."""
    return float(normalize_answer(prediction) == normalize_answer(reference))


def token_f1(prediction: str, reference: str) -> float:
    """SQuAD token F1 between the normalised prediction and reference (both empty: 1.0)."""
    pred, ref = normalize_answer(prediction).split(), normalize_answer(reference).split()
    if not pred or not ref:
        return float(pred == ref)
    common = sum((Counter(pred) & Counter(ref)).values())
    if common == 0:
        return 0.0
    precision, recall = common / len(pred), common / len(ref)
    return 2 * precision * recall / (precision + recall)


@lru_cache(maxsize=1)
def _rouge_scorer() -> Any:
    from rouge_score import rouge_scorer

    return rouge_scorer.RougeScorer(["rougeL"], use_stemmer=False)


def rouge_l(prediction: str, reference: str) -> float:
    """ROUGE-L F-measure (longest common subsequence of tokens) from ``rouge_score``."""
    return float(_rouge_scorer().score(reference, prediction)["rougeL"].fmeasure)


def json_valid(prediction: str, reference: str = "") -> float:
    """1.0 when the whole stripped prediction parses as JSON, else 0.0 (reference unused)."""
    try:
        json.loads(prediction.strip())
    except ValueError:
        return 0.0
    return 1.0


def json_match(prediction: str, reference: str) -> float:
    """1.0 when prediction and reference parse to equal JSON values (types included)."""
    try:
        got, want = json.loads(prediction.strip()), json.loads(reference.strip())
    except ValueError:
        return 0.0
    return float(json.dumps(got, sort_keys=True) == json.dumps(want, sort_keys=True))


def strict_match(prediction: str, reference: str) -> float:
    """1.0 when the stripped strings are identical (no normalisation)."""
    return float(prediction.strip() == reference.strip())


GENERATION_METRICS: dict[str, Callable[[str, str], float]] = {
    "exact_match": exact_match,
    "strict_match": strict_match,
    "f1": token_f1,
    "rouge_l": rouge_l,
    "json_valid": json_valid,
    "json_match": json_match,
}


def mean(values: list[float]) -> float | None:
    return sum(values) / len(values) if values else None


def classification_scores(
    predictions: list[str], references: list[str], labels: list[str] | None = None
) -> dict[str, Any]:
    """Accuracy, macro precision/recall/F1, per-class figures and the confusion matrix of
    label predictions (via :mod:`tunesmith.eval.classification`).

    ``labels`` default to every label seen, sorted. A prediction outside ``labels`` (free text
    that matches no class) counts as a miss for its reference's class and is tallied in
    ``unlabelled_predictions``; ``confusion_matrix[i][j]`` counts references ``labels[i]``
    predicted as ``labels[j]``. References outside ``labels`` are not scored.
    """
    from tunesmith.eval.classification import accuracy, confusion_matrix, macro, per_class

    names = list(labels or sorted(set(references) | set(predictions)))
    index = {name: i for i, name in enumerate(names)}
    k = len(names)
    pairs = [(index[r], index.get(p, k)) for p, r in zip(predictions, references, strict=True)
             if r in index]  # fmt: skip
    y_true, y_pred = [t for t, _ in pairs], [p for _, p in pairs]
    matrix = confusion_matrix(y_true, y_pred, k + 1)  # the last class: "none of the labels"
    rows = per_class(matrix)[:k]
    m = macro(rows)
    return {
        "accuracy": accuracy(y_true, y_pred) if pairs else None,
        "macro_precision": m["precision"],
        "macro_recall": m["recall"],
        "macro_f1": m["f1"],
        "per_class": dict(zip(names, rows, strict=True)),
        "labels": names,
        "confusion_matrix": [row[:k] for row in matrix[:k]],
        "unlabelled_predictions": sum(row[k] for row in matrix[:k]),
    }
