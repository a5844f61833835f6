"""Held-out loss and perplexity.

    loss = (1 / N) * sum over trained tokens of -log p(token | prefix),    ppl = exp(loss)

where N counts every trained token of the split (a token-weighted mean, not a mean of per-example
means).
"""

from __future__ import annotations

import math
from typing import Any

import torch

from tunesmith.data.dataset import collate
from tunesmith.data.templates import Encoded
from tunesmith.engine.forward import forward_loss
from tunesmith.engine.precision import autocast


@torch.no_grad()
def evaluate_loss(
    model: Any,
    encoded: list[Encoded],
    pad_id: int,
    device: torch.device,
    precision: str = "fp32",
    batch_size: int = 8,
    loss_module: Any = None,
) -> dict[str, float]:
    """Token-weighted mean loss and perplexity of ``model`` over ``encoded`` examples.

    ``loss_module`` (``batch -> (loss sum, tokens)``), when given, runs the forward instead: the
    training wrapper, which FSDP needs to gather sharded weights."""
    was_training = model.training
    model.eval()
    total, count = 0.0, 0
    # Sorting by length keeps padding small; the result does not depend on the order.
    ordered = sorted(encoded, key=lambda e: len(e.input_ids))
    for start in range(0, len(ordered), batch_size):
        batch = collate(ordered[start : start + batch_size], pad_id)
        batch = {k: v.to(device) for k, v in batch.items()}
        with autocast(precision, device):
            loss_sum, n = loss_module(batch) if loss_module else forward_loss(model, batch)
        total += loss_sum.item()
        count += int(n)
    model.train(was_training)
    loss = total / max(count, 1)
    return {"loss": loss, "perplexity": math.exp(min(loss, 50.0)), "tokens": float(count)}


def evaluate_split(
    model: Any,
    split: Any,
    pad_id: int,
    device: torch.device,
    precision: str = "fp32",
    batch_size: int = 8,
    loss_module: Any = None,
) -> dict[str, Any]:
    """Loss and perplexity over a whole split, and the loss of each task tag on its own.

    ``split`` has parallel ``examples`` (carrying ``meta['tag']``) and ``encoded`` lists. The
    overall loss is token-weighted across tags, so it equals :func:`evaluate_loss` on the whole.
    """
    groups: dict[str, list[Encoded]] = {}
    for ex, enc in zip(split.examples, split.encoded, strict=True):
        groups.setdefault(str(ex.meta.get("tag", "")), []).append(enc)
    per = {
        tag: evaluate_loss(model, encs, pad_id, device, precision, batch_size, loss_module)
        for tag, encs in sorted(groups.items())
    }
    tokens = sum(r["tokens"] for r in per.values())
    loss = sum(r["loss"] * r["tokens"] for r in per.values()) / max(tokens, 1.0)
    return {
        "loss": loss,
        "perplexity": math.exp(min(loss, 50.0)),
        "tokens": tokens,
        "by_tag": {tag: r["loss"] for tag, r in per.items()},
    }
