"""Sampling parameters and the choice of each row's next token, one generator per row.

Every row draws its random numbers from its own CPU generator, seeded from the request's seed
and the row's sample index (:func:`row_seed`), so a row's tokens depend on its prompt, seed
and settings alone: never on the other rows of the batch, the slot it ran in or the process.
"""

from __future__ import annotations

import hashlib
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import torch


@dataclass(frozen=True)
class SamplingParams:
    max_new_tokens: int = 128
    temperature: float = 0.0  # 0 = greedy
    top_p: float = 1.0
    top_k: int = 0
    seed: int | None = None
    stop: tuple[str, ...] = ()  # a row ends once its decoded text contains one of these


def eos_ids(tokenizer: Any) -> list[int]:
    """The tokenizer's EOS and the usual end-of-turn tokens it knows, sorted."""
    ids = {tokenizer.eos_token_id}
    for tok in ("<|im_end|>", "<|eot_id|>", "<|end_of_text|>", "</s>", "<end_of_turn>"):
        tid = tokenizer.convert_tokens_to_ids(tok)
        if isinstance(tid, int) and tid != tokenizer.unk_token_id and tid >= 0:
            ids.add(tid)
    return sorted(i for i in ids if i is not None)


def derive_seed(*parts: int) -> int:
    """A 63-bit seed fixed by ``parts`` alone (blake2b of their decimal text): the same on every
    process, platform and Python run (unlike ``hash``), different for different parts. GRPO
    seeds prompt k of round s with ``derive_seed(train.seed, s, k)``."""
    digest = hashlib.blake2b(",".join(map(str, parts)).encode(), digest_size=8).digest()
    return int.from_bytes(digest, "little") >> 1


def row_generator(seed: int, sample_index: int) -> torch.Generator:
    """The generator of sample ``sample_index`` of a request seeded ``seed``."""
    return torch.Generator().manual_seed(derive_seed(seed, sample_index))


def row_generators(seeds: Sequence[int], num_samples: int) -> list[torch.Generator]:
    """One CPU generator per sampled row, prompt-major: row j of prompt i is seeded with
    ``derive_seed(seeds[i], j)``, so rows never share a generator and a prompt's rows draw the
    same numbers whatever else is in the batch, on whichever process or device."""
    return [row_generator(seed, j) for seed in seeds for j in range(num_samples)]


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
    """Next token per row from last-position logits [B, V] with one shared ``generator``:
    argmax when temperature is 0, else a draw from softmax(filter(logits / temperature))."""
    if params.temperature <= 0:
        return logits.argmax(dim=-1)
    scaled = filter_logits(logits.float() / params.temperature, params.top_k, params.top_p)
    probs = torch.softmax(scaled, dim=-1)
    return torch.multinomial(probs, 1, generator=generator).squeeze(-1)


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
