"""The trainable model every adapter-based method starts from, and the step bookkeeping they share.

``build_trainable_model`` loads the base model (quantized when ``model.quantization`` asks, with
gradient checkpointing when ``train.gradient_checkpointing`` asks) and wraps it with the adapter
``adapter.type`` selects, or, for full fine-tuning, freezes all but ``train.trainable_top_layers``.
Packed rows attend per example without a T x T mask (:func:`packed_segments`). Weights that
train are fp32 under ``model.dtype: auto`` on every device; a frozen base under an
adapter is stored in bf16 where bf16 is native (:func:`tunesmith.engine.precision.weight_dtype`).
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

import torch

from tunesmith.compress.qat import prepare_qat
from tunesmith.config import AdapterRunConfig, TrainSection
from tunesmith.engine import segment_attention
from tunesmith.engine.precision import resolve_precision, weight_dtype
from tunesmith.models.adapters import attach_adapter, freeze_all_but_top
from tunesmith.models.load import enable_activation_checkpointing, load_causal_lm
from tunesmith.models.quantization import prepare_quantized


def build_trainable_model(cfg: AdapterRunConfig, model_path: Path, device: torch.device) -> Any:
    """The base model with its adapter (or its trainable top layers), in train mode."""
    torch.manual_seed(cfg.train.seed)  # LoRA's A matrices are drawn here
    precision = resolve_precision(cfg.train.precision, device)
    base_trains = cfg.adapter.type == "full"
    model = load_causal_lm(
        model_path,
        dtype=weight_dtype(cfg.model.dtype, device, base_trains=base_trains, precision=precision),
        device=device,
        attn_implementation=cfg.model.attn_implementation,
        quantization=cfg.model.quantization,
        trust_pickle=cfg.model.trust_pickle,
    )
    if packed_segments(cfg):
        model.set_attn_implementation(segment_attention.register())
    if cfg.model.quantization != "none":
        model = prepare_quantized(model, cfg.train.gradient_checkpointing)
    elif cfg.train.gradient_checkpointing:
        enable_activation_checkpointing(model)
    if cfg.adapter.type != "full":
        model = attach_adapter(model, cfg, str(model_path))
    elif cfg.train.trainable_top_layers is not None:
        freeze_all_but_top(model, cfg.train.trainable_top_layers)
    model = prepare_qat(model, getattr(cfg.train, "qat", None))  # train.qat (SFT): fake quant
    model.train()
    return model


def packed_segments(cfg: AdapterRunConfig) -> bool:
    """Packed rows attend per example (:mod:`tunesmith.engine.segment_attention`, no T x T mask)
    when the model runs SDPA and the layers are not compiled (the per-example split depends on
    the data, so a compiled layer would break its graph at every row)."""
    packing = bool(getattr(cfg.data, "packing", False))
    return packing and cfg.model.attn_implementation == "sdpa" and not cfg.train.compile


def total_steps(train: TrainSection, n_items: int, world: int = 1) -> int:
    """``train.max_steps``, or ``ceil(epochs * n_items / (micro_batch * grad_accum * world))``."""
    if train.max_steps is not None:
        return train.max_steps
    per_step = train.micro_batch_size * train.grad_accum * world
    return max(1, math.ceil(train.epochs * n_items / per_step))


def due(step: int, every: int | float | None, last: int) -> bool:
    """Whether a periodic action (evaluate, save) runs after ``step``: every ``every`` steps and
    after the last one; never when ``every`` is None. A float ``every`` (0 < every < 1) is a
    fraction of the run: every ``max(1, floor(every * last))`` steps, so 0.2 runs at least 5 times.
    """
    if every is None:
        return False
    if isinstance(every, float):
        every = max(1, math.floor(every * last))
    return step % every == 0 or step == last
