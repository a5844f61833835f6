"""Choosing each row's next token, and turning token ids into streamed text with stop strings."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import torch


@dataclass
class RowSampler:
    """Greedy at temperature 0; else temperature, top-k then top-p (nucleus) sampling."""

    temperature: float
    top_p: float = 1.0
    top_k: int = 0
    seed: int | None = None
    generator: torch.Generator = field(init=False)

    def __post_init__(self) -> None:
        self.generator = torch.Generator()
        self.generator.manual_seed(
            self.seed if self.seed is not None else int(torch.randint(0, 2**62, ()).item())
        )

    def __call__(self, logits: torch.Tensor) -> int:
        """``logits``: [V] float32 on CPU -> the chosen token id."""
        if self.temperature <= 0:
            return int(logits.argmax())
        scores = logits / self.temperature
        if 0 < self.top_k < scores.numel():
            kth = torch.topk(scores, self.top_k).values[-1]
            scores = scores.masked_fill(scores < kth, float("-inf"))
        probs = torch.softmax(scores, dim=-1)
        if self.top_p < 1.0:
            sorted_p, order = probs.sort(descending=True)
            outside = sorted_p.cumsum(-1) - sorted_p >= self.top_p  # keep the first token always
            probs = probs.scatter(0, order, sorted_p.masked_fill(outside, 0.0))
        return int(torch.multinomial(probs, 1, generator=self.generator))


def eos_ids(tokenizer: Any) -> set[int]:
    """The tokenizer's EOS and the usual end-of-turn tokens it knows."""
    ids = {tokenizer.eos_token_id}
    for tok in ("<|im_end|>", "<|eot_id|>", "<|end_of_text|>", "</s>"):
        tid = tokenizer.convert_tokens_to_ids(tok)
        if isinstance(tid, int) and tid >= 0 and tid != tokenizer.unk_token_id:
            ids.add(tid)
    return {i for i in ids if i is not None}


class TextStream:
    """New text after each token, never splitting a UTF-8 character, cut at the first stop string.

    Text that could be the start of a stop string is held back until it cannot be.
    """

    def __init__(self, decode: Any, stop: list[str]) -> None:
        self._decode = decode
        self.stop = stop
        self.ids: list[int] = []
        self.text = ""  # emitted so far
        self.stopped = False

    def push(self, token: int) -> str:
        self.ids.append(token)
        full = self._decode(self.ids)
        if full.endswith("\ufffd"):  # an incomplete multi-byte character
            return ""
        for s in self.stop:
            at = full.find(s, max(0, len(self.text) - len(s)))
            if at >= 0:
                self.stopped = True
                return self._emit(full[:at])
        hold = max((_overlap(full, s) for s in self.stop), default=0)
        return self._emit(full[: len(full) - hold])

    def flush(self) -> str:
        """The held-back text at the end of generation (no stop string completed)."""
        return "" if self.stopped else self._emit(self._decode(self.ids))

    def _emit(self, upto: str) -> str:
        if not upto.startswith(self.text):  # decoding more ids rewrote earlier text: wait
            return ""
        delta, self.text = upto[len(self.text) :], upto
        return delta


def _overlap(text: str, stop: str) -> int:
    """The length of the longest suffix of ``text`` that is a proper prefix of ``stop``."""
    for n in range(min(len(stop) - 1, len(text)), 0, -1):
        if text.endswith(stop[:n]):
            return n
    return 0
