"""Pre-flight for retrieval pairs (``embed``): what a contrastive batch will be made of.

Entry point: :func:`preflight_retrieval` ``(train, held_out, tokenizer, cfg, world)`` on the
pairs read by :func:`tunesmith.data.retrieval_pairs.split_pairs` (a row with an empty query or
positive is already a reading error naming its file, line and field); no model is run. The
checks, in report order:

1. ``pairs``: how many train / held-out pairs (and how many carry a hard negative); FAIL when a
   contrastive step would have nothing to contrast: fewer than two training pairs, or one pair
   per step (``micro_batch_size x processes`` = 1) with no hard negatives;
2. ``identical-pairs``: WARN for pairs whose positive (or hard negative) is the query itself, or
   whose hard negative is its own positive (a negative that is the answer);
3. ``duplicate-positives``: WARN when one passage is the positive of several training pairs with
   different queries: two such pairs in one batch make each other's positive a *false negative*
   (InfoNCE pushes the query away from its own answer); the chance that a batch of ``B`` pairs
   holds such a collision is given;
4. ``truncation``: the share of queries, positives and negatives longer than ``data.max_length``
   tokens (WARN above :data:`~tunesmith.checks.preflight.WARN_SHARE`).
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Sequence
from typing import Any

from tunesmith.checks.checks import Check
from tunesmith.checks.preflight import WARN_SHARE
from tunesmith.checks.render import RenderedExample, rendered
from tunesmith.data.retrieval_pairs import Pair
from tunesmith.data.templates import IGNORE_INDEX, Encoded

_SHOWN = 3  # example locations named in a detail


def _where(pairs: Sequence[Pair]) -> str:
    more = f" (+{len(pairs) - _SHOWN} more)" if len(pairs) > _SHOWN else ""
    return ", ".join(f"{x.source}:{x.line}" for x in pairs[:_SHOWN]) + more


def check_pairs(
    train: Sequence[Pair], held_out: Sequence[Pair], batch: int, negatives: str
) -> Check:
    """1. Enough pairs for a contrastive step; the counts of each split."""
    with_neg = sum(x.negative is not None for x in train)
    line = (
        f"{len(train)} train / {len(held_out)} held-out pairs, {with_neg} with a hard negative; "
        f"{batch} pairs per contrastive batch"
    )
    if len(train) < 2:
        return Check("pairs", "FAIL", f"{line}: in-batch negatives need >= 2 training pairs")
    if batch < 2 and negatives == "none":
        return Check(
            "pairs",
            "FAIL",
            f"{line}: one pair per batch and embed.hard_negatives=none leaves no negative (the "
            "loss is 0); raise train.micro_batch_size or use hard negatives",
        )
    return Check("pairs", "PASS", line)


def check_identical(train: Sequence[Pair]) -> Check:
    """2. No pair whose positive or negative is its query, or whose negative is its positive."""
    same = [x for x in train if x.positive.strip() == x.query.strip()]
    neg_query = [
        x for x in train if x.negative is not None and x.negative.strip() == x.query.strip()
    ]
    neg_pos = [
        x for x in train if x.negative is not None and x.negative.strip() == x.positive.strip()
    ]
    problems = [
        f"{len(same)} with positive == query ({_where(same)})" if same else "",
        f"{len(neg_query)} with negative == query ({_where(neg_query)})" if neg_query else "",
        f"{len(neg_pos)} with negative == positive ({_where(neg_pos)})" if neg_pos else "",
    ]
    found = "; ".join(p for p in problems if p)
    if found:
        return Check("identical-pairs", "WARN", f"{found}: nothing to learn, or a wrong signal")
    return Check("identical-pairs", "PASS", "every query differs from its positive and negative")


def collision_chance(groups: Sequence[int], n: int, batch: int) -> float:
    """The chance that ``batch`` pairs drawn without replacement from ``n`` hold two pairs of one
    group (``groups``: the sizes of the groups sharing a positive), assuming groups are rare
    enough that collisions in distinct groups are independent."""
    if batch < 2 or n < 2:
        return 0.0
    clear = 1.0
    for g in groups:  # P(at most one of the group's g pairs among the batch's picks)
        none = _hypergeometric_zero(n, g, batch)
        one = g * batch / n * _hypergeometric_zero(n - 1, g - 1, batch - 1)
        clear *= min(1.0, none + one)
    return 1.0 - clear


def _hypergeometric_zero(n: int, g: int, k: int) -> float:
    """P(no item of a group of ``g`` among ``k`` drawn from ``n`` without replacement)."""
    p = 1.0
    for i in range(k):
        if n - i <= 0:
            return 0.0
        p *= max(0.0, (n - g - i) / (n - i))
    return p


def check_duplicate_positives(train: Sequence[Pair], batch: int) -> Check:
    """3. Passages that are the positive of several distinct queries: false in-batch negatives."""
    by_positive: dict[str, list[Pair]] = defaultdict(list)
    for x in train:
        by_positive[x.positive.strip()].append(x)
    shared = [ps for ps in by_positive.values() if len({p.query.strip() for p in ps}) > 1]
    if not shared:
        return Check("duplicate-positives", "PASS", "every positive belongs to one query")
    pairs = sum(len(ps) for ps in shared)
    chance = collision_chance([len(ps) for ps in shared], len(train), batch)
    first = shared[0]
    return Check(
        "duplicate-positives",
        "WARN",
        f"{len(shared)} passage(s) are the positive of several queries ({pairs} pairs; e.g. "
        f"{_where(first)}); in one batch they are each other's false negatives: "
        f"~{chance:.0%} of {batch}-pair batches hold such a collision. Merge those queries' "
        "rows or deduplicate the passages",
    )


def check_truncation(pairs: Sequence[Pair], tokenizer: Any, max_length: int) -> Check:
    """4. The share of texts longer than ``max_length`` tokens, per field."""
    fields = {
        "queries": [x.query for x in pairs],
        "positives": [x.positive for x in pairs],
        "negatives": [x.negative for x in pairs if x.negative is not None],
    }
    shares, worst = [], 0.0
    for name, texts in fields.items():
        if not texts:
            continue
        lengths = [len(ids) for ids in tokenizer(texts)["input_ids"]]
        over = sum(n > max_length for n in lengths) / len(texts)
        worst = max(worst, over)
        shares.append(f"{name} {over:.0%} (longest {max(lengths)})")
    detail = f"longer than data.max_length={max_length} tokens: " + ", ".join(shares)
    status = "WARN" if worst > WARN_SHARE else "PASS"
    return Check("truncation", status, detail + (" (cut at the end)" if worst else ""))


def preflight_retrieval(
    train: Sequence[Pair], held_out: Sequence[Pair], tokenizer: Any, cfg: Any, world: int = 1
) -> list[Check]:
    """Every check above, in order (``world``: the processes a contrastive batch spans)."""
    batch = cfg.train.micro_batch_size * world  # embeddings are gathered across processes
    return [
        check_pairs(train, held_out, batch, cfg.embed.hard_negatives),
        check_identical(train),
        check_duplicate_positives(train, batch),
        check_truncation([*train, *held_out], tokenizer, cfg.data.max_length),
    ]


def render_pairs(
    pairs: Sequence[Pair], tokenizer: Any, max_length: int, n: int
) -> list[RenderedExample]:
    """The first ``n`` pairs' texts as the encoder reads them (truncated): query, positive and
    negative, each named with its file and line."""
    out = []
    for x in pairs[:n]:
        sides = [("query", x.query), ("positive", x.positive), ("negative", x.negative)]
        for side, text in sides:
            if text is None:
                continue
            full = len(tokenizer(text)["input_ids"])
            ids = list(tokenizer(text, truncation=True, max_length=max_length)["input_ids"])
            enc = Encoded(ids, [IGNORE_INDEX] * len(ids), 0, full > max_length)
            out.append(rendered(enc, tokenizer, f"{x.source}:{x.line} {side}"))
    return out
