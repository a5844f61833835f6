"""Exact and near-duplicate detection over compact per-record state.

Exact: a 64-bit hash of the normalised text per record; records sharing a hash form a group whose
first member (in input order) is the original.

Near: a datasketch :class:`~datasketch.MinHash` signature (``num_perm`` uint32 values) of each
record's word-shingle set is appended to a file on disk, so RAM holds no signatures. The band
layout ``(b, r)`` comes from datasketch's :class:`~datasketch.MinHashLSH` optimiser for the
threshold; bucketing is done as MinHashLSH does it (two records are candidates when all ``r``
values of some band are equal) but with numpy sorts over 64-bit band hashes (8 bytes per band and
record), because MinHashLSH's in-memory index costs about 3.5 KB per record. Each record is
compared with the first and the previous member of every bucket it falls in, and a candidate
counts only if the signatures' estimated Jaccard similarity reaches the threshold.
"""

from __future__ import annotations

import inspect
import os
import zlib
from collections.abc import Iterator
from pathlib import Path
from typing import BinaryIO

import numpy as np
from datasketch import MinHash, MinHashLSH

from tunesmith.prep.normalize import shingles

# datasketch >= 2.0 takes the permutation scheme explicitly when permutations are passed in;
# 1.x has one (legacy) scheme and no such argument.
_SCHEME: dict[str, str] = (
    {"scheme": "affine32"} if "scheme" in inspect.signature(MinHash).parameters else {}
)
_CHUNK_ROWS = 8192  # rows of signatures per numpy step: ~4 MB at 128 permutations


class MinHasher:
    """datasketch MinHash signatures of word shingles, with the permutations built once."""

    def __init__(self, num_perm: int = 128, ngram: int = 5, seed: int = 1) -> None:
        self.num_perm = num_perm
        self.ngram = ngram
        self._seed = seed
        self._permutations = MinHash(num_perm=num_perm, seed=seed).permutations

    def signature(self, normalized: str) -> np.ndarray:
        """The ``uint32[num_perm]`` signature of normalised text's word shingles."""
        sketch = MinHash(
            num_perm=self.num_perm,
            seed=self._seed,
            permutations=self._permutations,
            hashfunc=zlib.crc32,  # fast, and stable across processes (unlike hash())
            **_SCHEME,
        )
        sketch.update_batch(shingles(normalized, self.ngram))
        return np.asarray(sketch.hashvalues, dtype=np.uint32)


