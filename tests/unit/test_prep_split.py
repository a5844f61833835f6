"""Deterministic, stratified splits; per-tag caps; the leakage fix."""

from __future__ import annotations

import numpy as np

from tunesmith.prep.split import (
    TEST,
    TRAIN,
    VALIDATION,
    UnionFind,
    assign_splits,
    cap_per_tag,
    fix_leakage,
    split_counts,
)

NAMES = ["qa", "math", "code"]


def data(n: int = 300) -> tuple[np.ndarray, np.ndarray]:
    ids = np.arange(n, dtype=np.int64) * 2 + 5  # ids need not be contiguous
    tags = np.array([0] * (n // 2) + [1] * (n // 3) + [2] * (n - n // 2 - n // 3), dtype=np.uint32)
    return ids, np.random.default_rng(0).permutation(tags)


def test_split_counts_round_half_up_and_fit() -> None:
    assert split_counts(100, 0.1, 0.1) == (10, 10)
    assert split_counts(5, 0.1, 0.1) == (1, 1)  # 0.5 rounds up
    assert split_counts(4, 0.1, 0.1) == (0, 0)
    assert split_counts(1, 0.6, 0.6) == (1, 0)


def test_same_seed_same_split_other_seed_other_split() -> None:
    ids, tags = data()
    a = assign_splits(ids, tags, NAMES, (0.8, 0.1, 0.1), seed=1)
    assert np.array_equal(a, assign_splits(ids, tags, NAMES, (0.8, 0.1, 0.1), seed=1))
    assert not np.array_equal(a, assign_splits(ids, tags, NAMES, (0.8, 0.1, 0.1), seed=2))


def test_stratified_per_tag() -> None:
    ids, tags = data()
    codes = assign_splits(ids, tags, NAMES, (0.8, 0.1, 0.1), seed=3, stratify=True)
    for code in range(3):
        members = codes[tags == code]
        n_val, n_test = split_counts(len(members), 0.1, 0.1)
        assert (members == VALIDATION).sum() == n_val and (members == TEST).sum() == n_test
    # A tag's split does not depend on the other tags (the generator is keyed by tag name).
    only_qa = tags == 0
    alone = assign_splits(ids[only_qa], tags[only_qa], NAMES, (0.8, 0.1, 0.1), seed=3)
    assert np.array_equal(alone, codes[only_qa])


def test_unstratified_uses_overall_ratios() -> None:
    ids, tags = data(101)
    codes = assign_splits(ids, tags, NAMES, (0.5, 0.25, 0.25), seed=0, stratify=False)
    assert [int((codes == c).sum()) for c in (TRAIN, VALIDATION, TEST)] == [51, 25, 25]


def test_cap_per_tag_is_deterministic_and_exact() -> None:
    ids, tags = data()
    removed = cap_per_tag(ids, tags, NAMES, 20, seed=9)
    assert np.array_equal(removed, cap_per_tag(ids, tags, NAMES, 20, seed=9))
    kept = np.setdiff1d(ids, removed)
    kept_tags = tags[np.searchsorted(ids, kept)]
    assert np.bincount(kept_tags).tolist() == [20, 20, 20]
    by_name = cap_per_tag(ids, tags, NAMES, {"math": 10}, seed=9)
    assert len(by_name) == 100 - 10 and set(tags[np.searchsorted(ids, by_name)].tolist()) == {1}
    assert len(cap_per_tag(ids, tags, NAMES, 1000, seed=9)) == 0


def test_union_find_groups() -> None:
    sets = UnionFind()
    for a, b in [(1, 2), (3, 4), (2, 4), (10, 11)]:
        sets.union(a, b)
    groups = sorted(sorted(g) for g in sets.groups().values())
    assert groups == [[1, 2, 3, 4], [10, 11]]
    assert sets.find(4) == sets.find(1) == 1 and sets.find(99) == 99


def test_fix_leakage_moves_groups_into_one_split() -> None:
    split = np.array([0, TRAIN, VALIDATION, TEST, TEST, VALIDATION, TRAIN, 0], dtype=np.uint8)
    moved = fix_leakage(split, [(2, 1), (3, 2), (5, 4), (7, 6)])
    # {1,2,3} touches train -> all train; {4,5} -> validation; 7 is not kept (0): ignored.
    assert split.tolist() == [0, TRAIN, TRAIN, TRAIN, VALIDATION, VALIDATION, TRAIN, 0]
    assert moved == {"validation->train": 1, "test->train": 1, "test->validation": 1}
    assert fix_leakage(split, [(2, 1)]) == {}


def test_empty_inputs() -> None:
    empty = np.zeros(0, dtype=np.int64)
    tags = np.zeros(0, dtype=np.uint32)
    assert assign_splits(empty, tags, NAMES, (0.8, 0.1, 0.1), seed=0).tolist() == []
    assert cap_per_tag(empty, tags, NAMES, 3, seed=0).tolist() == []
