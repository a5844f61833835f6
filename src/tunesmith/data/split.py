"""The one held-out split every method uses (SFT examples, preference pairs, prompts, labels).

Rule: when no validation file is given, ``fraction`` of the records (at least one, when there are
two or more and ``fraction`` > 0) are held out by a fixed-seed shuffle, so the same records and
seed always give the same split; the held-out records keep their file order. ``cap``
(``max_val_examples``) then keeps a fixed-seed sample of that many, also in file order, whether
the held-out set came from the split or from validation files. An empty held-out set is said
out loud (:func:`held_out_note`), never silently.
"""

from __future__ import annotations

import random
from collections.abc import Sequence
from typing import TypeVar

T = TypeVar("T")


def hold_out(
    items: Sequence[T], fraction: float, seed: int, cap: int | None = None
) -> tuple[list[T], list[T]]:
    """``(train, held_out)``: ``fraction`` of ``items`` held out with a fixed seed."""
    if fraction <= 0 or len(items) < 2:
        return list(items), []
    order = list(range(len(items)))
    random.Random(seed).shuffle(order)
    held = set(order[: max(1, round(fraction * len(items)))])
    train = [x for i, x in enumerate(items) if i not in held]
    val = [x for i, x in enumerate(items) if i in held]
    return train, cap_held_out(val, cap, seed)


def cap_held_out(items: Sequence[T], cap: int | None, seed: int) -> list[T]:
    """At most ``cap`` of ``items``: a fixed-seed sample, in their original order."""
    if cap is None or len(items) <= cap:
        return list(items)
    keep = sorted(random.Random(seed).sample(range(len(items)), cap))
    return [items[i] for i in keep]


def held_out_note(n_val: int, what: str = "examples") -> str | None:
    """The line a run prints when it has nothing to evaluate on, else None."""
    if n_val:
        return None
    return (
        f"[tunesmith] warning: no held-out {what} (no validation file, and val_fraction holds "
        "out none of this data): no evaluation, best/ or early stopping"
    )
