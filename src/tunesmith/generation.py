"""Batched generation with the model's KV cache and the chat template (left padding)."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import torch

from tunesmith.data.records import Message
from tunesmith.data.templates import encode_prompt


@dataclass(frozen=True)
class SamplingParams:
    max_new_tokens: int = 128
    temperature: float = 0.0  # 0 = greedy
    top_p: float = 1.0
    top_k: int = 0
    seed: int | None = None


def _eos_ids(tokenizer: Any) -> list[int]:
    ids = {tokenizer.eos_token_id}
    for tok in ("<|im_end|>", "<|eot_id|>", "<|end_of_text|>", "</s>"):
        tid = tokenizer.convert_tokens_to_ids(tok)
        if isinstance(tid, int) and tid != tokenizer.unk_token_id and tid >= 0:
            ids.add(tid)
    return sorted(i for i in ids if i is not None)


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


@torch.no_grad()
def generate_ids(
    model: Any,
    tokenizer: Any,
    prompts: Sequence[Sequence[int]],
    params: SamplingParams = SamplingParams(),
    batch_size: int = 16,
) -> list[str]:
    """Continue each tokenized prompt; returns only the new text, special tokens removed."""
    device = next(model.parameters()).device
    outputs: list[str] = []
    if params.seed is not None:
        torch.manual_seed(params.seed)
    for start in range(0, len(prompts), batch_size):
        enc = left_pad(prompts[start : start + batch_size], tokenizer.pad_token_id)
        enc = {k: v.to(device) for k, v in enc.items()}
        sample = params.temperature > 0
        out = model.generate(
            **enc,
            max_new_tokens=params.max_new_tokens,
            do_sample=sample,
            temperature=params.temperature if sample else None,
            top_p=params.top_p if sample else None,
            top_k=params.top_k if sample else None,
            eos_token_id=_eos_ids(tokenizer),
            pad_token_id=tokenizer.pad_token_id,
        )
        new = out[:, enc["input_ids"].shape[1] :]
        outputs.extend(tokenizer.batch_decode(new, skip_special_tokens=True))
    return [o.strip() for o in outputs]


def chat_replies(
    model: Any,
    tokenizer: Any,
    conversations: Sequence[Sequence[Message]],
    params: SamplingParams = SamplingParams(),
    template: str = "tokenizer",
    batch_size: int = 16,
) -> list[str]:
    """The assistant's next reply to each conversation, rendered with ``template``."""
    prompts = [encode_prompt(list(c), tokenizer, template) for c in conversations]
    return generate_ids(model, tokenizer, prompts, params, batch_size)
