"""Exact-answer reward for math problems: extract the final answer, compare it as a number.

The final answer is, in order of preference: the content of the last ``<answer>...</answer>``
tag, the content of the last ``\\boxed{...}``, else the last number in the text. Numbers are
compared exactly as rationals after normalisation: thousands separators, ``$``, a trailing
``.0``/``%`` sign and surrounding text are dropped and ``3/4`` equals ``0.75``. Non-numeric
answers fall back to a whitespace- and case-insensitive string match.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from fractions import Fraction
from typing import Any

_ANSWER = re.compile(r"<answer>(.*?)</answer>", re.DOTALL | re.IGNORECASE)
_NUMBER = re.compile(r"-?\d[\d,]*(?:\.\d+)?(?:\s*/\s*-?\d+)?|-?\.\d+")


def _last_boxed(text: str) -> str | None:
    """Content of the last ``\\boxed{...}``, nested braces balanced."""
    start = text.rfind("\\boxed{")
    if start < 0:
        return None
    depth, i = 0, start + len("\\boxed")
    for j in range(i, len(text)):
        depth += {"{": 1, "}": -1}.get(text[j], 0)
        if depth == 0:
            return text[i + 1 : j]
    return None


def extract_answer(text: str) -> str | None:
    """The final answer of a completion (see the module docstring); None when there is none."""
    tagged = _ANSWER.findall(text)
    if tagged:
        inner = tagged[-1]
        return _last_boxed(inner) or inner.strip()
    boxed = _last_boxed(text)
    if boxed is not None:
        return boxed.strip()
    numbers = _NUMBER.findall(text)
    return numbers[-1] if numbers else None


def parse_number(text: str) -> Fraction | None:
    """``"1,234"`` -> 1234, ``"-3.0"`` -> -3, ``"3/4"`` -> 3/4, ``"\\frac{3}{4}"`` -> 3/4,
    ``"x = 12."`` -> 12 (the only number in the text); None when no single number is found."""
    s = text.strip().replace("$", "").replace("\\!", "").replace("%", "")
    s = re.sub(r"\\d?frac\{([^{}]+)\}\{([^{}]+)\}", r"\1/\2", s)
    found = _NUMBER.findall(s)
    if len(found) != 1:
        return None
    raw = found[0].replace(",", "").replace(" ", "")
    try:
        if "/" in raw:
            num, den = raw.split("/")
            return Fraction(Fraction(num), Fraction(den))
        return Fraction(raw)
    except (ValueError, ZeroDivisionError):
        return None


def answers_match(predicted: str | None, reference: Any) -> bool:
    """Numeric equality when both sides parse as one number, else normalised string equality."""
    if predicted is None or reference is None:
        return False
    ref = str(reference)
    a, b = parse_number(predicted), parse_number(ref)
    if a is not None and b is not None:
        return a == b
    return " ".join(predicted.lower().split()) == " ".join(ref.lower().split())


def math_reward(
    prompts: Sequence[Any], completions: Sequence[str], answer: Sequence[Any], **_: Any
) -> list[float]:
    """1.0 when the completion's final answer equals the record's ``answer``, else 0.0."""
    return [
        float(answers_match(extract_answer(c), a)) for c, a in zip(completions, answer, strict=True)
    ]
