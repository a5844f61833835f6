"""Per-sequence response log-probabilities, the quantity every preference loss works on.

A preference micro-batch of B pairs becomes one padded batch of 2B sequences, chosen first:
rows ``0..B-1`` are ``prompt + chosen`` and rows ``B..2B-1`` are ``prompt + rejected``, so both
sides go through the model in a single forward pass. Labels hold the response tokens (content
and end-of-turn) and :data:`IGNORE_INDEX` on the prompt and on padding.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch

from tunesmith.data.preference import EncodedPair
from tunesmith.engine.token_logps import token_logps
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


def sequence_logps(
    model: torch.nn.Module, batch: dict[str, torch.Tensor], chunk_size: int = 1024
) -> tuple[torch.Tensor, torch.Tensor]:
    """``(logps [N], lengths [N])``: each row's log-probability summed over its labelled tokens.

    The per-token log-probs come from :func:`tunesmith.engine.token_logps.token_logps` (only the
    labelled positions go through the output head, in recomputed chunks, in float32).
    """
    logps, mask = token_logps(model, batch, chunk_size)  # [N, T-1] each
    return logps.sum(dim=1), mask.sum(dim=1)
