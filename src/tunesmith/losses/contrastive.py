"""Contrastive retrieval loss: multiple-negatives ranking (InfoNCE) with in-batch negatives.

For B queries ``q`` [B, D], their positive passages ``p`` [B, D] and M optional hard-negative
passages ``n`` [M, D] (any rows' negatives; M may be 0), every vector L2-normalised, the
candidates of every query are all B positives and all M negatives, ``c = [p; n]`` [B+M, D]:

    s_ij = cos(q_i, c_j) / tau                                    # [B, B+M]
    L    = -(1/B) sum_i log( exp(s_ii) / sum_j exp(s_ij) )
         = (1/B) sum_i ( logsumexp_j s_ij - s_ii )

query i's own positive is the target and every other query's positive is an in-batch negative
(van den Oord et al. 2018, "Representation Learning with Contrastive Predictive Coding",
InfoNCE; Henderson et al. 2017, "Efficient Natural Language Response Suggestion for Smart
Reply", sec. 4.4, the multiple-negatives ranking loss; hard negatives appended as extra
columns as in Karpukhin et al. 2020, DPR). ``tau`` = 0.05 is sentence-transformers'
``MultipleNegativesRankingLoss`` default (``scale = 1 / tau = 20``); with the same embeddings and
``scale = 1 / tau`` the two give the same value (tests/unit/test_contrastive_loss.py).

Computed in float32 whatever the embeddings' dtype. Duplicate positives in a batch (two queries
of the same passage) are not masked: as in the reference, the duplicate column counts as a
negative.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F


def similarity_logits(
    queries: torch.Tensor, candidates: torch.Tensor, temperature: float
) -> torch.Tensor:
    """Cosine similarity over ``temperature``: ``queries`` [B, D], ``candidates`` [C, D] ->
    [B, C] float32."""
    q = F.normalize(queries.float(), dim=-1)
    c = F.normalize(candidates.float(), dim=-1)
    return q @ c.T / temperature


def multiple_negatives_ranking_loss(
    queries: torch.Tensor,
    positives: torch.Tensor,
    negatives: torch.Tensor | None = None,
    temperature: float = 0.05,
) -> tuple[torch.Tensor, dict[str, float]]:
    """InfoNCE over in-batch (and hard) negatives; see the module docstring for the math.

    ``queries`` [B, D], ``positives`` [B, D] (row i is query i's passage), ``negatives``
    [M, D] or None. Returns the mean loss (scalar) and metrics: ``in_batch_accuracy`` (share of
    queries whose own positive scores highest among the B+M candidates) and ``positive_margin``
    (mean s_ii minus the best other candidate's score, in cosine units).
    """
    if queries.shape != positives.shape:
        raise ValueError(f"queries {tuple(queries.shape)} vs positives {tuple(positives.shape)}")
    candidates = positives if negatives is None else torch.cat([positives, negatives], dim=0)
    logits = similarity_logits(queries, candidates, temperature)  # [B, B+M]
    target = torch.arange(len(queries), device=logits.device)
    loss = F.cross_entropy(logits, target, reduction="mean")
    with torch.no_grad():
        own = logits.gather(1, target[:, None]).squeeze(1)  # [B]
        others = logits.scatter(1, target[:, None], float("-inf"))
        best_other = others.max(dim=1).values if logits.shape[1] > 1 else own
        accuracy = float((logits.argmax(dim=1) == target).float().mean())
        margin = float(((own - best_other) * temperature).mean())
    return loss, {"in_batch_accuracy": accuracy, "positive_margin": margin}
