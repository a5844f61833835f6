"""Exact grouping and MinHash LSH near-duplicate detection (datasketch signatures)."""

from __future__ import annotations

import random
from pathlib import Path

import numpy as np
import pytest

from tunesmith.prep.dedup import (
    MinHasher,
    SignatureStore,
    estimated_jaccard,
    first_of_group,
    lsh_params,
    near_pairs,
)
from tunesmith.prep.normalize import normalize_text, shingles

VOCAB = [f"w{i}" for i in range(500)]


def text(seed: int, n: int = 60) -> str:
    rng = random.Random(seed)
    return " ".join(rng.choice(VOCAB) for _ in range(n))


def true_jaccard(a: str, b: str, n: int = 5) -> float:
    sa, sb = set(shingles(a, n)), set(shingles(b, n))
    return len(sa & sb) / len(sa | sb)


def store_of(tmp_path: Path, texts: list[str], hasher: MinHasher) -> SignatureStore:
    store = SignatureStore(tmp_path / "sig.bin", hasher.num_perm)
    for t in texts:
        store.append(hasher.signature(normalize_text(t)))
    return store


def test_first_of_group_keeps_input_order() -> None:
    keys = np.array([5, 3, 5, 7, 3, 5], dtype=np.uint64)
    assert first_of_group(keys).tolist() == [0, 1, 0, 3, 1, 0]
    assert first_of_group(np.zeros(0, dtype=np.uint64)).tolist() == []


def test_signature_is_deterministic_and_estimates_jaccard() -> None:
    hasher = MinHasher(num_perm=256, ngram=5)
    a = text(1, 100)
    b = a + " extra words at the end"  # 96 of 101 shingles shared
    sig_a, sig_b = hasher.signature(a), hasher.signature(b)
    assert sig_a.dtype == np.uint32 and sig_a.shape == (256,)
    assert np.array_equal(sig_a, MinHasher(num_perm=256, ngram=5).signature(a))
    assert float(estimated_jaccard(sig_a, sig_b)) == pytest.approx(true_jaccard(a, b), abs=0.08)


def test_near_duplicate_positive_and_negative(tmp_path: Path) -> None:
    base = text(1)
    near = base + " indeed"  # one shingle added: Jaccard 56/57
    half = " ".join(base.split()[:30] + text(2).split()[:30])  # Jaccard ~ 0.3
    unrelated = text(3)
    assert true_jaccard(base, near) > 0.95 and true_jaccard(base, half) < 0.5
    store = store_of(tmp_path, [base, unrelated, half, near], MinHasher())
    later, earlier, sims = near_pairs(store, threshold=0.8)
    assert list(zip(later.tolist(), earlier.tolist(), strict=True)) == [(3, 0)]
    assert sims[0] >= 0.9


def test_short_texts_are_one_shingle(tmp_path: Path) -> None:
    store = store_of(tmp_path, ["a b c", "a b c", "a b d"], MinHasher())
    later, earlier, _ = near_pairs(store, threshold=0.8)
    assert list(zip(later.tolist(), earlier.tolist(), strict=True)) == [(1, 0)]


def test_threshold_matters(tmp_path: Path) -> None:
    base = text(5, 40)
    words = base.split()
    words[20] = "changed"  # 5 of 36 shingles change: Jaccard 31/41 ~ 0.76
    variant = " ".join(words)
    store = store_of(tmp_path, [base, variant], MinHasher(num_perm=256))
    assert len(near_pairs(store, threshold=0.6)[0]) == 1
    assert len(near_pairs(store, threshold=0.9)[0]) == 0


def test_store_reads_back_in_chunks_and_rows(tmp_path: Path) -> None:
    store = SignatureStore(tmp_path / "s.bin", 4)
    for i in range(10):
        store.append(np.arange(4, dtype=np.uint32) + i)
    chunks = list(store.chunks(chunk_rows=3))
    assert [len(c) for c in chunks] == [3, 3, 3, 1]
    assert np.concatenate(chunks)[7].tolist() == [7, 8, 9, 10]
    assert store.take(np.array([9, 2, 9])).tolist() == [
        [9, 10, 11, 12],
        [2, 3, 4, 5],
        [9, 10, 11, 12],
    ]


def test_lsh_params_come_from_datasketch() -> None:
    bands, rows = lsh_params(0.8, 128)
    assert bands * rows <= 128 and bands >= 2
    assert lsh_params(0.5, 128)[0] > bands  # a lower threshold needs more, shorter bands
