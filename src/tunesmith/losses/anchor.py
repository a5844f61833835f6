"""Penalties that pull the trained weights back toward where they started (anti-forgetting).

EWC (Kirkpatrick et al. 2017, "Overcoming catastrophic forgetting in neural networks")::

    Omega_EWC(theta) = lambda * sum_i F_i * (theta_i - theta*_i)^2

with ``theta*`` the starting weights and ``F`` a diagonal Fisher information estimated on general
data (:func:`diagonal_fisher`). L2-SP toward the start (Xuhong et al. 2018) is the same with
``F_i = 1``::

    Omega_L2(theta) = lambda * sum_i (theta_i - theta*_i)^2

The paper writes ``lambda / 2``; here ``lambda`` multiplies the sum as written above, so the
gradient is ``2 * lambda * F_i * (theta_i - theta*_i)``.

Every function takes matching lists of tensors (one entry per trainable parameter, any shapes)
and is pure: nothing is modified in place.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch


def anchor_penalty(
    params: Sequence[torch.Tensor],
    anchors: Sequence[torch.Tensor],
    strength: float,
    fisher: Sequence[torch.Tensor] | None = None,
) -> torch.Tensor:
    """``lambda * sum_i F_i (theta_i - theta*_i)^2`` (EWC), or with ``F = 1`` when ``fisher`` is
    None (L2 toward the start). A 0-d float32 tensor; differentiable in ``params``.

    Shapes: ``params[k]``, ``anchors[k]`` and ``fisher[k]`` all share parameter k's shape.
    """
    total = torch.zeros((), dtype=torch.float32, device=_device(params))
    for k, (theta, start) in enumerate(zip(params, anchors, strict=True)):
        sq = (theta.float() - start.float()) ** 2
        if fisher is not None:
            sq = sq * fisher[k].float()
        total = total + sq.sum()
    return total * strength


def anchor_penalty_grad(
    params: Sequence[torch.Tensor],
    anchors: Sequence[torch.Tensor],
    strength: float,
    fisher: Sequence[torch.Tensor] | None = None,
) -> list[torch.Tensor]:
    """d Omega / d theta_i = ``2 * lambda * F_i * (theta_i - theta*_i)`` for each parameter, in
    each parameter's dtype and shape (the closed form of :func:`anchor_penalty`'s gradient, so
    it can be added to ``.grad`` after the data backward without a second autograd pass)."""
    grads = []
    for k, (theta, start) in enumerate(zip(params, anchors, strict=True)):
        g = 2.0 * strength * (theta.detach().float() - start.float())
        if fisher is not None:
            g = g * fisher[k].float()
        grads.append(g.to(theta.dtype))
    return grads


def diagonal_fisher(batch_grads: Sequence[Sequence[torch.Tensor]]) -> list[torch.Tensor]:
    """Empirical diagonal Fisher: ``F_i = (1/B) sum_b (d L_b / d theta_i)^2``.

    ``batch_grads[b][k]`` is the gradient of batch b's token-mean LM loss ``L_b`` with respect
    to parameter k; B = ``len(batch_grads)`` >= 1. Returns one float32 tensor per parameter.
    """
    if not batch_grads:
        raise ValueError("diagonal_fisher needs at least one batch of gradients")
    n = len(batch_grads)
    fisher = [torch.zeros_like(g, dtype=torch.float32) for g in batch_grads[0]]
    for grads in batch_grads:
        for k, g in enumerate(grads):
            fisher[k] = fisher[k] + g.float() ** 2
    return [f / n for f in fisher]


def _device(params: Sequence[torch.Tensor]) -> torch.device:
    return params[0].device if params else torch.device("cpu")
