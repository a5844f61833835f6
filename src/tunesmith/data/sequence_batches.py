"""Batches of whole sequences scored one number each (reward models): right padding and the
chosen + rejected sides of preference pairs stacked into one batch."""

from __future__ import annotations

from collections.abc import Sequence

import torch

Encoded = dict[str, list[int]]
"""One encoded sequence: ``input_ids`` and, for encoders, ``token_type_ids``."""


def pad_batch(items: Sequence[Encoded], pad_id: int) -> dict[str, torch.Tensor]:
    """Right-pad encoded items (``input_ids`` with ``pad_id``, other keys with 0) and add the
    attention mask. Returns tensors [B, T_max]."""
    width = max(len(it["input_ids"]) for it in items)
    out: dict[str, torch.Tensor] = {}
    for key in items[0]:
        fill = pad_id if key == "input_ids" else 0
        out[key] = torch.tensor([it[key] + [fill] * (width - len(it[key])) for it in items])
    out["attention_mask"] = torch.tensor(
        [[1] * len(it["input_ids"]) + [0] * (width - len(it["input_ids"])) for it in items]
    )
    return out


def pair_batch(
    chosen: Sequence[Encoded], rejected: Sequence[Encoded], pad_id: int
) -> dict[str, torch.Tensor]:
    """The chosen sides of k pairs, then their rejected sides, as one padded batch [2k, T_max]:
    one forward scores both, rows ``[:k]`` chosen and ``[k:]`` rejected."""
    if len(chosen) != len(rejected):
        raise ValueError(f"{len(chosen)} chosen sides but {len(rejected)} rejected")
    return pad_batch([*chosen, *rejected], pad_id)
