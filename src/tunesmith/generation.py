"""Plain-call generation over the one decoding engine (:mod:`tunesmith.decoding`).

:func:`sample` draws ``num_samples`` completions per tokenized prompt (GRPO, PPO, eval);
:func:`generate_ids` / :func:`chat_replies` return the reply texts (``generate``, ``chat``,
``eval``). All three run :class:`tunesmith.decoding.Engine`: a KV cache, stop strings and
end-of-turn tokens that end only their own row, a generator per row, a GRPO group's prompt
prefilled once, and continuous batching over ``batch_size`` slots.

Seeds: sample j of prompt i draws from ``derive_seed(seeds[i], j)``; without ``seeds``, every
prompt uses ``params.seed`` (so the same prompt, seed and settings give the same text here, in
``serve`` and in a GRPO rollout); without either, seeds come from torch's global generator.
"""

from __future__ import annotations

import inspect
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import torch

from tunesmith.data.records import Message
from tunesmith.data.templates import encode_prompt
from tunesmith.decoding.engine import Engine, Forward, Request
from tunesmith.decoding.sampling import (
    SamplingParams,
    derive_seed,
    eos_ids,
    filter_logits,
    pick_tokens,
    pick_tokens_per_row,
    row_generators,
)

__all__ = [
    "Completion",
    "SamplingParams",
    "chat_replies",
    "derive_seed",
    "filter_logits",
    "generate_ids",
    "pick_tokens",
    "pick_tokens_per_row",
    "row_generators",
    "sample",
]


@dataclass
class Completion:
    """One sampled continuation of ``prompts[prompt_index]``.

    ``token_ids`` are exactly the sampled tokens, including the end-of-turn token when the row
    stopped on one (so their log-probabilities can be recomputed); ``text`` is decoded without
    special tokens and cut before the first stop string. ``finish_reason``: ``"stop"`` (end-of-turn
    token or stop string) or ``"length"`` (``max_new_tokens`` reached).
    """

    prompt_index: int
    token_ids: list[int]
    text: str
    finish_reason: str


DEFAULT_PARAMS = SamplingParams()  # greedy, 128 new tokens


def _eos_ids(tokenizer: Any) -> list[int]:
    """What :func:`sample` stops on (kept under this name for its importers)."""
    return eos_ids(tokenizer)


def model_engine_forward(model: Any) -> Forward:
    """The engine's forward over ``model``: last-position logits only where the model takes
    ``logits_to_keep`` (the prompt's other positions are never projected onto the vocabulary),
    ``adapter_names`` per row when a row names an adapter."""
    base = model.get_base_model() if hasattr(model, "get_base_model") else model
    try:
        keep = "logits_to_keep" in inspect.signature(base.forward).parameters
    except (TypeError, ValueError):
        keep = False
    extra = {"logits_to_keep": 1} if keep else {}

    def forward(adapters: list[str | None], **inputs: Any) -> tuple[torch.Tensor, Any]:
        names: dict[str, Any] = {}
        if any(a is not None for a in adapters):
            names["adapter_names"] = [a if a is not None else "__base__" for a in adapters]
        out = model(**inputs, **names, **extra, use_cache=True)
        return out.logits[:, -1, :].float(), out.cache

    return forward


@torch.no_grad()
def sample(
    model: Any,
    tokenizer: Any,
    prompts: Sequence[Sequence[int]],
    params: SamplingParams,
    num_samples: int = 1,
    batch_size: int = 32,
    seeds: Sequence[int] | None = None,
) -> list[Completion]:
    """``num_samples`` completions of every tokenized prompt, prompt-major (all samples of prompt
    0, then of prompt 1, ...). A prompt is prefilled once for all its samples; ``batch_size``
    rows decode together, a finished row's slot going to the next sample at once.

    ``seeds`` (one int per prompt) makes each prompt's samples depend on its seed alone (row j
    of prompt i draws from ``derive_seed(seeds[i], j)``), not on the other prompts,
    ``batch_size``, the process or ``params.seed`` (then unused)."""
    if not prompts or any(len(p) == 0 for p in prompts):
        raise ValueError("sample: every prompt needs at least one token")
    if seeds is not None and len(seeds) != len(prompts):
        raise ValueError(f"sample: {len(seeds)} seeds for {len(prompts)} prompts")
    if seeds is None and params.seed is not None:
        seeds = [params.seed] * len(prompts)
    device = next(model.parameters()).device
    engine = Engine(
        model_engine_forward(model),
        lambda ids: str(tokenizer.decode(ids, skip_special_tokens=True)),
        set(eos_ids(tokenizer)),
        slots=batch_size,
        device=device,
    )
    requests = [
        Request(list(p), params, None if seeds is None else seeds[i], num_samples)
        for i, p in enumerate(prompts)
    ]
    index = {id(r): i for i, r in enumerate(requests)}
    was_training = model.training
    model.eval()
    try:
        rows = engine.run(requests)
    finally:
        model.train(was_training)
    return [Completion(index[id(r.request)], r.tokens, r.text, r.finish_reason) for r in rows]


def generate_ids(
    model: Any,
    tokenizer: Any,
    prompts: Sequence[Sequence[int]],
    params: SamplingParams = DEFAULT_PARAMS,
    batch_size: int = 16,
) -> list[str]:
    """Continue each tokenized prompt; returns only the new text (special tokens removed, cut
    at a stop string, stripped)."""
    comps = sample(model, tokenizer, prompts, params, 1, batch_size)
    return [c.text.strip() for c in comps]


def chat_replies(
    model: Any,
    tokenizer: Any,
    conversations: Sequence[Sequence[Message]],
    params: SamplingParams = DEFAULT_PARAMS,
    template: str = "tokenizer",
    batch_size: int = 16,
) -> list[str]:
    """The assistant's next reply to each conversation, rendered with ``template``."""
    prompts = [encode_prompt(list(c), tokenizer, template) for c in conversations]
    return generate_ids(model, tokenizer, prompts, params, batch_size)
