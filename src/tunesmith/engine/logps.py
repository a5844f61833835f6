"""Per-sequence response log-probabilities, the quantity every preference loss works on.

A preference micro-batch of B pairs becomes one padded batch of 2B sequences, chosen first:
rows ``0..B-1`` are ``prompt + chosen`` and rows ``B..2B-1`` are ``prompt + rejected``, so both
sides go through the model in a single forward pass. Labels hold the response tokens (content
and end-of-turn) and :data:`IGNORE_INDEX` on the prompt and on padding.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch.utils.checkpoint import checkpoint

from tunesmith.data.preference import EncodedPair
from tunesmith.engine.forward import _parts, forward_logits, model_inputs
from tunesmith.losses.sft import IGNORE_INDEX


def collate_pairs(pairs: Sequence[EncodedPair], pad_id: int) -> dict[str, torch.Tensor]:
    """Right-padded ``input_ids``, ``attention_mask`` and ``labels``, each ``[2B, T_max]``."""
    sides = [(p.prompt_ids, p.chosen_ids) for p in pairs]
    sides += [(p.prompt_ids, p.rejected_ids) for p in pairs]
    width = max(len(prompt) + len(reply) for prompt, reply in sides)
    ids = torch.full((len(sides), width), pad_id, dtype=torch.long)
    labels = torch.full((len(sides), width), IGNORE_INDEX, dtype=torch.long)
    mask = torch.zeros((len(sides), width), dtype=torch.long)
    for row, (prompt, reply) in enumerate(sides):
        n = len(prompt) + len(reply)
        ids[row, :n] = torch.tensor(prompt + reply)
        labels[row, len(prompt) : n] = torch.tensor(reply)
        mask[row, :n] = 1
    return {"input_ids": ids, "attention_mask": mask, "labels": labels}


def _chunk_logps(
    head: torch.nn.Module, softcap: float | None, hidden: torch.Tensor, targets: torch.Tensor
) -> torch.Tensor:
    logits = head(hidden).float()  # [n, V]
    if softcap is not None:
        logits = torch.tanh(logits / softcap) * softcap
    return -F.cross_entropy(logits, targets, reduction="none")  # [n]


def sequence_logps(
    model: torch.nn.Module, batch: dict[str, torch.Tensor], chunk_size: int = 1024
) -> tuple[torch.Tensor, torch.Tensor]:
    """``(logps [N], lengths [N])``: each row's log-probability summed over its labelled tokens.

    Where the model is a plain decoder + output head, only the M labelled positions go through
    the head, ``chunk_size`` at a time with the chunk's logits recomputed in the backward pass,
    so the full ``[N, T, V]`` logits are never held (as in SFT's loss). Otherwise the full logits
    are used. Log-probs are computed in float32.
    """
    targets = batch["labels"][:, 1:]  # [N, T-1]
    keep = targets != IGNORE_INDEX
    lengths = keep.sum(dim=1)
    parts = _parts(model)
    if parts is None:
        logits = forward_logits(model, batch)[:, :-1].float()  # [N, T-1, V]
        token = torch.log_softmax(logits, dim=-1).gather(-1, targets.clamp(min=0).unsqueeze(-1))
        return (token.squeeze(-1) * keep).sum(dim=1), lengths
    decoder, head, softcap = parts
    hidden = decoder(**model_inputs(model, batch)).last_hidden_state  # [N, T, H]
    rows, goal = hidden[:, :-1][keep], targets[keep]  # [M, H], [M]
    owner = keep.nonzero()[:, 0]  # [M]: the sequence of each labelled position
    pieces = []
    for start in range(0, rows.size(0), chunk_size):
        h, t = rows[start : start + chunk_size], goal[start : start + chunk_size]
        if torch.is_grad_enabled():
            pieces.append(checkpoint(_chunk_logps, head, softcap, h, t, use_reentrant=False))
        else:
            pieces.append(_chunk_logps(head, softcap, h, t))
    token_logps = torch.cat(pieces) if pieces else hidden.new_zeros(0, dtype=torch.float32)
    out = torch.zeros(keep.size(0), dtype=torch.float32, device=hidden.device)
    return out.index_add(0, owner, token_logps), lengths
