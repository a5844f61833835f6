"""Row surgery on a transformers ``DynamicCache`` for continuous batching.

The running batch is left-padded: every row's tokens end in the last column, and its
``attention_mask`` row is 0 over the padding. Full-attention layers hold all T columns;
sliding-window layers (``DynamicSlidingWindowLayer``) hold the last ``min(T, window - 1)``,
right-aligned the same way, and count T in ``cumulative_length``. So rows of different
lengths join by left-padding the shorter side with zeros (masked, so never attended to), and
columns that every row masks are cut from the left when the rows that needed them leave.
"""

from __future__ import annotations

import copy
from typing import Any

import torch


def _pad_left(t: torch.Tensor, width: int) -> torch.Tensor:
    """[B, H, S, D] -> [B, H, width, D], zeros before the S columns."""
    short = width - t.size(-2)
    if short <= 0:
        return t
    return torch.nn.functional.pad(t, (0, 0, short, 0))


def repeat_rows(cache: Any, rows: list[int]) -> Any:
    """A new cache holding rows ``rows`` of ``cache`` (which is left untouched)."""
    out = copy.copy(cache)
    out.layers = [copy.copy(layer) for layer in cache.layers]
    index = torch.tensor(rows, dtype=torch.long, device=_device(cache))
    for layer in out.layers:
        if getattr(layer, "keys", None) is not None and layer.keys.numel():
            layer.keys = layer.keys.index_select(0, index)
            layer.values = layer.values.index_select(0, index)
    return out


def _device(cache: Any) -> torch.device:
    for layer in cache.layers:
        if getattr(layer, "keys", None) is not None:
            return layer.keys.device
    return torch.device("cpu")


def join(running: Any, new: Any) -> None:
    """Append the rows of ``new`` to ``running`` in place (both left-padded, any lengths)."""
    for a, b in zip(running.layers, new.layers, strict=True):
        width = max(a.keys.size(-2), b.keys.size(-2))
        a.keys = torch.cat([_pad_left(a.keys, width), _pad_left(b.keys, width)])
        a.values = torch.cat([_pad_left(a.values, width), _pad_left(b.values, width)])
        if hasattr(a, "cumulative_length"):
            a.cumulative_length = max(a.cumulative_length, b.cumulative_length)


def keep_rows(cache: Any, rows: list[int]) -> None:
    """Keep only ``rows`` of ``cache``, in that order (in place)."""
    cache.batch_select_indices(torch.tensor(rows, dtype=torch.long, device=_device(cache)))


def cut_left(cache: Any, columns: int) -> None:
    """Drop the first ``columns`` columns (masked in every row) from every layer (in place)."""
    if columns <= 0:
        return
    for layer in cache.layers:
        if hasattr(layer, "cumulative_length"):  # sliding: keeps min(T, window - 1) columns
            layer.cumulative_length -= columns
            held = min(layer.cumulative_length, layer.sliding_window - 1)
            layer.keys = layer.keys[..., -held:, :] if held else layer.keys[..., :0, :]
            layer.values = layer.values[..., -held:, :] if held else layer.values[..., :0, :]
        else:
            layer.keys = layer.keys[..., columns:, :]
            layer.values = layer.values[..., columns:, :]
