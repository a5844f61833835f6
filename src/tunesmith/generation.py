"""Batched generation with the model's KV cache and the chat template (left padding).

:func:`sample` is the engine of the online methods (GRPO, PPO): a decode loop over the model's
own KV cache (transformers' ``cache`` argument and output, called ``past_key_values`` before
5.24) that draws ``num_samples`` completions per prompt in one batch, with temperature, top-k,
top-p, a token budget, end-of-turn tokens and stop strings that end only their own row.
:func:`generate_ids` / :func:`chat_replies` are the plain text helpers.
"""

from __future__ import annotations

import hashlib
import inspect
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import torch

from tunesmith.data.completion_batches import left_pad
from tunesmith.data.records import Message
from tunesmith.data.templates import encode_prompt


@dataclass(frozen=True)
class SamplingParams:
    max_new_tokens: int = 128
    temperature: float = 0.0  # 0 = greedy
    top_p: float = 1.0
    top_k: int = 0
    seed: int | None = None
    stop: tuple[str, ...] = ()  # a row ends once its decoded text contains one of these


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


def _eos_ids(tokenizer: Any) -> list[int]:
    ids = {tokenizer.eos_token_id}
    for tok in ("<|im_end|>", "<|eot_id|>", "<|end_of_text|>", "</s>", "<end_of_turn>"):
        tid = tokenizer.convert_tokens_to_ids(tok)
        if isinstance(tid, int) and tid != tokenizer.unk_token_id and tid >= 0:
            ids.add(tid)
    return sorted(i for i in ids if i is not None)


# ----------------------------------------------------------------------------- token choice


def filter_logits(logits: torch.Tensor, top_k: int = 0, top_p: float = 1.0) -> torch.Tensor:
    """Set to -inf every logit outside the top-k and outside the nucleus (Holtzman et al. 2020):
    the smallest set of most likely tokens whose probability reaches ``top_p``. [B, V] -> [B, V].
    The most likely token always stays."""
    if top_k > 0 and top_k < logits.size(-1):
        kth = torch.topk(logits, top_k, dim=-1).values[:, -1:]
        logits = logits.masked_fill(logits < kth, float("-inf"))
    if top_p < 1.0:
        sorted_logits, order = torch.sort(logits, dim=-1, descending=True)
        probs = torch.softmax(sorted_logits, dim=-1)
        before = torch.cumsum(probs, dim=-1) - probs  # mass of the strictly more likely tokens
        drop_sorted = before >= top_p
        drop = torch.zeros_like(drop_sorted).scatter(-1, order, drop_sorted)
        logits = logits.masked_fill(drop, float("-inf"))
    return logits


def pick_tokens(
    logits: torch.Tensor, params: SamplingParams, generator: torch.Generator | None
) -> torch.Tensor:
    """Next token per row from last-position logits [B, V]: argmax when temperature is 0, else a
    draw from softmax(filter(logits / temperature)). Returns [B]."""
    if params.temperature <= 0:
        return logits.argmax(dim=-1)
    scaled = filter_logits(logits.float() / params.temperature, params.top_k, params.top_p)
    probs = torch.softmax(scaled, dim=-1)
    return torch.multinomial(probs, 1, generator=generator).squeeze(-1)


def derive_seed(*parts: int) -> int:
    """A 63-bit seed fixed by ``parts`` alone (blake2b of their decimal text): the same on every
    process, platform and Python run (unlike ``hash``), different for different parts. GRPO
    seeds prompt k of round s with ``derive_seed(train.seed, s, k)``."""
    digest = hashlib.blake2b(",".join(map(str, parts)).encode(), digest_size=8).digest()
    return int.from_bytes(digest, "little") >> 1


def row_generators(seeds: Sequence[int], num_samples: int) -> list[torch.Generator]:
    """One CPU generator per sampled row, prompt-major: row j of prompt i is seeded with
    ``derive_seed(seeds[i], j)``, so rows never share a generator and a prompt's rows draw the
    same numbers whatever else is in the batch, on whichever process or device."""
    return [
        torch.Generator().manual_seed(derive_seed(seed, j))
        for seed in seeds
        for j in range(num_samples)
    ]


def pick_tokens_per_row(
    logits: torch.Tensor, params: SamplingParams, generators: Sequence[torch.Generator]
) -> torch.Tensor:
    """Like :func:`pick_tokens`, but row b draws from ``generators[b]`` alone: one uniform u_b
    per row and step, and the token where the cumulative probability first exceeds u_b (inverse
    CDF). Logits [B, V] -> [B]."""
    if params.temperature <= 0:
        return logits.argmax(dim=-1)
    scaled = filter_logits(logits.float() / params.temperature, params.top_k, params.top_p)
    cdf = torch.softmax(scaled, dim=-1).cumsum(dim=-1)  # [B, V]
    u = torch.stack([torch.rand((), generator=g, dtype=torch.float64) for g in generators])
    target = (u.to(cdf.device, cdf.dtype) * cdf[:, -1]).unsqueeze(-1)  # [B, 1]
    chosen = torch.searchsorted(cdf, target, right=True).squeeze(-1)  # zero-mass tokens skipped
    return chosen.clamp(max=cdf.size(-1) - 1)


# ----------------------------------------------------------------------------- decode loop


