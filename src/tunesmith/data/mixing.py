"""Deterministic dataset mixing: per-dataset weights or counts, task temperature, replay.

All sampling is a pure function of the seed, so the same config always gives the same mixture.
"""

from __future__ import annotations

import random
from collections.abc import Mapping


def draw(n_target: int, size: int, rng: random.Random) -> list[int]:
    """``n_target`` indices into ``range(size)``: whole copies of the dataset first, then a
    sample without replacement for the remainder (upsampling never over-weights one example by
    more than one copy)."""
    if size <= 0:
        return []
    copies, rest = divmod(n_target, size)
    return [i for _ in range(copies) for i in range(size)] + sorted(rng.sample(range(size), rest))


def temperature_counts(sizes: Mapping[str, int], temperature: float) -> dict[str, int]:
    """Examples per task for temperature sampling (Arivazhagan et al. 2019; mT5, Xue et al. 2021):

        p_k = n_k^(1/T) / sum_j n_j^(1/T),      count_k = round(p_k * sum_j n_j)

    T = 1 keeps the natural proportions; larger T flattens towards uniform over tasks, so small
    tasks are upsampled and large ones downsampled while the epoch keeps its total size.
    """
    total = sum(sizes.values())
    scaled = {k: n ** (1.0 / temperature) for k, n in sizes.items() if n > 0}
    norm = sum(scaled.values())
    return {k: round(total * v / norm) for k, v in scaled.items()}


def replay_count(n_main: int, fraction: float) -> int:
    """Replay examples so that they are ``fraction`` of the epoch: r / (n_main + r) = fraction."""
    return round(n_main * fraction / (1.0 - fraction))
