"""What a dataset says about the plan: example count, token lengths, format-only replies,
duplicates. Read with tunesmith's own readers, so every supported file type works."""

from __future__ import annotations

import json
import math
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from tunesmith.data.formats import load_examples
from tunesmith.data.records import Example

CHARS_PER_TOKEN = 4.0  # without a tokenizer: the usual English rule of thumb


@dataclass(frozen=True)
class DataFacts:
    path: str
    examples: int
    tokens_p50: int
    tokens_p95: int
    tokens_max: int
    counted_with: str  # "tokenizer" or "chars/4"
    json_replies: float  # share of examples whose reply parses as a JSON object or array
    duplicate_fraction: float

    @property
    def seq_len(self) -> int:
        """Training length that covers 95% of the examples, rounded up to a multiple of 64."""
        return max(64, math.ceil(self.tokens_p95 / 64) * 64)

    @property
    def format_only(self) -> bool:
        """Every reply is JSON: the need may be the format alone."""
        return self.examples > 0 and self.json_replies == 1.0


def _text(e: Example) -> str:
    return e.text if e.text is not None else "\n".join(m.content for m in e.messages)


def _reply(e: Example) -> str | None:
    replies = [m.content for m in e.messages if m.role == "assistant"]
    return replies[-1] if replies else None


def _is_json(text: str | None) -> bool:
    if text is None:
        return False
    try:
        return isinstance(json.loads(text), dict | list)
    except ValueError:
        return False


def _percentile(sorted_values: list[int], q: float) -> int:
    if not sorted_values:
        return 0
    return sorted_values[min(len(sorted_values) - 1, math.ceil(q * len(sorted_values)) - 1)]


def _counter(tokenizer: object | None) -> tuple[Callable[[str], int], str]:
    if tokenizer is None:
        return (lambda t: math.ceil(len(t) / CHARS_PER_TOKEN)), "chars/4"
    encode = tokenizer.encode  # type: ignore[attr-defined]
    return (lambda t: len(encode(t, add_special_tokens=False))), "tokenizer"


def data_facts(path: str | Path, tokenizer: object | None = None) -> DataFacts:
    examples, _ = load_examples(path)
    count, how = _counter(tokenizer)
    lengths = sorted(count(_text(e)) for e in examples)
    keys = [json.dumps(e.to_json().get("messages") or e.text, sort_keys=True) for e in examples]
    n = len(examples)
    return DataFacts(
        path=str(path),
        examples=n,
        tokens_p50=_percentile(lengths, 0.5),
        tokens_p95=_percentile(lengths, 0.95),
        tokens_max=lengths[-1] if lengths else 0,
        counted_with=how,
        json_replies=sum(_is_json(_reply(e)) for e in examples) / n if n else 0.0,
        duplicate_fraction=(n - len(set(keys))) / n if n else 0.0,
    )