def estimated_jaccard(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Row-wise share of equal signature values: the MinHash estimate of Jaccard similarity."""
    return np.asarray((a == b).mean(axis=-1), dtype=np.float32)


def lsh_params(threshold: float, num_perm: int) -> tuple[int, int]:
    """``(bands, rows per band)`` that datasketch's MinHashLSH picks for ``threshold``."""
    index = MinHashLSH(threshold=threshold, num_perm=num_perm)
    return index.b, index.r


class SignatureStore:
    """Signatures appended to a binary file, read back in chunks or by row (never all at once)."""

    def __init__(self, path: Path, num_perm: int) -> None:
        self.path = path
        self.num_perm = num_perm
        self.rows = 0
        self._fh: BinaryIO | None = path.open("wb")
        self._row_bytes = num_perm * 4

    def append(self, signature: np.ndarray) -> None:
        assert self._fh is not None, "store is closed for writing"
        self._fh.write(signature.astype(np.uint32, copy=False).tobytes())
        self.rows += 1

    def close(self) -> None:
        if self._fh is not None:
            self._fh.close()
            self._fh = None

    def chunks(self, chunk_rows: int = _CHUNK_ROWS) -> Iterator[np.ndarray]:
        """All signatures in order, as ``[<=chunk_rows, num_perm]`` arrays."""
        self.close()
        with self.path.open("rb") as fh:
            for _ in range(0, self.rows, chunk_rows):
                flat = np.fromfile(fh, dtype=np.uint32, count=chunk_rows * self.num_perm)
                yield flat.reshape(-1, self.num_perm)

    def take(self, rows: np.ndarray) -> np.ndarray:
        """The signatures of ``rows`` (any order, repeats allowed) as ``[len(rows), num_perm]``."""
        self.close()
        wanted, inverse = np.unique(rows, return_inverse=True)
        out = np.empty((len(wanted), self.num_perm), dtype=np.uint32)
        fd = os.open(self.path, os.O_RDONLY)
        try:
            for i, row in enumerate(wanted.tolist()):
                data = os.pread(fd, self._row_bytes, row * self._row_bytes)
                out[i] = np.frombuffer(data, dtype=np.uint32)
        finally:
            os.close(fd)
        return out[inverse.reshape(-1)]


def first_of_group(keys: np.ndarray) -> np.ndarray:
    """For each position, the first position (in order) holding the same key."""
    n = len(keys)
    if n == 0:
        return np.zeros(0, dtype=np.int64)
    order = np.argsort(keys, kind="stable")
    ordered = keys[order]
    starts = np.ones(n, dtype=bool)
    starts[1:] = ordered[1:] != ordered[:-1]
    start_pos = np.maximum.accumulate(np.where(starts, np.arange(n), 0))
    first = np.empty(n, dtype=np.int64)
    first[order] = order[start_pos]
    return first


def band_hashes(store: SignatureStore, bands: int, rows: int) -> np.ndarray:
    """``uint64[n, bands]``: per signature, a hash of each band's ``rows`` values."""
    rng = np.random.default_rng(0x5EED)
    mult = rng.integers(1, 2**63, size=rows, dtype=np.uint64) | np.uint64(1)
    out = np.empty((store.rows, bands), dtype=np.uint64)
    start = 0
    for chunk in store.chunks():
        part = chunk[:, : bands * rows].astype(np.uint64).reshape(len(chunk), bands, rows)
        with np.errstate(over="ignore"):
            out[start : start + len(chunk)] = (part * mult).sum(axis=2, dtype=np.uint64)
        start += len(chunk)
    return out


def _bucket_pairs(keys: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """``(later, earlier)`` pairs: each position with its bucket's first and previous member."""
    n = len(keys)
    order = np.argsort(keys, kind="stable")
    ordered = keys[order]
    same = np.zeros(n, dtype=bool)
    same[1:] = ordered[1:] == ordered[:-1]
    start_pos = np.maximum.accumulate(np.where(same, 0, np.arange(n)))
    members = np.flatnonzero(same)
    later = np.concatenate([order[members], order[members]])
    earlier = np.concatenate([order[start_pos[members]], order[members - 1]])
    return later, earlier


def near_pairs(
    store: SignatureStore, threshold: float
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Verified near-duplicate pairs ``(later, earlier, similarity)`` among the stored rows.

    Rows are in input order; pairs come sorted by ``later`` then ``earlier``, each once.
    """
    n = store.rows
    empty = np.zeros(0, dtype=np.int64)
    if n < 2:
        return empty, empty, np.zeros(0, dtype=np.float32)
    bands, rows = lsh_params(threshold, store.num_perm)
    table = band_hashes(store, bands, rows)
    found = [_bucket_pairs(table[:, band]) for band in range(bands)]
    del table
    later = np.concatenate([f[0] for f in found])
    earlier = np.concatenate([f[1] for f in found])
    pair_keys = np.unique(later * n + earlier)
    later, earlier = pair_keys // n, pair_keys % n
    sims = np.empty(len(later), dtype=np.float32)
    for start in range(0, len(later), _CHUNK_ROWS):
        part = slice(start, start + _CHUNK_ROWS)
        both = store.take(np.concatenate([later[part], earlier[part]]))
        half = len(both) // 2
        sims[part] = estimated_jaccard(both[:half], both[half:])
    hit = sims >= threshold
    return later[hit], earlier[hit], sims[hit]
