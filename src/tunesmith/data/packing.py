"""Packing: several examples per row, each attending only to itself.

Rows are filled by first-fit decreasing (longest example first, into the first row with room),
which wastes little space for typical length distributions. Within a row every example gets its
own position ids (0, 1, ...) and a block-diagonal causal mask, so the logits of a packed example
equal those of the example run alone: resetting position ids alone is NOT enough (the model would
still attend across the boundary).

Static shapes: a packed micro-batch is padded to a bucket width (:func:`bucket_width`, at most 8
widths per doubling of length, at most 1/8 of the row wasted) instead of its longest row, so
first-fit-decreasing rows (which fill to within a few tokens of ``max_length``) give the same
tensor shape step after step and ``train.compile`` does not see a new shape every step. The extra
slots are padding (example id -1, ignore label) and change no loss or gradient.

The first token of every example but the first gets the ignore label: unpacked, a sequence's
first token is never a target (nothing precedes it); packed, it would otherwise be predicted from
the previous example's last token.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import torch

from tunesmith.data.templates import IGNORE_INDEX, Encoded


@dataclass(frozen=True)
class PackedRow:
    """Indices of the examples in one row, in order, and the row's token count."""

    items: tuple[int, ...]
    length: int


def pack_first_fit_decreasing(lengths: Sequence[int], capacity: int) -> list[PackedRow]:
    """Bin-pack example lengths into rows of at most ``capacity`` tokens (FFD heuristic).

    Deterministic: ties are broken by example index. Examples longer than ``capacity`` must have
    been truncated or dropped before.
    """
    order = sorted(range(len(lengths)), key=lambda i: (-lengths[i], i))
    rows: list[list[int]] = []
    room: list[int] = []
    for i in order:
        n = lengths[i]
        if n > capacity:
            raise ValueError(f"example {i} has {n} tokens > capacity {capacity}")
        for r, free in enumerate(room):
            if n <= free:
                rows[r].append(i)
                room[r] -= n
                break
        else:
            rows.append([i])
            room.append(capacity - n)
    return [PackedRow(tuple(r), capacity - free) for r, free in zip(rows, room, strict=True)]


def block_causal_mask(
    seq_ids: torch.Tensor,
    window: int | None = None,
    branch_ids: torch.Tensor | None = None,
    position_ids: torch.Tensor | None = None,
) -> torch.Tensor:
    """Boolean attention mask [B, 1, T, T]: query t sees key s iff s <= t, both belong to the same
    example and, with a sliding ``window``, t - s < window (as the model's own sliding layers do).

    ``seq_ids`` [B, T] numbers the examples of each row; padding has id -1 and attends only to
    itself (a fully masked row would give NaN in softmax).

    Branches (the shared-prompt layout of preference pairs, :mod:`tunesmith.engine.logps`): with
    ``branch_ids`` [B, T] (0 = the shared prefix, 1, 2, ... = continuations laid out one after
    the other), a key is also visible only when it is in the prefix or in the query's own
    branch, and the window is measured in ``position_ids`` (a branch restarts its positions where
    the prefix ends, so index distance is not token distance any more).
    """
    t = seq_ids.size(1)
    idx = torch.arange(t, device=seq_ids.device)
    mask = (idx.unsqueeze(1) >= idx.unsqueeze(0)).unsqueeze(0)  # [1, T, T]
    mask = mask & (seq_ids.unsqueeze(2) == seq_ids.unsqueeze(1))  # [B, T, T]
    if branch_ids is not None:
        key = branch_ids.unsqueeze(1)
        mask = mask & ((key == 0) | (key == branch_ids.unsqueeze(2)))
    if window is not None:
        pos = idx.unsqueeze(0) if position_ids is None else position_ids  # [1 or B, T]
        mask = mask & (pos.unsqueeze(2) - pos.unsqueeze(1) < window)
    pad = seq_ids < 0
    eye = torch.eye(t, dtype=torch.bool, device=seq_ids.device)
    mask = torch.where(pad.unsqueeze(2), eye.expand_as(mask), mask)
    return mask.unsqueeze(1)


BUCKET_GRANULARITY = 8


def bucket_width(longest: int, granularity: int = BUCKET_GRANULARITY) -> int:
    """The fixed width a batch whose longest row has ``longest`` tokens is padded to: the next
    multiple of ``max(granularity, P / 16)``, P the power of two at or above ``longest``
    (8, 16, ... up to 128; 288, 320, ... up to 512; 2304, 2560, ... up to 4096): a multiple of
    8, at most 1/8 of the width wasted, 8 widths per doubling."""
    if longest <= 0:
        return granularity
    step = max(granularity, (1 << (longest - 1).bit_length()) // 16)
    return -(-longest // step) * step


def collate_packed(
    rows: list[list[Encoded]], pad_id: int, width: int | None = None
) -> dict[str, torch.Tensor]:
    """Concatenate each row's examples; pad rows to ``width`` (default: the bucket of the longest
    row, :func:`bucket_width`; give the longest row's length for no bucketing).

    Returns ``input_ids``, ``labels``, ``position_ids``, ``seq_ids`` [B, T] and the 4-D
    ``attention_mask`` [B, 1, T, T] from :func:`block_causal_mask`.
    """
    longest = max(sum(len(e.input_ids) for e in row) for row in rows)
    width = bucket_width(longest) if width is None else width
    if width < longest:
        raise ValueError(f"width {width} < the longest packed row ({longest} tokens)")
    ids = torch.full((len(rows), width), pad_id, dtype=torch.long)
    labels = torch.full((len(rows), width), IGNORE_INDEX, dtype=torch.long)
    pos = torch.zeros((len(rows), width), dtype=torch.long)
    seq = torch.full((len(rows), width), -1, dtype=torch.long)
    for r, row in enumerate(rows):
        at = 0
        for k, enc in enumerate(row):
            n = len(enc.input_ids)
            ids[r, at : at + n] = torch.tensor(enc.input_ids)
            labels[r, at : at + n] = torch.tensor(enc.labels)
            labels[r, at] = IGNORE_INDEX  # never predicted from the previous example
            pos[r, at : at + n] = torch.arange(n)
            seq[r, at : at + n] = k
            at += n
    return {
        "input_ids": ids,
        "labels": labels,
        "position_ids": pos,
        "seq_ids": seq,
        "attention_mask": block_causal_mask(seq),
    }


def flatten_rows(input_ids: torch.Tensor, position_ids: torch.Tensor) -> dict[str, torch.Tensor]:
    """A packed micro-batch's rows [B, T] laid end to end as ONE row [1, B*T] for
    flash-attention's variable-length path, which finds example boundaries where the position ids
    restart at 0 (transformers reads them only from a single row). Each row already restarts at
    0, and every padding token has position 0, so it becomes an example of its own (attending
    only to itself, as in :func:`block_causal_mask`)."""
    return {"input_ids": input_ids.reshape(1, -1), "position_ids": position_ids.reshape(1, -1)}


def seq_ids_from_positions(position_ids: torch.Tensor) -> torch.Tensor:
    """Example numbers [B, T] read from restarting ``position_ids`` [B, T] (a new example at
    every 0), as flash attention reads them; with :func:`block_causal_mask` this gives the mask
    the variable-length kernel applies."""
    return torch.cumsum((position_ids == 0).long(), dim=1) - 1


def packing_efficiency(rows: Sequence[PackedRow], capacity: int) -> float:
    """Share of the rows' ``capacity`` slots holding real tokens."""
    return sum(r.length for r in rows) / max(len(rows) * capacity, 1)
