"""A request's sampling settings, and the text stream with stop strings (from the engine)."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import torch

from tunesmith.decoding.sampling import SamplingParams, pick_tokens_per_row, row_generator
from tunesmith.decoding.sampling import eos_ids as _engine_eos_ids
from tunesmith.decoding.text import TextStream

__all__ = ["RowSampler", "TextStream", "eos_ids"]


@dataclass
class RowSampler:
    """Greedy at temperature 0; else temperature, top-k then top-p (nucleus) sampling. The
    decoding engine draws with these; ``seed`` fixes the draws (none: a random seed)."""

    temperature: float
    top_p: float = 1.0
    top_k: int = 0
    seed: int | None = None
    generator: torch.Generator = field(init=False, repr=False)

    def __post_init__(self) -> None:
        if self.seed is None:  # drawn once, so the engine and __call__ agree on it
            self.seed = int(torch.randint(0, 2**62, ()).item())
        self.generator = row_generator(self.seed, 0)

    def params(self, max_tokens: int, stop: list[str]) -> SamplingParams:
        """These settings as the engine's :class:`SamplingParams`."""
        return SamplingParams(
            max_tokens, self.temperature, self.top_p, self.top_k, self.seed, tuple(stop)
        )

    def __call__(self, logits: torch.Tensor) -> int:
        """``logits``: [V] float32 on CPU -> the chosen token id (the engine's own rule)."""
        params = SamplingParams(1, self.temperature, self.top_p, self.top_k)
        return int(pick_tokens_per_row(logits[None], params, [self.generator])[0])


def eos_ids(tokenizer: Any) -> set[int]:
    """The tokenizer's EOS and the usual end-of-turn tokens it knows."""
    return set(_engine_eos_ids(tokenizer))
