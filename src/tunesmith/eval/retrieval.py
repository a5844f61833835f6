"""Retrieval metrics on a held-out query -> passage set: recall@k, MRR@10, nDCG@10.

For each query with relevant passage set ``R`` (binary relevance) and the corpus ranked by
score, with ``rank(d)`` the 1-based position of passage ``d``:

* recall@k = |R ∩ top_k| / |R|
* MRR@10   = 1 / min_{d in R} rank(d) when that rank is <= 10, else 0
* nDCG@10  = DCG@10 / IDCG@10, DCG@10 = sum_{d in R, rank(d) <= 10} 1 / log2(rank(d) + 1),
  IDCG@10 the same for the ideal ranking (all of R first)

each averaged over the queries (Manning, Raghavan and Schütze 2008, ch. 8; the BEIR
benchmark's definitions, Thakur et al. 2021). Ties in score are broken by corpus order.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch

KS = (1, 5, 10)


def ranks_of_relevant(scores: torch.Tensor, relevant: Sequence[set[int]]) -> list[list[int]]:
    """1-based ranks of each query's relevant passages. ``scores`` [Q, C]."""
    order = torch.sort(scores.float(), dim=1, descending=True, stable=True).indices  # [Q, C]
    position = torch.empty_like(order)
    position.scatter_(1, order, torch.arange(scores.shape[1]).expand_as(order).contiguous())
    return [sorted(int(position[q, d]) + 1 for d in rel) for q, rel in enumerate(relevant)]


def retrieval_metrics(scores: torch.Tensor, relevant: Sequence[set[int]]) -> dict[str, float]:
    """recall@1/5/10, mrr@10 and ndcg@10 averaged over queries (see the module docstring).

    ``scores`` [Q, C]: query q's score of corpus passage c; ``relevant[q]``: the corpus indices
    relevant to query q (non-empty)."""
    if scores.shape[0] != len(relevant):
        raise ValueError(f"{scores.shape[0]} score rows for {len(relevant)} queries")
    if any(not rel for rel in relevant):
        raise ValueError("every query needs at least one relevant passage")
    ranks = ranks_of_relevant(scores, relevant)
    out: dict[str, float] = {}
    for k in KS:
        out[f"recall@{k}"] = _mean([sum(r <= k for r in rs) / len(rs) for rs in ranks])
    out["mrr@10"] = _mean([1.0 / rs[0] if rs[0] <= 10 else 0.0 for rs in ranks])
    out["ndcg@10"] = _mean([_ndcg10(rs) for rs in ranks])
    out["queries"] = float(len(relevant))
    out["corpus"] = float(scores.shape[1])
    return out


def _ndcg10(ranks: list[int]) -> float:
    dcg = sum(1.0 / math.log2(r + 1) for r in ranks if r <= 10)
    ideal = sum(1.0 / math.log2(i + 2) for i in range(min(len(ranks), 10)))
    return dcg / ideal


def _mean(values: list[float]) -> float:
    return sum(values) / len(values) if values else 0.0
