"""Pre-flight for labelled texts (``classify``): the label sets and what truncation keeps.

Entry point: :func:`preflight_labels` ``(train, held_out, tokenizer, cfg, *, pad_id)`` on the
rows read by :func:`tunesmith.data.labelled.read_labelled` (after the held-out split); no model is
run. The checks, in report order:

1. ``labels``: the label distribution of train and held-out; FAIL with fewer than two labels;
2. ``unseen-labels``: FAIL when a held-out label never occurs in training (the model cannot
   predict it);
3. ``rare-labels``: WARN for a label with a single training example;
4. ``truncation``: the share of texts longer than ``data.max_length`` tokens (WARN above
   :data:`~tunesmith.checks.preflight.WARN_SHARE`);
5. ``padding`` (decoder backbones, ``pad_id`` given): no text holds the padding token, where the
   classifier, pooling at the last non-padding token, would read it.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Sequence
from typing import Any

from tunesmith.checks.checks import Check
from tunesmith.checks.lengths import LengthStats, length_stats
from tunesmith.checks.preflight import WARN_SHARE
from tunesmith.checks.render import RenderedExample, rendered
from tunesmith.data.labelled import LabelledText
from tunesmith.data.templates import IGNORE_INDEX, Encoded

_SHOWN = 3
_LISTED = 8  # labels listed in a distribution before "..."


def _name(x: LabelledText) -> str:
    return f"{x.source}:{x.line}"


def distribution(items: Sequence[LabelledText]) -> str:
    """``label count`` pairs, most frequent first, e.g. ``billing 12, shipping 11``."""
    counts = Counter(x.label for x in items).most_common()
    more = f", ... ({len(counts) - _LISTED} more)" if len(counts) > _LISTED else ""
    return ", ".join(f"{label} {n}" for label, n in counts[:_LISTED]) + more


def check_labels(train: Sequence[LabelledText], held_out: Sequence[LabelledText]) -> Check:
    """1. The distribution of labels in train and held-out; at least two training labels."""
    labels = {x.label for x in train}
    detail = f"train: {distribution(train)}; held-out: {distribution(held_out) or 'none'}"
    if len(labels) < 2:
        return Check(
            "labels", "FAIL", f"classification needs >= 2 training labels, found {len(labels)}"
        )
    return Check("labels", "PASS", f"{len(labels)} labels; {detail}")


def check_unseen(train: Sequence[LabelledText], held_out: Sequence[LabelledText]) -> Check:
    """2. Every held-out label occurs in training."""
    known = {x.label for x in train}
    unseen = [x for x in held_out if x.label not in known]
    if unseen:
        names = sorted({x.label for x in unseen})
        where = ", ".join(_name(x) for x in unseen[:_SHOWN])
        return Check(
            "unseen-labels",
            "FAIL",
            f"{len(unseen)} held-out rows have labels {names} that training never sees ({where}"
            f"{', ...' if len(unseen) > _SHOWN else ''}): the model cannot predict them",
        )
    return Check("unseen-labels", "PASS", "every held-out label occurs in training")


def check_rare(train: Sequence[LabelledText]) -> Check:
    """3. WARN for labels with a single training example."""
    counts = Counter(x.label for x in train)
    single = sorted(label for label, n in counts.items() if n == 1)
    if single:
        return Check(
            "rare-labels",
            "WARN",
            f"{len(single)} label(s) have a single training example: {single[:_LISTED]}",
        )
    least = min(counts.values(), default=0)
    return Check("rare-labels", "PASS", f"every label has >= {least} training examples")


def text_lengths(items: Sequence[LabelledText], tokenizer: Any) -> list[list[int]]:
    """Token ids of every text untruncated, as the method's encoder adds special tokens."""
    if not items:
        return []
    return [list(ids) for ids in tokenizer([x.text for x in items])["input_ids"]]


def check_text_truncation(
    items: Sequence[LabelledText], ids: Sequence[Sequence[int]], max_length: int
) -> Check:
    """4. The share of texts longer than ``max_length`` tokens (cut from the right)."""
    cut = [_name(x) for x, i in zip(items, ids, strict=True) if len(i) > max_length]
    share = len(cut) / max(len(items), 1)
    detail = f"{len(cut)} of {len(items)} texts longer than max_length {max_length} ({share:.1%})"
    if share > WARN_SHARE:
        return Check(
            "truncation",
            "WARN",
            f"{detail}, e.g. {', '.join(cut[:_SHOWN])}: their ends are not read; raise "
            "data.max_length",
        )
    return Check("truncation", "PASS", detail)


def check_pad_token(
    items: Sequence[LabelledText], ids: Sequence[Sequence[int]], pad_id: int
) -> Check:
    """5. No text contains the padding token (a decoder classifier pools at the last
    non-padding token, ignoring the attention mask)."""
    holding = [_name(x) for x, i in zip(items, ids, strict=True) if pad_id in i]
    if holding:
        return Check(
            "padding",
            "FAIL",
            f"{len(holding)} texts contain the padding token (id {pad_id}): "
            f"{', '.join(holding[:_SHOWN])}; the classifier would pool at the wrong position",
        )
    return Check("padding", "PASS", f"no text contains the padding token (id {pad_id})")


def preflight_labels(
    train: Sequence[LabelledText],
    held_out: Sequence[LabelledText],
    tokenizer: Any,
    cfg: Any,
    *,
    pad_id: int | None = None,
) -> list[Check]:
    """Every label check (module docstring); no model is run.

    Args:
        train, held_out: the rows after the held-out split (``read_labelled``).
        tokenizer: the backbone's tokenizer.
        cfg: a ``classify`` config (reads ``data.max_length``).
        pad_id: the decoder backbone's pad id, to check texts for it (None for encoders).
    """
    items = [*train, *held_out]
    ids = text_lengths(items, tokenizer)
    checks = [
        check_labels(train, held_out),
        check_unseen(train, held_out),
        check_rare(train),
        check_text_truncation(items, ids, cfg.data.max_length),
    ]
    if pad_id is not None:
        checks.append(check_pad_token(items, ids, pad_id))
    return checks


def label_lengths(items: Sequence[LabelledText], tokenizer: Any, max_length: int) -> LengthStats:
    """Token lengths of the texts (before truncation) against ``max_length``."""
    return length_stats([len(i) for i in text_lengths(items, tokenizer)], max_length)


def render_texts(
    items: Sequence[LabelledText], tokenizer: Any, max_length: int, n: int
) -> list[RenderedExample]:
    """The first ``n`` texts as the classifier reads them (truncated), named with their label."""
    out = []
    for x in items[:n]:
        full = len(tokenizer(x.text)["input_ids"])
        ids = list(tokenizer(x.text, truncation=True, max_length=max_length)["input_ids"])
        enc = Encoded(ids, [IGNORE_INDEX] * len(ids), 0, full > max_length)
        out.append(rendered(enc, tokenizer, f"{_name(x)} label {x.label!r}"))
    return out
