"""The model call shared by training and evaluation, for padded and packed batches."""

from __future__ import annotations

from typing import Any

import torch

from tunesmith.data.packing import block_causal_mask


def forward_logits(model: Any, batch: dict[str, torch.Tensor]) -> torch.Tensor:
    """Logits [B, T, V] for a collated batch.

    Padded batches carry a 2-D ``attention_mask``; packed batches carry ``position_ids`` that
    restart at every example and a 4-D block-diagonal boolean mask. Flash-attention kernels take
    no 4-D mask: they find the example boundaries from the restarting ``position_ids``
    (variable-length attention), so the mask is left out for them. Models mixing full and
    sliding-window layers get one mask per layer type.
    """
    kwargs: dict[str, Any] = {
        "input_ids": batch["input_ids"],
        "attention_mask": batch["attention_mask"],
    }
    if "position_ids" in batch:
        kwargs["position_ids"] = batch["position_ids"]
        config = getattr(model, "config", None)
        if "flash" in str(getattr(config, "_attn_implementation", "")):
            kwargs.pop("attention_mask")
        elif "sliding_attention" in (getattr(config, "layer_types", None) or ()):
            # Hybrid models (Gemma 3, ...) take one mask per layer type; the sliding layers must
            # keep their window inside each packed example.
            window = getattr(config, "sliding_window", None)
            kwargs["attention_mask"] = {
                "full_attention": batch["attention_mask"],
                "sliding_attention": block_causal_mask(batch["seq_ids"], window),
            }
    return model(**kwargs).logits
