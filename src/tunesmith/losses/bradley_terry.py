"""Reward-model loss: the Bradley-Terry pairwise objective.

A reward model r maps (prompt, completion) to a scalar. Under the Bradley-Terry model
(Bradley & Terry 1952) the probability that the chosen completion c beats the rejected one r is
sigmoid(r_c - r_r); training maximises its log-likelihood (Ouyang et al. 2022, "Training language
models to follow instructions with human feedback", eq. 1). Llama 2 (Touvron et al. 2023,
sec. 3.2.2) subtracts a margin m from the difference, asking the chosen reward to exceed the
rejected one by at least about m before the loss flattens:

    L = - mean_i log sigmoid(r_c[i] - r_r[i] - m[i])
"""

from __future__ import annotations

import torch
import torch.nn.functional as F


def bradley_terry_loss(
    chosen: torch.Tensor, rejected: torch.Tensor, margin: torch.Tensor | float = 0.0
) -> torch.Tensor:
    """Mean pairwise loss ``-log sigmoid(r_c - r_r - m)``.

    Args:
        chosen: [N] rewards of the preferred completions.
        rejected: [N] rewards of the other completions of the same prompts.
        margin: a float or [N] per-pair margins m (0 = the plain Bradley-Terry loss).

    Returns:
        A scalar tensor (computed in float32 with ``logsigmoid``, stable for large differences).
    """
    diff = chosen.float() - rejected.float() - margin
    return -F.logsigmoid(diff).mean()


def pairwise_accuracy(chosen: torch.Tensor, rejected: torch.Tensor) -> float:
    """Share of pairs where the chosen reward is strictly higher (ties count as wrong).

    Args: chosen, rejected: [N] rewards. Returns a float in [0, 1] (0 for N = 0).
    """
    if chosen.numel() == 0:
        return 0.0
    return float((chosen > rejected).float().mean())
