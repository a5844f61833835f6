"""Optimizer and learning-rate schedule."""

from __future__ import annotations

import math
from typing import Any

import torch
from torch.distributed.tensor import DTensor
from transformers import get_scheduler

from tunesmith.config import OptimSection


def build_optimizer(model: torch.nn.Module, cfg: OptimSection) -> torch.optim.AdamW:
    """AdamW (Loshchilov & Hutter 2019) over trainable parameters.

    Weight decay applies to matrices only; biases and norm scales (1-D tensors) are not decayed.
    """
    decay, no_decay = [], []
    for p in model.parameters():
        if p.requires_grad:
            (decay if p.ndim >= 2 else no_decay).append(p)
    groups = [
        {"params": decay, "weight_decay": cfg.weight_decay},
        {"params": no_decay, "weight_decay": 0.0},
    ]
    params = decay + no_decay
    return torch.optim.AdamW(
        [g for g in groups if g["params"]],
        lr=cfg.lr,
        betas=cfg.betas,
        eps=cfg.eps,
        **kernel_options(cfg.implementation, params),
    )


def kernel_options(implementation: str, params: list[torch.Tensor]) -> dict[str, bool]:
    """AdamW's ``fused``/``foreach`` flags for ``optim.implementation``.

    ``auto`` takes the fused kernel (CPU and CUDA in torch >= 2.4) unless a parameter is a
    DTensor (FSDP2 shards), a dtype the fused kernel lacks, or on a device it does not cover.
    """
    if implementation == "auto":
        fusable = all(
            not isinstance(p, DTensor)
            and p.dtype in (torch.float32, torch.bfloat16, torch.float16)
            and p.device.type in ("cpu", "cuda")
            for p in params
        )
        implementation = "fused" if fusable else "foreach"
    return {
        "fused": {"fused": True, "foreach": False},
        "foreach": {"foreach": True},
        "for-loop": {"foreach": False},
    }[implementation]


def warmup_steps(cfg: OptimSection, total_steps: int) -> int:
    return cfg.warmup_steps or round(cfg.warmup_ratio * total_steps)


def build_scheduler(optimizer: torch.optim.Optimizer, cfg: OptimSection, total_steps: int) -> Any:
    """Linear warmup, then cosine or linear decay to zero (or constant)."""
    name = {"cosine": "cosine", "linear": "linear", "constant": "constant_with_warmup"}
    return get_scheduler(
        name[cfg.schedule],
        optimizer,
        num_warmup_steps=warmup_steps(cfg, total_steps),
        num_training_steps=total_steps,
    )


def optimizer_step(
    params: list[torch.nn.Parameter],
    optimizer: torch.optim.Optimizer,
    scheduler: Any,
    max_grad_norm: float | None,
) -> dict[str, float]:
    """The tail of every optimizer step: clip the global gradient norm to ``max_grad_norm`` (None:
    no clipping), step, schedule, zero. Returns the pre-clip norm and the step's learning rate."""
    norm = torch.nn.utils.clip_grad_norm_(params, max_grad_norm or math.inf)
    grad_norm = float(norm.full_tensor() if hasattr(norm, "full_tensor") else norm)
    lr = scheduler.get_last_lr()[0]
    optimizer.step()
    scheduler.step()
    optimizer.zero_grad(set_to_none=True)
    return {"grad_norm": grad_norm, "lr": lr}
