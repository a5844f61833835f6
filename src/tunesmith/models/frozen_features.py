"""Frozen-backbone features for classification: encode once, train the head (+ top layers) on them.

With ``classify.mode: head`` nothing below the head trains, so the input of the head is the same
for an example at every step. :func:`head_features` runs the backbone once over every example (eval
mode, no grad) and keeps, per example, the vector the head reads:

* an encoder whose head is one module reading ``[B, H]`` (BERT / MiniLM: ``classifier`` on the
  pooled [CLS] output): that input, captured by a forward pre-hook;
* a decoder (``score`` applied per position, pooled by transformers at the last token that is
  not ``pad_token_id``): the hidden state at that token, since a linear head commutes with the
  pooling: ``score(h)[last] = score(h[last])``.

:func:`cached_head_features` keeps them in memory or on disk, in a safetensors file named by a
content hash of the token ids, the labels, ``data.max_length`` and the model (its config and the
size, modification time and first MiB of each weight file), so a rerun on the same data and
model reads them back. :func:`supports_feature_cache` says whether a model's head is one of the
two shapes above (other heads fall back to the uncached path). Mode ``top_k`` caches the states
below the first trained layer instead (:mod:`tunesmith.models.frozen_layers`), through the same
:func:`cached_tensors`; :func:`feature_plan` says, per mode, what is cached and which module
trains on it.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from tunesmith.models.frozen_layers import (
    LayerFeatures,
    lower_states,
    matches_model,
    upper_stack,
)

Encoded = Sequence[tuple[list[int], int]]


def _head(model: Any) -> torch.nn.Module | None:
    """The single trainable top-level module the head is, or None."""
    prefix = model.base_model_prefix
    heads = [
        child
        for name, child in model.named_children()
        if name != prefix and any(True for _ in child.parameters())
    ]
    return heads[0] if len(heads) == 1 else None


def supports_feature_cache(model: Any, is_decoder: bool) -> bool:
    """Whether the head is one linear-on-a-vector module (encoder) or a per-position linear
    ``score`` (decoder), the two shapes :func:`head_features` reproduces exactly."""
    head = _head(model)
    if head is None:
        return False
    if is_decoder:
        return isinstance(head, torch.nn.Linear)
    return isinstance(head, torch.nn.Linear) or _single_linear(head)


def _single_linear(module: torch.nn.Module) -> bool:
    return sum(isinstance(m, torch.nn.Linear) for m in module.modules()) == 1 and not any(
        True for _ in module.children()
    )


@torch.no_grad()
def head_features(
    model: Any,
    encoded: Encoded,
    pad_id: int,
    batch_size: int,
    is_decoder: bool,
    collate: Any,
) -> torch.Tensor:
    """``[N, H]`` float32 (on CPU): the head's input for every example, in order."""
    head = _head(model)
    assert head is not None
    device = next(model.parameters()).device
    captured: list[torch.Tensor] = []

    def grab(_: Any, args: tuple[torch.Tensor, ...]) -> None:
        captured.append(args[0].detach())

    was_training = model.training
    model.eval()
    handle = head.register_forward_pre_hook(grab)
    out: list[torch.Tensor] = []
    try:
        for start in range(0, len(encoded), batch_size):
            batch = {
                k: v.to(device)
                for k, v in collate(list(encoded[start : start + batch_size]), pad_id).items()
            }
            captured.clear()
            model(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"])
            feats = captured[0]
            if is_decoder:  # [B, T, H] -> the last non-pad token, as transformers pools
                ids = batch["input_ids"]
                positions = torch.arange(ids.shape[-1], device=ids.device)
                last = (positions * (ids != pad_id)).argmax(-1)
                feats = feats[torch.arange(len(ids), device=ids.device), last]
            out.append(feats.float().cpu())
    finally:
        handle.remove()
        model.train(was_training)
    return torch.cat(out) if out else torch.zeros(0)


class HeadStep(torch.nn.Module):
    """``batch -> logits [B, K]`` from cached features ``batch["features"]`` [B, H]: the head
    alone (``classify.cache_features``; :mod:`tunesmith.models.frozen_features`)."""

    def __init__(self, head: torch.nn.Module):
        super().__init__()
        self.head = head

    def forward(self, batch: dict[str, torch.Tensor]) -> torch.Tensor:
        return self.head(batch["features"])


Features = torch.Tensor | LayerFeatures  # head mode: [N, H]; top_k: per-example states


def feature_batch(features: Features, idx: Sequence[int]) -> dict[str, torch.Tensor]:
    """The step's input for the examples ``idx``: ``features`` [B, H] (head mode) or ``states``
    [B, T, H] + ``attention_mask`` [B, T] (top_k, :class:`~tunesmith.models.frozen_layers.
    LayerFeatures`)."""
    if isinstance(features, LayerFeatures):
        return features.batch(idx)
    return {"features": features[list(idx)]}


@torch.no_grad()
def predict_features(module: torch.nn.Module, features: Features, batch_size: int) -> list[int]:
    """Arg-max label id of each cached example (every rank runs all of them)."""
    device = next(module.parameters()).device
    was_training = module.training
    module.eval()
    out: list[int] = []
    for start in range(0, len(features), batch_size):
        idx = range(start, min(start + batch_size, len(features)))
        batch = {k: v.to(device) for k, v in feature_batch(features, idx).items()}
        out += module(batch).argmax(-1).tolist()
    module.train(was_training)
    return out


@dataclass
class FeaturePlan:
    """What a mode caches and how: ``compute(items)`` -> named tensors (stored as they are),
    ``unpack`` -> :data:`Features`, the ``step`` module that trains on them, a cache-key ``tag``
    and ``verify(items)``: whether the step reproduces the full model's logits on the first
    few of ``items`` (checked before the whole data set is encoded)."""

    step: torch.nn.Module
    compute: Callable[[Encoded], dict[str, torch.Tensor]]
    unpack: Callable[[dict[str, torch.Tensor]], Features]
    tag: str
    verify: Callable[[Encoded], bool]
    what: str  # for the log line


def feature_plan(
    model: Any, mode: str, top_k: int, is_decoder: bool, pad_id: int, size: int, collate: Any
) -> FeaturePlan | None:
    """The cache of ``classify.mode`` head (the head's input) or top_k (the states entering the
    first trained layer); None where the model's layout is not one reproduced exactly."""
    if mode == "head":
        head = _head(model)
        if head is None or not supports_feature_cache(model, is_decoder):
            return None
        return FeaturePlan(
            step=HeadStep(head),
            compute=lambda items: {
                "features": head_features(model, items, pad_id, size, is_decoder, collate)
            },
            unpack=lambda t: t["features"],
            tag="",
            verify=lambda items: True,  # a linear head on its own input: exact
            what="the backbone does not run again",
        )
    stack = upper_stack(model, top_k, is_decoder) if mode == "top_k" else None
    if stack is None:
        return None

    def verify(items: Encoded) -> bool:
        few = list(items[:4])
        states = lower_states(model, few, pad_id, size, stack.first, is_decoder, collate)
        return matches_model(model, stack, states, few, pad_id, collate)

    return FeaturePlan(
        step=stack,
        compute=lambda items: lower_states(
            model, items, pad_id, size, stack.first, is_decoder, collate
        ).tensors(),
        unpack=LayerFeatures.from_tensors,
        tag=f"top_k:{stack.first}",
        verify=verify,
        what=f"only the top {top_k} layer(s) and the head run each step",
    )


def content_key(model_dir: Path, encoded: Encoded, max_length: int, tag: str = "") -> str:
    """SHA-256 of the examples (token ids and labels), ``max_length``, the model's files and
    ``tag`` (what is cached: the head's input, or the states entering layer ``L - k``)."""
    h = hashlib.sha256()
    h.update(json.dumps([max_length, [[*ids, -1, label] for ids, label in encoded]]).encode())
    h.update(tag.encode())
    for path in sorted(model_dir.glob("*")):
        if path.name == "config.json":
            h.update(path.read_bytes())
        elif path.suffix in {".safetensors", ".bin", ".pt"}:
            stat = path.stat()
            h.update(f"{path.name}:{stat.st_size}:{stat.st_mtime_ns}".encode())
            with path.open("rb") as fh:
                h.update(fh.read(1 << 20))
    return h.hexdigest()


def cached_tensors(
    compute: Callable[[], dict[str, torch.Tensor]], key: str, cache_dir: Path | None
) -> tuple[dict[str, torch.Tensor], bool]:
    """``compute()``'s named tensors, read from ``cache_dir/<key>.safetensors`` when there (disk
    cache; None = memory only). Returns (tensors, whether they were read from disk)."""
    from safetensors.torch import load_file, save_file

    if cache_dir is None:
        return compute(), False
    path = cache_dir / f"{key}.safetensors"
    if path.is_file():
        return load_file(str(path)), True
    tensors = compute()
    cache_dir.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(".tmp")
    save_file({k: v.contiguous() for k, v in tensors.items()}, str(tmp))
    tmp.replace(path)  # atomic: a reader never sees half a file
    return tensors, False


def cached_head_features(
    compute: Any, key: str, cache_dir: Path | None
) -> tuple[torch.Tensor, bool]:
    """:func:`cached_tensors` for head mode's ``[N, H]`` features."""
    tensors, hit = cached_tensors(lambda: {"features": compute()}, key, cache_dir)
    return tensors["features"], hit


__all__ = [
    "FeaturePlan",
    "Features",
    "HeadStep",
    "cached_head_features",
    "cached_tensors",
    "content_key",
    "feature_batch",
    "feature_plan",
    "head_features",
    "predict_features",
    "supports_feature_cache",
]
