"""Deterministic train/validation/test splits, per-tag caps, and the leakage fix.

Everything here works on integer record ids and small per-record arrays, never on texts. Split
codes: 1 = train, 2 = validation, 3 = test (0 = not in any split).
"""

from __future__ import annotations

import zlib
from collections.abc import Iterable, Mapping

import numpy as np

SPLITS: tuple[str, ...] = ("train", "validation", "test")
TRAIN, VALIDATION, TEST = 1, 2, 3


def _rng(seed: int, tag: str, salt: int) -> np.random.Generator:
    """A generator fixed by the seed and the tag's name (not by the order tags appear in)."""
    return np.random.default_rng([seed, zlib.crc32(tag.encode("utf-8")), salt])


def _groups(ids: np.ndarray, tags: np.ndarray, names: list[str]) -> dict[str, np.ndarray]:
    """Record ids by tag name, each in input order (``ids`` ascending)."""
    if len(ids) == 0:
        return {}
    order = np.argsort(tags, kind="stable")
    codes, starts = np.unique(tags[order], return_index=True)
    parts = np.split(ids[order], starts[1:])
    return {names[code]: part for code, part in zip(codes.tolist(), parts, strict=True)}


def cap_per_tag(
    ids: np.ndarray, tags: np.ndarray, names: list[str], cap: int | Mapping[str, int], seed: int
) -> np.ndarray:
    """The ids removed so that no tag keeps more than its cap (a seeded random choice).

    ``ids`` are in input order and ``tags[i]`` is the tag code of ``ids[i]``; ``cap`` is one
    number for every tag or a mapping ``tag -> cap`` (tags not in it are not capped).
    """
    removed: list[np.ndarray] = []
    for name, members in _groups(ids, tags, names).items():
        limit = cap if isinstance(cap, int) else cap.get(name)
        if limit is None or len(members) <= limit:
            continue
        keep = _rng(seed, name, 1).choice(len(members), size=limit, replace=False)
        mask = np.ones(len(members), dtype=bool)
        mask[keep] = False
        removed.append(members[mask])
    return np.sort(np.concatenate(removed)) if removed else np.zeros(0, dtype=np.int64)


def split_counts(n: int, validation: float, test: float) -> tuple[int, int]:
    """``(n_validation, n_test)`` for a group of ``n``: rounded half up, never more than ``n``."""
    n_val = min(n, int(np.floor(n * validation + 0.5)))
    n_test = min(n - n_val, int(np.floor(n * test + 0.5)))
    return n_val, n_test


def assign_splits(
    ids: np.ndarray,
    tags: np.ndarray,
    names: list[str],
    ratios: tuple[float, float, float],
    seed: int,
    stratify: bool = True,
) -> np.ndarray:
    """Split codes for ``ids`` (ascending; the result is aligned with it).

    Each tag's records (or, unstratified, all records) are shuffled with a generator fixed by
    the seed and the tag name, then the first ``round(n * validation)`` go to validation, the
    next ``round(n * test)`` to test and the rest to train.
    """
    _, validation, test = ratios
    codes = np.full(len(ids), TRAIN, dtype=np.uint8)
    groups = _groups(ids, tags, names) if stratify else {"all": ids}
    for name, members in groups.items():
        order = _rng(seed, name, 2).permutation(len(members))
        n_val, n_test = split_counts(len(members), validation, test)
        for code, chosen in ((VALIDATION, order[:n_val]), (TEST, order[n_val : n_val + n_test])):
            codes[np.searchsorted(ids, members[chosen])] = code
    return codes


class UnionFind:
    """Disjoint sets over arbitrary integer ids (only the ids that were linked are stored)."""

    def __init__(self) -> None:
        self._parent: dict[int, int] = {}

    def find(self, x: int) -> int:
        parent = self._parent
        root = x
        while parent.get(root, root) != root:
            root = parent[root]
        while x != root:
            parent[x], x = root, parent.get(x, x)
        return root

    def union(self, a: int, b: int) -> None:
        ra, rb = self.find(a), self.find(b)
        if ra != rb:
            self._parent[max(ra, rb)] = min(ra, rb)

    def groups(self) -> dict[int, list[int]]:
        """Root -> members, for every id that was ever linked."""
        out: dict[int, list[int]] = {}
        for x in list(self._parent):
            out.setdefault(self.find(x), []).append(x)
        for root, members in out.items():
            if root not in members:
                members.append(root)
        return out


def fix_leakage(split: np.ndarray, links: Iterable[tuple[int, int]]) -> dict[str, int]:
    """Move linked (duplicate) records so that each group sits in one split; returns the moves.

    ``split[rid]`` is the split code of record ``rid`` (0 = not kept, ignored). A group spread
    over several splits goes wholly to the first of train, validation, test it touches, so the
    held-out splits never share a duplicate with training. Returns ``{"validation->train": k}``.
    """
    sets = UnionFind()
    for a, b in links:
        sets.union(a, b)
    moved: dict[str, int] = {}
    for members in sets.groups().values():
        kept = [rid for rid in members if split[rid]]
        target = min((int(split[rid]) for rid in kept), default=0)
        for rid in kept:
            if split[rid] != target:
                key = f"{SPLITS[split[rid] - 1]}->{SPLITS[target - 1]}"
                moved[key] = moved.get(key, 0) + 1
                split[rid] = target
    return moved
