"""Sequence-classification loss: mean cross-entropy over the examples of a batch.

For logits ``z`` [B, K] and integer labels ``y`` [B] in ``0..K-1``:

    L = -(1/B) sum_b log softmax(z_b)[y_b]
      = (1/B) sum_b ( logsumexp(z_b) - z_b[y_b] )

the standard objective for fine-tuning a classifier on a pretrained encoder (Devlin et al.
2019, BERT, sec. 4.1). Computed in float32 whatever the logits' dtype.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F


def classification_loss(logits: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    """Mean cross-entropy. ``logits`` [B, K] (any float dtype), ``labels`` [B] int64 -> scalar."""
    return F.cross_entropy(logits.float(), labels, reduction="mean")
