"""Depth pruning: drop the decoder blocks that change the hidden state least (ShortGPT).

Each block ``l`` is scored by the angular distance between its input and output hidden states,
averaged over every (non-padding) calibration token (Men et al. 2024, "ShortGPT: Layers in Large
Language Models are More Redundant Than You Expect"; the angular form is Gromov et al. 2024,
"The Unreasonable Ineffectiveness of the Deeper Layers")::

    d_l = mean over tokens t of  arccos( <x_l[t], x_{l+1}[t]> / (|x_l[t]| |x_{l+1}[t]|) ) / pi

``x_l`` [B, T, H] is block ``l``'s input (the residual stream), ``x_{l+1}`` its output, both taken
before the final norm. ``d_l`` lies in [0, 1]; 0 means the block leaves every direction unchanged.
We use ShortGPT's per-block rule (drop the ``n`` lowest-scored blocks, not necessarily adjacent),
not Gromov's contiguous-run search: it needs one pass, and the report lists each block's score so
a user can see whether the dropped blocks form a run anyway.

The pruned model is a plain transformers checkpoint: the blocks are removed from the module list
and ``config.num_hidden_layers`` / ``config.layer_types`` follow, so it loads with
``AutoModelForCausalLM.from_pretrained`` and nothing of ours.
"""

from __future__ import annotations

import math
import shutil
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from torch import nn

from tunesmith.engine.checkpoint import atomic_dir, commit_dir
from tunesmith.errors import UserError


class PruneError(UserError):
    """The pruning request cannot be done (too many layers, unknown architecture)."""


@dataclass
class _Capture:
    """Per-block running sums of the angular distance over calibration tokens."""

    sums: list[float]
    count: int = 0
    mask: torch.Tensor | None = None  # [B, T] of the batch in flight


def decoder_layers(model: Any) -> nn.ModuleList:
    """The decoder blocks of a causal LM (Llama, Gemma3, Qwen, Mistral: ``model.model.layers``)."""
    inner = getattr(model, "model", None)
    layers = getattr(inner, "layers", None)
    if not isinstance(layers, nn.ModuleList):
        raise PruneError(
            f"{type(model).__name__}: no decoder block list at model.layers; depth pruning "
            "supports Llama-style causal LMs (llama, gemma3, qwen2, mistral)"
        )
    return layers


def angular_distance(x_in: torch.Tensor, x_out: torch.Tensor) -> torch.Tensor:
    """``arccos(cos(x_in, x_out)) / pi`` per token: [B, T, H] x 2 -> [B, T], in [0, 1]."""
    cos = nn.functional.cosine_similarity(x_in.float(), x_out.float(), dim=-1, eps=1e-8)
    return torch.arccos(cos.clamp(-1.0, 1.0)) / math.pi


def _hook(index: int, capture: _Capture) -> Any:
    def hook(_module: nn.Module, args: tuple, kwargs: dict, output: Any) -> None:
        x_in = args[0] if args else kwargs["hidden_states"]
        x_out = output[0] if isinstance(output, tuple) else output
        mask = capture.mask
        dist = angular_distance(x_in, x_out)  # [B, T]
        capture.sums[index] += float(dist[mask].sum()) if mask is not None else float(dist.sum())

    return hook


@torch.no_grad()
def layer_scores(model: Any, batches: list[dict[str, torch.Tensor]]) -> list[float]:
    """Block ``l``'s mean angular distance over every real token of ``batches``."""
    layers = decoder_layers(model)
    capture = _Capture(sums=[0.0] * len(layers))
    handles = [
        layer.register_forward_hook(_hook(i, capture), with_kwargs=True)
        for i, layer in enumerate(layers)
    ]
    try:
        model.eval()
        for batch in batches:
            capture.mask = batch["attention_mask"].bool()
            capture.count += int(capture.mask.sum())
            model(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"])
    finally:
        for handle in handles:
            handle.remove()
    return [s / max(capture.count, 1) for s in capture.sums]


def choose_layers(scores: list[float], drop: int) -> list[int]:
    """The ``drop`` lowest-scored blocks (ties: the later block first), ascending."""
    if not 0 < drop < len(scores):
        raise PruneError(
            f"--drop-layers {drop}: the model has {len(scores)} layers; drop between 1 and "
            f"{len(scores) - 1}"
        )
    order = sorted(range(len(scores)), key=lambda i: (scores[i], -i))
    return sorted(order[:drop])


def remove_layers(model: Any, drop: list[int]) -> Any:
    """``model`` with blocks ``drop`` removed and its config updated to match (in place)."""
    layers = decoder_layers(model)
    keep = [i for i in range(len(layers)) if i not in set(drop)]
    model.model.layers = nn.ModuleList(layers[i] for i in keep)
    config = model.config
    config.num_hidden_layers = len(keep)
    if getattr(config, "layer_types", None) is not None:
        config.layer_types = [config.layer_types[i] for i in keep]
    for new_index, layer in enumerate(model.model.layers):
        # The KV cache is indexed by layer_idx; a gap would misplace every later block's cache.
        for module in layer.modules():
            if hasattr(module, "layer_idx"):
                module.layer_idx = new_index
    return model


def checkpoint_bytes(path: Path) -> int:
    """Bytes of the weight files of a model directory."""
    return sum(f.stat().st_size for f in path.iterdir() if f.suffix in (".safetensors", ".bin"))


def param_count(model: Any) -> int:
    """Distinct parameters (tied embeddings counted once)."""
    return sum(p.numel() for p in model.parameters())


def save_atomic(model: Any, tokenizer: Any, out: Path) -> None:
    """Save ``model`` + tokenizer at ``out`` via a temp dir beside it, renamed into place."""
    tmp = atomic_dir(out)
    try:
        model.save_pretrained(tmp, safe_serialization=True)
        tokenizer.save_pretrained(tmp)
        commit_dir(tmp, out)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
