"""The token-level language-modelling step: SFT's update, and the step pre-flight times.

``lm_step`` takes ``grad_accum`` micro-batches; each micro-batch's summed token loss is divided
by the trained-token count N of the whole step (over every rank), so the gradient is that of

    L = (1 / N) * sum_{step tokens t} -log p(y_t | y_<t)

however the step is split into micro-batches and processes.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import torch

from tunesmith.engine.compile import compile_layers
from tunesmith.engine.distributed import DistInfo, all_reduce_sum, grad_sync, wrap_for_training
from tunesmith.engine.forward import forward_loss
from tunesmith.engine.optim import optimizer_step
from tunesmith.engine.precision import autocast
from tunesmith.losses.sft import IGNORE_INDEX


class LossModule(torch.nn.Module):
    """``batch -> (summed loss, trained tokens)`` as a module, so that DDP sees the forward."""

    def __init__(self, model: Any):
        super().__init__()
        self.model = model

    def forward(self, batch: dict[str, torch.Tensor]) -> tuple[torch.Tensor, torch.Tensor]:
        return forward_loss(self.model, batch)


def build_step_module(
    model: Any,
    info: DistInfo,
    device: torch.device,
    parallel: str = "ddp",
    compile: bool | str = False,
) -> Any:
    """The loss module as the step runs it: alone, DDP-replicated or FSDP2-sharded."""
    if compile:
        compile_layers(model, compile)
    return wrap_for_training(LossModule(model), model, info, device, parallel)


def real_tokens(batch: dict[str, torch.Tensor]) -> int:
    """Non-padding positions of a padded or packed batch."""
    if "seq_ids" in batch:
        return int((batch["seq_ids"] >= 0).sum())
    return int(batch["attention_mask"].sum())


def lm_step(
    step_module: Any,
    model: Any,
    micro_batches: list[dict[str, torch.Tensor]],
    optimizer: torch.optim.Optimizer,
    scheduler: Any,
    max_grad_norm: float | None,
    info: DistInfo,
    device: torch.device,
    precision: str,
    regularize: Callable[[], float | None] | None = None,
) -> dict[str, float]:
    """One optimizer step over ``grad_accum`` micro-batches (this rank's share of each).

    ``regularize()``, when given, adds a penalty's gradient (EWC / L2, once per step, not per
    token) before clipping and returns its value; the logged ``loss`` stays the data loss.
    """
    n_step = all_reduce_sum(
        sum(float((mb["labels"][:, 1:] != IGNORE_INDEX).sum()) for mb in micro_batches),
        info,
        device,
    )
    # DDP averages gradients over ranks; scaling by the world size makes the result the gradient
    # of (sum of every rank's token losses) / (every rank's trained tokens).
    scale = info.world / max(n_step, 1.0)
    total = 0.0
    for i, mb in enumerate(micro_batches):
        mb = {k: v.to(device) for k, v in mb.items()}
        with grad_sync(step_module, on=i == len(micro_batches) - 1):
            with autocast(precision, device):
                loss_sum, _ = step_module(mb)
            (loss_sum * scale).backward()
        total += loss_sum.item()
    penalty = regularize() if regularize is not None else None
    params = [p for p in model.parameters() if p.requires_grad]
    tail = optimizer_step(params, optimizer, scheduler, max_grad_norm)
    counts = {
        "loss_sum": total,
        "real_tokens": float(sum(real_tokens(mb) for mb in micro_batches)),
        "slots": float(sum(mb["input_ids"].numel() for mb in micro_batches)),
        "rows": float(sum(mb["input_ids"].size(0) for mb in micro_batches)),
    }
    counts = {k: all_reduce_sum(v, info, device) for k, v in counts.items()}
    extra = {"reg_penalty": penalty} if penalty is not None else {}
    return {
        "loss": counts.pop("loss_sum") / max(n_step, 1.0),
        **tail,
        "trained_tokens": n_step,
        **counts,
        **extra,
    }
