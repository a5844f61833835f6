"""Supervised fine-tuning loss: summed next-token cross-entropy over trained tokens.

For a batch of token ids ``x`` [B, T] with labels ``y`` [B, T] (``-100`` where not trained), the
model gives logits ``z`` [B, T, V]. Position ``t`` predicts token ``t+1``:

    L_sum = - sum_{b, t : y[b, t+1] != -100} log softmax(z[b, t])[y[b, t+1]]
    N     = #{(b, t) : y[b, t+1] != -100}

The function returns the *sum* and the count, not the mean: gradient accumulation divides the sum
of every micro-batch by the trained-token count of the whole optimizer step, so splitting a batch
into micro-batches does not change the update (a mean per micro-batch would weight a short
micro-batch's tokens more). This is the standard maximum-likelihood objective of instruction
tuning (Ouyang et al. 2022, "Training language models to follow instructions", sec. 3.5; Wei et
al. 2022, FLAN).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

IGNORE_INDEX = -100


def token_cross_entropy(
    logits: torch.Tensor, labels: torch.Tensor, chunk_size: int = 1024
) -> tuple[torch.Tensor, torch.Tensor]:
    """Summed next-token cross-entropy and the number of trained tokens.

    Args:
        logits: [B, T, V] model outputs (any float dtype; computed in float32).
        labels: [B, T] target ids, ``IGNORE_INDEX`` where no loss is wanted.
        chunk_size: rows of the flattened [B*(T-1), V] logits upcast at a time, bounding the
            float32 copy of the logits (V is 49k for SmolLM2).

    Returns:
        (loss_sum, n_tokens): a scalar tensor with grad, and a scalar int64 tensor.
    """
    shift_logits = logits[:, :-1, :].reshape(-1, logits.size(-1))  # [B*(T-1), V]
    shift_labels = labels[:, 1:].reshape(-1)  # [B*(T-1)]
    keep = shift_labels != IGNORE_INDEX
    rows = shift_logits[keep]  # [N, V]
    targets = shift_labels[keep]  # [N]
    # Starts from a zero that is part of the graph, so a batch with no trained token still
    # backpropagates (a zero gradient) instead of failing.
    total = logits[:1, :1, :1].sum().float() * 0.0
    for start in range(0, rows.size(0), chunk_size):
        part = rows[start : start + chunk_size].float()
        total = total + F.cross_entropy(part, targets[start : start + chunk_size], reduction="sum")
    return total, keep.sum()
