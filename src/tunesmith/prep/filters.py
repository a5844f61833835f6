"""Quality filters: each is a small pure function returning why a record fails, or ``None``.

:class:`QualityFilters` runs the enabled ones in a fixed order (short response, too long, repeats
the prompt, repetition, refusal, broken markup) and reports the first that fires, so every
removed record is counted under exactly one rule.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from dataclasses import dataclass

from tunesmith.data.records import Example
from tunesmith.prep.config import FiltersSection
from tunesmith.prep.normalize import normalize_text, response_text
from tunesmith.prep.tokens import TokenCounter

MIN_NGRAMS_FOR_REPETITION = 8
"""Responses with fewer word n-grams are too short for a meaningful repetition ratio."""

_FENCE = re.compile(r"^ {0,3}(`{3,}|~{3,})(.*)$")


@dataclass(frozen=True)
class Verdict:
    """Why a record is removed: the rule's name and a short human-readable detail."""

    rule: str
    detail: str


def short_response(response: str, counter: TokenCounter, min_tokens: int) -> str | None:
    n = counter.text(response)
    return f"response has {n} tokens (< {min_tokens})" if n < min_tokens else None


def too_long(n_tokens: int, max_length: int) -> str | None:
    return f"{n_tokens} tokens > max_length {max_length}" if n_tokens > max_length else None


def _jaccard(a: set[str], b: set[str]) -> float:
    return len(a & b) / len(a | b) if a or b else 1.0


def repeats_prompt(ex: Example, min_similarity: float) -> str | None:
    """An assistant turn whose words are (nearly) those of the user turn just before it."""
    for prev, turn in zip(ex.messages, ex.messages[1:], strict=False):
        if prev.role != "user" or turn.role != "assistant":
            continue
        answer = set(normalize_text(turn.content).split())
        if not answer:
            continue
        similarity = _jaccard(set(normalize_text(prev.content).split()), answer)
        if similarity >= min_similarity:
            return f"response repeats the prompt (word similarity {similarity:.2f})"
    return None


def repetition_ratio(text: str, n: int) -> tuple[float, int]:
    """``(1 - unique/total, total)`` over the word ``n``-grams of normalised ``text``."""
    words = normalize_text(text).split()
    grams = [tuple(words[i : i + n]) for i in range(len(words) - n + 1)]
    if not grams:
        return 0.0, 0
    return 1.0 - len(set(grams)) / len(grams), len(grams)


def repetition(response: str, n: int, max_ratio: float) -> str | None:
    ratio, total = repetition_ratio(response, n)
    if total >= MIN_NGRAMS_FOR_REPETITION and ratio > max_ratio:
        return f"{ratio:.0%} of {n}-grams are repeats (> {max_ratio:.0%})"
    return None


def refusal(response: str, phrases: list[str]) -> str | None:
    """The first of ``phrases`` (already normalised) contained in the response, as whole words."""
    padded = f" {normalize_text(response)} "
    for phrase in phrases:
        if f" {phrase} " in padded:
            return f"boilerplate refusal ({phrase!r})"
    return None


def unbalanced_fence(text: str) -> bool:
    """Whether a ``` or ~~~ code fence is left open (CommonMark closing rules)."""
    open_char, open_len = "", 0
    for line in text.splitlines():
        match = _FENCE.match(line)
        if match is None:
            continue
        fence, rest = match.group(1), match.group(2)
        if not open_char:
            open_char, open_len = fence[0], len(fence)
        elif fence[0] == open_char and len(fence) >= open_len and not rest.strip():
            open_char, open_len = "", 0
    return bool(open_char)


def broken_markup(ex: Example) -> str | None:
    texts = [ex.text] if ex.text is not None else [m.content for m in ex.messages]
    if any(unbalanced_fence(t) for t in texts):
        return "unbalanced code fence"
    return None


Check = Callable[[Example, str, int], str | None]


class QualityFilters:
    """The enabled filters of a :class:`FiltersSection`, applied in a fixed order."""

    def __init__(self, cfg: FiltersSection, max_length: int, counter: TokenCounter) -> None:
        phrases = [normalize_text(p) for p in cfg.refusal.phrases if normalize_text(p)]
        candidates: list[tuple[str, bool, Check]] = [
            (
                "short_response",
                cfg.short_response.enabled,
                lambda ex, r, n: short_response(r, counter, cfg.short_response.min_tokens),
            ),
            ("too_long", cfg.too_long.enabled, lambda ex, r, n: too_long(n, max_length)),
            (
                "repeats_prompt",
                cfg.repeats_prompt.enabled,
                lambda ex, r, n: repeats_prompt(ex, cfg.repeats_prompt.min_similarity),
            ),
            (
                "repetition",
                cfg.repetition.enabled,
                lambda ex, r, n: repetition(r, cfg.repetition.ngram, cfg.repetition.max_ratio),
            ),
            ("refusal", cfg.refusal.enabled, lambda ex, r, n: refusal(r, phrases)),
            ("broken_markup", cfg.broken_markup.enabled, lambda ex, r, n: broken_markup(ex)),
        ]
        self.rules: list[str] = [name for name, _, _ in candidates]
        self._active = [(name, check) for name, enabled, check in candidates if enabled]

    def check(self, ex: Example, n_tokens: int) -> Verdict | None:
        """The first enabled filter ``ex`` fails (``n_tokens``: its full length), or ``None``."""
        response = response_text(ex)
        for name, check in self._active:
            detail = check(ex, response, n_tokens)
            if detail is not None:
                return Verdict(name, detail)
        return None
