"""Batches of sampled completions (GRPO, PPO): ``prompt + completion`` rows for log-probs.

Rows are right-padded to the longest; ``labels`` hold the completion tokens and
:data:`~tunesmith.losses.sft.IGNORE_INDEX` elsewhere (prompt and padding), so position t of a
model's output predicts a labelled token at t + 1 exactly where a completion token follows
(:func:`tunesmith.engine.token_logps.token_logps`).
"""

from __future__ import annotations

from collections.abc import Sequence

import torch

from tunesmith.losses.sft import IGNORE_INDEX


def collate_completions(
    prompts: Sequence[Sequence[int]], completions: Sequence[Sequence[int]], pad_id: int
) -> dict[str, torch.Tensor]:
    """Right-padded ``prompt + completion`` rows with completion-only labels, each [B, T]."""
    width = max(len(p) + len(c) for p, c in zip(prompts, completions, strict=True))
    n = len(prompts)
    ids = torch.full((n, width), pad_id, dtype=torch.long)
    labels = torch.full((n, width), IGNORE_INDEX, dtype=torch.long)
    mask = torch.zeros((n, width), dtype=torch.long)
    for row, (p, c) in enumerate(zip(prompts, completions, strict=True)):
        end = len(p) + len(c)
        ids[row, :end] = torch.tensor(list(p) + list(c))
        labels[row, len(p) : end] = torch.tensor(list(c), dtype=torch.long)
        mask[row, :end] = 1
    return {"input_ids": ids, "attention_mask": mask, "labels": labels}


def collate_prompt_response(
    prompts: Sequence[Sequence[int]], responses: Sequence[Sequence[int]], pad_id: int
) -> dict[str, torch.Tensor]:
    """PPO's layout: prompts left-padded to the longest (P), then responses right-padded to the
    longest (L), so response token t of every row sits at column P + t and per-token tensors
    line up as [B, L]. ``input_ids``/``attention_mask`` [B, P + L], ``response_mask`` [B, L]."""
    n, width, length = len(prompts), max(map(len, prompts)), max(map(len, responses))
    ids = torch.full((n, width + length), pad_id, dtype=torch.long)
    mask = torch.zeros((n, width + length), dtype=torch.long)
    for row, (p, r) in enumerate(zip(prompts, responses, strict=True)):
        ids[row, width - len(p) : width + len(r)] = torch.tensor(list(p) + list(r))
        mask[row, width - len(p) : width + len(r)] = 1
    return {"input_ids": ids, "attention_mask": mask, "response_mask": mask[:, width:]}


def left_pad(prompts: Sequence[Sequence[int]], pad_id: int) -> dict[str, torch.Tensor]:
    """Left-pad token id lists so that new tokens follow every prompt directly.

    Returns ``input_ids`` and ``attention_mask``, both [B, T_max].
    """
    width = max(len(p) for p in prompts)
    ids = torch.full((len(prompts), width), pad_id, dtype=torch.long)
    mask = torch.zeros((len(prompts), width), dtype=torch.long)
    for row, p in enumerate(prompts):
        if p:
            ids[row, width - len(p) :] = torch.tensor(list(p))
            mask[row, width - len(p) :] = 1
    return {"input_ids": ids, "attention_mask": mask}
