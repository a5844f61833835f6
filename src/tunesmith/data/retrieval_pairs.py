"""Query/passage pairs for retriever fine-tuning: reading, held-out split, eval corpus, collation.

A row holds a query, its relevant passage and optionally a hard-negative passage (JSONL, JSON,
CSV, parquet or a saved dataset; field names configurable). Every problem names FILE:LINE and
the field. The held-out split is :mod:`tunesmith.data.split`'s one rule.

Evaluation ranks a corpus for each held-out query: the corpus is every distinct passage of the
train and held-out pairs (positives and negatives), so a held-out query competes against every
passage the model could confuse it with; its relevant set is every passage paired with that
query text."""

from __future__ import annotations

from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import torch

from tunesmith.config.embed import EmbedDataSection
from tunesmith.data.readers import iter_rows
from tunesmith.data.records import DataError
from tunesmith.data.split import cap_held_out, hold_out


@dataclass(frozen=True)
class Pair:
    source: str
    line: int
    query: str
    positive: str
    negative: str | None = None


@dataclass
class RetrievalSet:
    """Held-out queries, the corpus they are ranked against, and each query's relevant set."""

    queries: list[str]
    corpus: list[str]
    relevant: list[set[int]] = field(default_factory=list)


def _text(row: dict[str, Any], name: str, source: str, line: int, required: bool) -> str | None:
    if name not in row or row[name] is None or row[name] == "":
        if not required:
            return None
        raise DataError(source, line, name, f"missing or empty; the row has {sorted(row)}")
    value = row[name]
    if not isinstance(value, str) or not value.strip():
        raise DataError(source, line, name, f"expected non-empty text, got {value!r}")
    return value


def read_pairs(path: str | Path, query: str, positive: str, negative: str) -> list[Pair]:
    """Every row of a pair file as a :class:`Pair` (``negative`` optional per row)."""
    source = str(path)
    out = []
    for line, row in iter_rows(path):
        q = _text(row, query, source, line, required=True)
        p = _text(row, positive, source, line, required=True)
        n = _text(row, negative, source, line, required=False)
        assert q is not None and p is not None
        out.append(Pair(source, line, q, p, n))
    if not out:
        raise DataError(source, None, None, "no rows")
    return out


def files(spec: str | list[str] | None) -> list[str]:
    return [] if spec is None else ([spec] if isinstance(spec, str) else list(spec))


def split_pairs(
    data: EmbedDataSection, query: str, positive: str, negative: str
) -> tuple[list[Pair], list[Pair]]:
    """(train, held-out) pairs: the validation files, else ``val_fraction`` of train."""
    train = [x for f in data.train for x in read_pairs(f, query, positive, negative)]
    held_files = files(data.validation)
    if held_files:
        held = [x for f in held_files for x in read_pairs(f, query, positive, negative)]
        return train, cap_held_out(held, data.max_val_examples, data.seed)
    return hold_out(train, data.val_fraction, data.seed, data.max_val_examples)


def retrieval_set(train: list[Pair], held_out: list[Pair]) -> RetrievalSet:
    """The held-out queries (distinct, in order) against every passage of both splits."""
    corpus: dict[str, int] = {}
    for x in [*held_out, *train]:
        for text in (x.positive, x.negative):
            if text is not None and text not in corpus:
                corpus[text] = len(corpus)
    queries: dict[str, set[int]] = {}
    for x in held_out:
        queries.setdefault(x.query, set()).add(corpus[x.positive])
    return RetrievalSet(list(queries), list(corpus), list(queries.values()))


def with_mined_negatives(
    pairs: list[Pair], scores: torch.Tensor, passages: list[str]
) -> list[Pair]:
    """Each pair's hard negative: the highest-scoring passage that is not its own positive.

    ``scores`` [N, P]: pair i's query against ``passages`` (the distinct training positives)."""
    out = []
    for i, x in enumerate(pairs):
        order = torch.argsort(scores[i], descending=True, stable=True).tolist()
        best = next((passages[j] for j in order if passages[j] != x.positive), None)
        out.append(replace(x, negative=best))
    return out


def tokenize(tokenizer: Any, texts: list[str], max_length: int) -> dict[str, torch.Tensor]:
    """Right-padded ``input_ids`` / ``attention_mask`` [N, T] (``token_type_ids`` if the
    tokenizer makes them) for one forward over every text."""
    enc = tokenizer(
        texts, truncation=True, max_length=max_length, padding=True, return_tensors="pt"
    )
    return dict(enc)


def collate_pairs(
    tokenizer: Any, pairs: list[Pair], max_length: int, use_negatives: bool
) -> dict[str, Any]:
    """One batch holding the B queries, then the B positives, then the M negatives present:
    ``input_ids`` [2B+M, T] and the counts ``n_queries`` = B, ``n_negatives`` = M."""
    negatives = [x.negative for x in pairs if use_negatives and x.negative is not None]
    texts = [x.query for x in pairs] + [x.positive for x in pairs] + negatives
    batch = tokenize(tokenizer, texts, max_length)
    return {**batch, "n_queries": len(pairs), "n_negatives": len(negatives)}
