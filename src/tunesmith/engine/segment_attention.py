"""Attention over packed rows without a T x T mask: one causal SDPA call per packed example.

A packed row [T] holds examples of lengths L_1, L_2, ... (plus a run of padding). The dense
layout gives SDPA a boolean block-diagonal mask [B, 1, T, T] and so computes (and, on CPU's math
path, materialises) all T^2 scores per head, most of them masked. Here every example is run as
its own causal attention, ``softmax(Q_i K_i^T * scale + causal) V_i`` for the slice
``[start_i, end_i)`` of the row, with SDPA's ``is_causal`` (so its flash kernels apply): the
work is sum_i L_i^2 instead of T^2, and no mask is built. The padding run is one more segment
whose outputs no loss reads. Layers with a sliding window (Gemma 3) get a local causal mask of
the segment's own size [L_i, L_i] when the segment is longer than the window.

It is a transformers attention implementation (``AttentionInterface``), chosen by name
(:data:`NAME`) on a model that trains on packed rows; :func:`tunesmith.engine.forward.model_inputs`
then passes the rows' example ids [B, 1, 1, T] (``seq_ids``, padding -1) where the mask would
go (a 4-D tensor transformers hands to the attention function untouched). Every other call
(padded batches, generation with a KV cache, the shared-prompt layout's 4-D boolean mask) is
plain SDPA, with the masks transformers builds for SDPA.
"""

from __future__ import annotations

import itertools
from typing import Any

import torch
import torch.nn.functional as F

NAME = "tunesmith_segments"


def _segments(ids: torch.Tensor) -> list[tuple[int, int]]:
    """[start, end) runs of equal example id in one row [T]."""
    change = torch.nonzero(ids[1:] != ids[:-1]).flatten() + 1
    bounds = [0, *change.tolist(), ids.numel()]
    return list(itertools.pairwise(bounds))


def _local_mask(length: int, window: int, device: torch.device) -> torch.Tensor:
    """Causal mask [L, L] that also hides keys ``window`` or more positions back."""
    idx = torch.arange(length, device=device)
    diff = idx.unsqueeze(1) - idx.unsqueeze(0)
    return (diff >= 0) & (diff < window)


def segment_attention(
    module: Any,
    query: torch.Tensor,
    key: torch.Tensor,
    value: torch.Tensor,
    attention_mask: torch.Tensor | None,
    dropout: float = 0.0,
    scaling: float | None = None,
    **kwargs: Any,
) -> tuple[torch.Tensor, None]:
    """Per-example causal SDPA when ``attention_mask`` is the example-id map [B, 1, 1, T]
    (integer); transformers' SDPA otherwise. ``query`` [B, H, T, D], ``key``/``value``
    [B, H_kv, T, D]; returns the output [B, T, H, D]."""
    is_ids = (
        attention_mask is not None
        and attention_mask.dim() == 4
        and attention_mask.size(2) == 1
        and not attention_mask.is_floating_point()
        and attention_mask.dtype != torch.bool
    )
    if not is_ids:
        from transformers.integrations.sdpa_attention import sdpa_attention_forward

        return sdpa_attention_forward(  # type: ignore[no-any-return]
            module, query, key, value, attention_mask, dropout=dropout, scaling=scaling, **kwargs
        )
    assert attention_mask is not None
    window = kwargs.get("sliding_window") or getattr(module, "sliding_window", None)
    p = dropout if module.training else 0.0
    gqa = query.size(1) != key.size(1)
    rows = []
    for b in range(query.size(0)):
        parts = []
        for start, end in _segments(attention_mask[b, 0, 0]):
            q, k, v = (t[b : b + 1, :, start:end] for t in (query, key, value))
            local = window is not None and end - start > window
            mask = _local_mask(end - start, window, q.device) if local else None
            parts.append(
                F.scaled_dot_product_attention(
                    q,
                    k,
                    v,
                    attn_mask=mask,
                    dropout_p=p,
                    is_causal=mask is None,
                    scale=scaling,
                    enable_gqa=gqa,
                )
            )
        rows.append(torch.cat(parts, dim=2))
    return torch.cat(rows, dim=0).transpose(1, 2).contiguous(), None


def register() -> str:
    """Make :data:`NAME` an attention implementation transformers knows (idempotent): this
    function for attention, transformers' SDPA mask builder for every call that has no
    example-id map."""
    from transformers import AttentionInterface
    from transformers.masking_utils import AttentionMaskInterface, sdpa_mask

    AttentionInterface.register(NAME, segment_attention)
    AttentionMaskInterface.register(NAME, sdpa_mask)
    return NAME


def uses_segments(model: Any) -> bool:
    """Whether ``model`` (peft-wrapped or not) runs :func:`segment_attention`."""
    config = getattr(model, "config", None)
    return getattr(config, "_attn_implementation", None) == NAME


def example_ids_mask(seq_ids: torch.Tensor) -> torch.Tensor:
    """The example-id map [B, 1, 1, T] passed where the mask goes."""
    return seq_ids[:, None, None, :]
