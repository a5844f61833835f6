"""Format reward: ``<think>...</think><answer>...</answer>`` with partial credit.

Score of one completion (defaults in brackets):
  * the whole text is exactly ``<think>T</think> <answer>A</answer>`` (whitespace around the
    tags allowed, T and A non-empty): ``full`` [1.0];
  * otherwise the sum of ``tag_credit`` [0.25] for each well-formed non-empty pair
    ``<think>..</think>`` and ``<answer>..</answer>`` found anywhere, each pair counted once.
With ``think=False`` only the answer tag is asked for: the full score needs the text to end with
``<answer>A</answer>``, and a tag found elsewhere earns ``tag_credit``.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from functools import partial
from typing import Any

_FULL_THINK = re.compile(
    r"\s*<think>((?:(?!</?think>).)*)</think>\s*<answer>((?:(?!</?answer>).)*)</answer>\s*",
    re.DOTALL,
)
_FULL_ANSWER = re.compile(r".*<answer>((?:(?!</?answer>).)*)</answer>\s*", re.DOTALL)
_PAIR = {
    tag: re.compile(rf"<{tag}>(?:(?!</{tag}>).)*?(?!</{tag}>)\S.*?</{tag}>", re.DOTALL)
    for tag in ("think", "answer")
}


def format_score(
    text: str, think: bool = True, full: float = 1.0, tag_credit: float = 0.25
) -> float:
    """The format score of one completion (see the module docstring)."""
    whole = (_FULL_THINK if think else _FULL_ANSWER).fullmatch(text)
    if whole and all(part.strip() for part in whole.groups()):
        return full
    tags = ("think", "answer") if think else ("answer",)
    return sum(tag_credit for t in tags if _PAIR[t].search(text))


def format_reward(
    prompts: Sequence[Any],
    completions: Sequence[str],
    think: bool = True,
    full: float = 1.0,
    tag_credit: float = 0.25,
    **_: Any,
) -> list[float]:
    """:func:`format_score` of every completion; the keyword arguments come from the reward's
    ``args`` in the config (e.g. ``{think: false, tag_credit: 0.5}``)."""
    score = partial(format_score, think=think, full=full, tag_credit=tag_credit)
    return [score(c) for c in completions]
