"""Decisions after the first pass: duplicates, per-tag caps, splits and the leakage fix.

All of it works on the compact arrays of :class:`~tunesmith.prep.ledger.Records`; record ids are
in input order, so "the first occurrence is kept" is simply "the smallest id wins".
"""

from __future__ import annotations

import difflib
from dataclasses import dataclass, field

import numpy as np

from tunesmith.config import ConfigError
from tunesmith.prep.config import PrepConfig
from tunesmith.prep.dedup import SignatureStore, first_of_group, near_pairs
from tunesmith.prep.ledger import KEPT, REFERENCE, Records, rule_code
from tunesmith.prep.split import assign_splits, cap_per_tag, fix_leakage

Links = list[tuple[int, int]]


@dataclass
class Decisions:
    """What the decision step found, for the report."""

    near_pairs: int = 0
    links: int = 0
    moved: dict[str, int] = field(default_factory=dict)
    ratios: tuple[float, float, float] = (1.0, 0.0, 0.0)


def exact_duplicates(
    records: Records, item_rid: np.ndarray, hashes: np.ndarray, remove: bool
) -> Links:
    """Mark exact duplicates (of a test-file row: ``test_overlap``; else ``exact_duplicate``
    when ``remove``); return the links between kept duplicates when not removing."""
    first = first_of_group(hashes)
    dup = np.flatnonzero(first != np.arange(len(first)))
    dup_rid, orig_rid = item_rid[dup], item_rid[first[dup]]
    inputs = records.status[dup_rid] != REFERENCE
    dup_rid, orig_rid = dup_rid[inputs], orig_rid[inputs]
    overlap = records.status[orig_rid] == REFERENCE
    records.status[dup_rid[overlap]] = rule_code("test_overlap")
    records.of[dup_rid[overlap]] = orig_rid[overlap]
    records.similarity[dup_rid[overlap]] = 1.0
    dup_rid, orig_rid = dup_rid[~overlap], orig_rid[~overlap]
    if not remove:
        return list(zip(dup_rid.tolist(), orig_rid.tolist(), strict=True))
    records.status[dup_rid] = rule_code("exact_duplicate")
    records.of[dup_rid] = orig_rid
    records.similarity[dup_rid] = 1.0
    return []


def near_duplicates(
    records: Records, item_rid: np.ndarray, store: SignatureStore, threshold: float, remove: bool
) -> tuple[Links, int]:
    """Mark near-duplicates of test-file rows (``test_overlap``) and, when ``remove``, of
    earlier kept rows (``near_duplicate``); otherwise return links between kept near-duplicates.
    Returns ``(links, verified pairs)``."""
    later, earlier, sims = near_pairs(store, threshold)
    status = records.status
    links: Links = []
    for j, i, sim in zip(
        item_rid[later].tolist(), item_rid[earlier].tolist(), sims.tolist(), strict=True
    ):
        if status[j] != KEPT:  # a test-file row, or already removed
            continue
        if status[i] == REFERENCE:
            records.mark(j, "test_overlap", i, sim)
        elif status[i] != KEPT:
            continue
        elif remove:
            records.mark(j, "near_duplicate", i, sim)
        else:
            links.append((j, i))
    return links, len(later)


def _check_tags(cap: dict[str, int], seen: list[str]) -> None:
    """A cap for a tag no record carries is a typo, not a no-op."""
    known = sorted(t for t in seen if t)
    for tag in cap:
        if tag not in known:
            close = difflib.get_close_matches(tag, known, n=1)
            hint = f"; did you mean '{close[0]}'?" if close else ""
            raise ConfigError(
                f"field 'balance.cap_per_tag.{tag}': unknown tag '{tag}'{hint} "
                f"(tags in the data: {', '.join(known) or 'none'})"
            )


def decide(
    records: Records,
    item_rid: np.ndarray,
    hashes: np.ndarray,
    store: SignatureStore | None,
    cfg: PrepConfig,
) -> Decisions:
    """Duplicates, caps, splits and leakage, in that order; fills ``records`` in place."""
    r = cfg.splits.ratios
    out = Decisions(ratios=(r.train, r.validation, r.test))
    check = cfg.splits.leakage_check
    links = exact_duplicates(records, item_rid, hashes, remove=cfg.dedup.exact)
    if store is not None:
        near_links, out.near_pairs = near_duplicates(
            records, item_rid, store, cfg.dedup.threshold, remove=cfg.dedup.near
        )
        links += near_links
    kept = np.flatnonzero(records.status == KEPT)
    cap = cfg.balance.cap_per_tag
    if isinstance(cap, dict):
        _check_tags(cap, records.tags)
    if cap is not None:
        capped = cap_per_tag(kept, records.tag[kept], records.tags, cap, cfg.splits.seed)
        records.status[capped] = rule_code("cap")
        kept = np.flatnonzero(records.status == KEPT)
    records.split[kept] = assign_splits(
        kept, records.tag[kept], records.tags, out.ratios, cfg.splits.seed, cfg.splits.stratify
    )
    if check:
        out.links = len(links)
        out.moved = fix_leakage(records.split, links)
    return out
