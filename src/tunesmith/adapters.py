"""Choosing what trains: LoRA adapters (peft), full fine-tuning, or only the top N layers."""

from __future__ import annotations

import re
from typing import Any

import torch

from tunesmith.config import LoraSection

LORA_PRESETS: dict[str, str | list[str]] = {
    "attention": ["q_proj", "v_proj"],
    "all-linear": "all-linear",  # peft's own preset: every nn.Linear but the output head
}


def lora_targets(spec: str | list[str]) -> str | list[str]:
    if isinstance(spec, str):
        return LORA_PRESETS.get(spec, [spec])
    return list(spec)


def attach_lora(model: Any, cfg: LoraSection) -> Any:
    """Wrap ``model`` with LoRA adapters; the base weights are frozen by peft.

    LoRA (Hu et al. 2021): W x + (alpha / r) * B A x with A [r, d_in] random, B [d_out, r] zero,
    so training starts exactly at the base model.
    """
    from peft import LoraConfig, get_peft_model

    config = LoraConfig(
        r=cfg.r,
        lora_alpha=cfg.alpha,
        lora_dropout=cfg.dropout,
        target_modules=lora_targets(cfg.target_modules),
        task_type="CAUSAL_LM",
    )
    return get_peft_model(model, config)


def _decoder_layer_count(model: Any) -> int:
    n = getattr(model.config, "num_hidden_layers", None)
    if n is None:
        raise ValueError("train.trainable_top_layers: the model config has no num_hidden_layers")
    return int(n)


def freeze_all_but_top(model: Any, top: int) -> None:
    """Train only the top ``top`` decoder layers and the final norm (transfer-learning style)."""
    n_layers = _decoder_layer_count(model)
    if top > n_layers:
        raise ValueError(f"train.trainable_top_layers={top} but the model has {n_layers} layers")
    layer_re = re.compile(r"\.(?:layers|h|layer|blocks)\.(\d+)\.")
    for name, p in model.named_parameters():
        m = layer_re.search(name)
        if m:
            p.requires_grad = int(m.group(1)) >= n_layers - top
        else:
            p.requires_grad = bool(re.search(r"(?:^|\.)(?:norm|ln_f|final_layernorm)\.", name))


def parameter_counts(model: torch.nn.Module) -> tuple[int, int]:
    """(trainable, total) parameter counts, tied weights counted once."""
    seen: set[int] = set()
    trainable = total = 0
    for p in model.parameters():
        if id(p) in seen:
            continue
        seen.add(id(p))
        total += p.numel()
        trainable += p.numel() if p.requires_grad else 0
    return trainable, total
