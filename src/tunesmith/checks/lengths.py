"""Check 8: the dataset's length distribution (before truncation) against the training length."""

from __future__ import annotations

import math
import re
import statistics
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from tunesmith.checks.checks import Check
from tunesmith.checks.preflight import WARN_SHARE
from tunesmith.config import DataSection
from tunesmith.data.dataset import PreparedData
from tunesmith.data.templates import encode_example

_OVER_LONG = re.compile(r"(\d+) tokens > max_length")


@dataclass(frozen=True)
class LengthStats:
    """Token lengths of the train examples as rendered, before truncation."""

    lengths: tuple[int, ...]
    max_length: int

    @property
    def over(self) -> int:
        return sum(n > self.max_length for n in self.lengths)

    def percentile(self, q: float) -> int:
        """Nearest-rank percentile, ``q`` in [0, 100]."""
        ordered = sorted(self.lengths)
        return ordered[max(0, math.ceil(q / 100 * len(ordered)) - 1)]

    def summary(self) -> str:
        if not self.lengths:
            return "no examples"
        return (
            f"min {min(self.lengths)} / median {statistics.median(self.lengths):g} / "
            f"p95 {self.percentile(95)} / max {max(self.lengths)} tokens over "
            f"{len(self.lengths)} examples; {self.over} ({100 * self.share_over:.1f}%) above "
            f"max_length {self.max_length}"
        )

    @property
    def share_over(self) -> float:
        return self.over / max(len(self.lengths), 1)

    def histogram(self, bins: int = 10) -> list[tuple[int, int, int]]:
        """``(low, high, count)`` per bin of equal width from 0 to the longest example."""
        top = max([*self.lengths, 1])
        width = max(1, math.ceil(top / bins))
        counts = [0] * bins
        for n in self.lengths:
            counts[min(n // width, bins - 1)] += 1
        return [(i * width, (i + 1) * width, c) for i, c in enumerate(counts)]


def full_lengths(data: PreparedData, tokenizer: Any, cfg: DataSection) -> list[int]:
    """Lengths of all train examples before truncation: the kept ones (truncated ones are
    re-encoded without a limit) and the ones dropped as over-long (their length is recorded)."""
    lengths: list[int] = []
    for ex, enc in zip(data.train.examples, data.train.encoded, strict=True):
        if enc.truncated:
            full = encode_example(
                ex,
                tokenizer,
                template=cfg.template,
                max_length=1 << 30,
                train_on=cfg.train_on,
                truncation="truncate",
            )
            lengths.append(len(full.input_ids))
        else:
            lengths.append(len(enc.input_ids))
    for reject in data.rejects:
        m = _OVER_LONG.search(str(reject.get("reason", "")))
        if reject.get("stage") == "encode:train" and m:
            lengths.append(int(m.group(1)))
    return lengths


def check_lengths(stats: LengthStats) -> Check:
    """8. Length distribution vs ``max_length``: WARN when more than WARN_SHARE are longer."""
    status = "WARN" if stats.share_over > WARN_SHARE else "PASS"
    return Check("lengths", status, stats.summary())


def length_stats(lengths: Sequence[int], max_length: int) -> LengthStats:
    return LengthStats(tuple(lengths), max_length)
