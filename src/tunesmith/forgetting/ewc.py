"""EWC and L2 toward the start, applied during training (the math is in
:mod:`tunesmith.losses.anchor`).

How the penalty is scaled: the step's objective is

    J(theta) = (1/N) * sum_t l_t(theta)  +  Omega(theta)

where the first term is the token-mean LM loss of the whole optimizer step (N trained tokens over
every micro-batch and rank, as in ``train_step``) and ``Omega`` is added once per optimizer step,
independent of grad_accum, micro-batch size and world size. Its gradient
``2 lambda F (theta - theta*)`` is added to ``.grad`` after the data backward (after DDP's
all-reduce / FSDP's reduce-scatter: parameters are identical across ranks, so every rank adds the
same term) and before gradient clipping. Only parameters with ``requires_grad`` are anchored, so
LoRA anchors its adapter weights and full fine-tuning the whole model.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import torch

from tunesmith.data.dataset import collate
from tunesmith.data.templates import Encoded
from tunesmith.losses.anchor import anchor_penalty, anchor_penalty_grad, diagonal_fisher


def _local(t: torch.Tensor) -> torch.Tensor:
    """The rank's own shard of an FSDP (DTensor) tensor; the tensor itself otherwise."""
    return t.to_local() if hasattr(t, "to_local") else t


def trainable(model: Any) -> list[torch.nn.Parameter]:
    return [p for p in model.parameters() if p.requires_grad]


def estimate_fisher(
    params: list[torch.nn.Parameter],
    loss_fn: Callable[[dict[str, torch.Tensor]], tuple[torch.Tensor, torch.Tensor]],
    chunks: list[Encoded],
    pad_id: int,
    device: torch.device,
    n_batches: int,
    batch_size: int,
) -> list[torch.Tensor]:
    """Diagonal Fisher ``F_i = (1/B) sum_b (d L_b / d theta_i)^2`` over ``n_batches`` batches of
    ``batch_size`` text chunks (cycled when there are fewer), ``L_b`` = the batch's token-mean
    LM loss. ``loss_fn(batch) -> (summed loss, tokens)`` (the training step's module, so DDP /
    FSDP gradients are reduced the same way as in training). Leaves ``.grad`` cleared."""
    grads: list[list[torch.Tensor]] = []
    for b in range(n_batches):
        picked = [chunks[(b * batch_size + j) % len(chunks)] for j in range(batch_size)]
        batch = {k: v.to(device) for k, v in collate(picked, pad_id).items()}
        for p in params:
            p.grad = None
        loss_sum, n = loss_fn(batch)
        (loss_sum / n.clamp(min=1)).backward()
        grads.append(
            [p.grad.detach().clone() if p.grad is not None else torch.zeros_like(p) for p in params]
        )
    for p in params:
        p.grad = None
    return diagonal_fisher(grads)


@dataclass
class Regularizer:
    """The anchored penalty for one run: parameters, their starting values theta*, the Fisher
    (None for L2) and lambda."""

    params: list[torch.nn.Parameter]
    anchors: list[torch.Tensor]
    fisher: list[torch.Tensor] | None
    strength: float
    sharded: bool = False  # FSDP: each rank holds a shard; the value is summed across ranks

    @classmethod
    def start(
        cls, model: Any, strength: float, fisher: list[torch.Tensor] | None, sharded: bool
    ) -> Regularizer:
        params = trainable(model)
        anchors = [p.detach().clone() for p in params]
        return cls(params, anchors, fisher, strength, sharded)

    def add_grad(self) -> float:
        """Add ``d Omega / d theta`` to every anchored ``.grad``; return this rank's share of
        ``Omega`` (the whole of it unless sharded)."""
        with torch.no_grad():
            grads = anchor_penalty_grad(self.params, self.anchors, self.strength, self.fisher)
            for p, g in zip(self.params, grads, strict=True):
                p.grad = g if p.grad is None else p.grad + g
            fisher = [_local(f) for f in self.fisher] if self.fisher is not None else None
            value = anchor_penalty(
                [_local(p) for p in self.params],
                [_local(a) for a in self.anchors],
                self.strength,
                fisher,
            )
        return float(value)