@dataclass
class _Rows:
    """Per-row decoding state of one batch."""

    tokens: list[list[int]]
    done: list[bool]
    reason: list[str]
    cut: list[int | None] = field(default_factory=list)  # char offset of the stop string


def _check_stop(rows: _Rows, row: int, tokenizer: Any, stop: tuple[str, ...]) -> None:
    """End ``row`` when its decoded text now contains a stop string (searching only the tail
    that the last token can have changed)."""
    text = tokenizer.decode(rows.tokens[row], skip_special_tokens=True)
    longest = max(len(s) for s in stop)
    tail_from = max(0, len(text) - longest - 8)
    hits = [i for s in stop if (i := text.find(s, tail_from)) >= 0]
    if hits:
        rows.done[row], rows.reason[row], rows.cut[row] = True, "stop", min(hits)


def _advance(
    rows: _Rows, new: list[int], eos: set[int], tokenizer: Any, params: SamplingParams
) -> None:
    for row, tok in enumerate(new):
        if rows.done[row]:
            continue
        rows.tokens[row].append(tok)
        if tok in eos:
            rows.done[row], rows.reason[row] = True, "stop"
        elif params.stop:
            _check_stop(rows, row, tokenizer, params.stop)
        if not rows.done[row] and len(rows.tokens[row]) >= params.max_new_tokens:
            rows.done[row] = True


def _last_logits_only(model: Any) -> dict[str, int]:
    """``logits_to_keep=1`` where the model takes it: the prompt's forward then projects only
    its last position onto the vocabulary (the others are never used)."""
    base = model.get_base_model() if hasattr(model, "get_base_model") else model
    try:
        accepted = inspect.signature(base.forward).parameters
    except (TypeError, ValueError):
        return {}
    return {"logits_to_keep": 1} if "logits_to_keep" in accepted else {}


def _decode_batch(
    model: Any,
    tokenizer: Any,
    prompts: Sequence[Sequence[int]],
    params: SamplingParams,
    generator: torch.Generator | None,
    row_gens: Sequence[torch.Generator] | None = None,
) -> _Rows:
    """Sample every row of one left-padded batch to its end, reusing the KV cache."""
    device = next(model.parameters()).device
    enc = left_pad(prompts, tokenizer.pad_token_id)
    ids, mask = enc["input_ids"].to(device), enc["attention_mask"].to(device)
    positions = (mask.cumsum(-1) - 1).clamp(min=0)
    n = len(prompts)
    rows = _Rows([[] for _ in range(n)], [False] * n, ["length"] * n, [None] * n)
    eos = set(_eos_ids(tokenizer))
    pad = tokenizer.pad_token_id
    extra = _last_logits_only(model)
    out = model(input_ids=ids, attention_mask=mask, position_ids=positions, use_cache=True, **extra)
    next_pos = positions[:, -1:] + 1
    for _ in range(params.max_new_tokens):
        last = out.logits[:, -1, :]
        if row_gens is None:
            chosen = pick_tokens(last, params, generator)
        else:
            chosen = pick_tokens_per_row(last, params, row_gens)
        done = torch.tensor(rows.done, device=device)
        chosen = chosen.masked_fill(done, pad)
        _advance(rows, chosen.tolist(), eos, tokenizer, params)
        if all(rows.done):
            break
        mask = torch.cat([mask, torch.ones_like(mask[:, :1])], dim=1)
        out = model(
            input_ids=chosen[:, None],
            attention_mask=mask,
            position_ids=next_pos,
            cache=out.cache,
            use_cache=True,
            **extra,
        )
        next_pos = next_pos + 1
    return rows


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
    0, then of prompt 1, ...). Each prompt is repeated ``num_samples`` times inside the batch, so a
    GRPO group is sampled in one forward pass per token.

    ``seeds`` (one int per prompt) makes each prompt's samples depend on its seed alone
    (:func:`row_generators`: row j of prompt i draws from ``derive_seed(seeds[i], j)``), not on
    the other prompts, ``batch_size``, the process or ``params.seed`` (then unused)."""
    if not prompts or any(len(p) == 0 for p in prompts):
        raise ValueError("sample: every prompt needs at least one token")
    if seeds is not None and len(seeds) != len(prompts):
        raise ValueError(f"sample: {len(seeds)} seeds for {len(prompts)} prompts")
    device = next(model.parameters()).device
    gens = row_generators(seeds, num_samples) if seeds is not None else None
    generator = None
    if params.seed is not None and gens is None:
        generator = torch.Generator(device=device).manual_seed(params.seed)
    was_training = model.training
    model.eval()
    flat = [(i, p) for i, p in enumerate(prompts) for _ in range(num_samples)]
    results: list[Completion] = []
    try:
        for start in range(0, len(flat), batch_size):
            chunk = flat[start : start + batch_size]
            row_gens = gens[start : start + batch_size] if gens is not None else None
            rows = _decode_batch(
                model, tokenizer, [p for _, p in chunk], params, generator, row_gens
            )
            for k, (index, _) in enumerate(chunk):
                text = tokenizer.decode(rows.tokens[k], skip_special_tokens=True)
                cut = rows.cut[k]
                results.append(
                    Completion(
                        index,
                        rows.tokens[k],
                        text[:cut] if cut is not None else text,
                        rows.reason[k],
                    )
                )
    finally:
        model.train(was_training)
    return results


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
