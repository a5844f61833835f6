"""Token-level pre-flight checks on encoded examples and collated batches.

Each check is a pure function of what the training pipeline produced (``Encoded`` examples, a
collated batch, the tokenizer) and returns one :class:`Check`: PASS, WARN, FAIL or SKIP with a
one-line explanation. None of them runs the model.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, Literal

import torch

from tunesmith.data.completion_batches import left_pad
from tunesmith.data.dataset import collate_rows
from tunesmith.data.templates import (
    IGNORE_INDEX,
    ChatTemplateError,
    Encoded,
    end_of_turn_text,
)

Status = Literal["PASS", "WARN", "FAIL", "SKIP"]
_SHOWN = 3  # offending examples named in a detail line


@dataclass(frozen=True)
class Check:
    """The outcome of one check: a short name, a status and a one-line explanation."""

    name: str
    status: Status
    detail: str

    @property
    def failed(self) -> bool:
        return self.status == "FAIL"


def failures(checks: Sequence[Check]) -> list[str]:
    """``"name: detail"`` of every check that FAILs: what :class:`PreflightError` lists (empty
    when training may start)."""
    return [f"{c.name}: {c.detail}" for c in checks if c.failed]


def trained_spans(labels: Sequence[int]) -> list[tuple[int, int]]:
    """Maximal runs ``[start, end)`` of trained positions (label != IGNORE_INDEX)."""
    spans: list[tuple[int, int]] = []
    start: int | None = None
    for i, label in enumerate(labels):
        if label != IGNORE_INDEX and start is None:
            start = i
        elif label == IGNORE_INDEX and start is not None:
            spans.append((start, i))
            start = None
    if start is not None:
        spans.append((start, len(labels)))
    return spans


def end_of_turn_ids(tokenizer: Any, template: str) -> dict[int, str]:
    """Token ids that may end a trained reply: EOS, and the template's end-of-turn marker when
    the tokenizer encodes it as one token."""
    ids: dict[int, str] = {}
    if tokenizer.eos_token_id is not None:
        ids[int(tokenizer.eos_token_id)] = str(tokenizer.eos_token)
    try:
        marker = end_of_turn_text(template, tokenizer)
    except ChatTemplateError:
        return ids
    encoded = tokenizer.encode(marker, add_special_tokens=False)
    if len(encoded) == 1:
        ids[int(encoded[0])] = marker
    return ids


def _marker(tokenizer: Any, template: str) -> str | None:
    try:
        return end_of_turn_text(template, tokenizer)
    except ChatTemplateError:
        return None


def _span_end(ids: Sequence[int], span: tuple[int, int], tokenizer: Any, allowed: set[int]) -> int:
    """The last token of a trained span, skipping trailing whitespace-only tokens (a template's
    newline after the end-of-turn marker is trained with ``train_on=all``)."""
    start, end = span
    for i in range(end - 1, start - 1, -1):
        if ids[i] in allowed or tokenizer.decode([ids[i]]).strip():
            return int(ids[i])
    return int(ids[end - 1])


def _name(names: Sequence[str] | None, k: int) -> str:
    return names[k] if names is not None and k < len(names) else f"example {k}"


def check_end_of_turn(
    encoded: Sequence[Encoded], tokenizer: Any, template: str, names: Sequence[str] | None = None
) -> Check:
    """1. The last trained token of every trained span (a reply) is EOS or the end-of-turn token.

    The final span of a truncated example is cut by truncation and not judged here (the
    truncation check counts those). A marker that is not a single token (``<|im_end|>`` in a
    vocabulary without it) gives WARN: serving must then use it as a stop string.
    """
    allowed = end_of_turn_ids(tokenizer, template)
    allowed_ids = set(allowed)
    marker = _marker(tokenizer, template)
    n_spans, bad, as_text = 0, [], 0
    for k, enc in enumerate(encoded):
        spans = trained_spans(enc.labels)
        if enc.truncated and spans and spans[-1][1] == len(enc.labels):
            spans = spans[:-1]
        for span in spans:
            n_spans += 1
            if _span_end(enc.input_ids, span, tokenizer, allowed_ids) in allowed_ids:
                continue
            text = tokenizer.decode(enc.input_ids[span[0] : span[1]]).rstrip()
            if marker and text.endswith(marker):
                as_text += 1
            else:
                bad.append(f"{_name(names, k)} ends {text[-24:]!r}")
    ends = " / ".join(f"{t!r} (id {i})" for i, t in allowed.items())
    if bad:
        return Check(
            "end-of-turn",
            "FAIL",
            f"{len(bad)} of {n_spans} trained replies do not end with {ends}: "
            f"{'; '.join(bad[:_SHOWN])}. The model would never learn to stop.",
        )
    if n_spans == 0:
        return Check("end-of-turn", "WARN", "no complete trained reply to check (all truncated)")
    if as_text:
        return Check(
            "end-of-turn",
            "WARN",
            f"{as_text} of {n_spans} replies end with {marker!r} spelled as several tokens, not "
            "one end-of-turn token: serve with it as a stop string",
        )
    return Check("end-of-turn", "PASS", f"all {n_spans} trained replies end with {ends}")


def check_bos(
    encoded: Sequence[Encoded],
    tokenizer: Any,
    prompt_ids: Sequence[int] | None = None,
    names: Sequence[str] | None = None,
) -> Check:
    """2. No sequence starts with BOS twice (training examples, and the inference prompt when
    given); WARN when only some examples start with BOS."""
    bos = tokenizer.bos_token_id
    if bos is None:
        return Check("bos", "PASS", "the tokenizer has no BOS token; nothing to double")
    doubled = [_name(names, k) for k, e in enumerate(encoded) if list(e.input_ids[:2]) == [bos] * 2]
    if prompt_ids is not None and list(prompt_ids[:2]) == [bos] * 2:
        doubled.append("the inference prompt")
    tag = f"{tokenizer.bos_token!r} (id {bos})"
    if doubled:
        return Check(
            "bos",
            "FAIL",
            f"doubled BOS {tag} at the start of {len(doubled)} sequence(s): "
            f"{', '.join(doubled[:_SHOWN])} (BOS text in the template or data, plus the "
            "tokenizer's own)",
        )
    starts = sum(1 for e in encoded if e.input_ids[:1] == [bos])
    if 0 < starts < len(encoded):
        return Check(
            "bos",
            "WARN",
            f"only {starts} of {len(encoded)} examples start with BOS {tag} (does the text of "
            "the others contain the BOS text?)",
        )
    where = "every example starts with" if starts else "no example starts with"
    return Check("bos", "PASS", f"never doubled; {where} BOS {tag}")


def sample_batch(
    encoded: Sequence[Encoded], rows: Sequence[tuple[int, ...]], pad_id: int, packed: bool, n: int
) -> tuple[dict[str, torch.Tensor], list[list[Encoded]]]:
    """A real collated batch with as much padding as the data allows: the longest and the
    shortest rows first, then others, ``n`` at most. Returns the batch and each row's examples."""
    by_length = sorted(
        range(len(rows)), key=lambda r: sum(len(encoded[i].input_ids) for i in rows[r])
    )
    order = [by_length[-1], by_length[0], *by_length[1:-1]]
    picked = [rows[r] for r in dict.fromkeys(order)][: max(n, 2)]
    batch = collate_rows(list(picked), list(encoded), pad_id, packed)
    return batch, [[encoded[i] for i in row] for row in picked]


def _row_problems(
    batch: dict[str, torch.Tensor], r: int, row: Sequence[Encoded], packed: bool, eos: int | None
) -> list[str]:
    """What is wrong with row ``r`` of a collated batch, given the examples it holds."""
    problems: list[str] = []
    real = sum(len(e.input_ids) for e in row)
    if (batch["labels"][r, real:] != IGNORE_INDEX).any():
        problems.append(f"row {r}: padding positions carry labels")
    if packed:
        leaks = bool((batch["seq_ids"][r, real:] >= 0).any()) or bool(
            batch["attention_mask"][r, 0, :real, real:].any()
        )
    else:
        mask = batch["attention_mask"][r]
        leaks = bool(mask[real:].any()) or not bool(mask[:real].all())
    if leaks:
        problems.append(f"row {r}: padding positions are attended (or real ones are not)")
    at = 0
    for enc in row:
        n = len(enc.input_ids)
        got = batch["labels"][r, at + 1 : at + n].tolist()  # a sequence's first token is no target
        for pos, (g, want) in enumerate(zip(got, enc.labels[1:], strict=True)):
            if g != want:
                what = "a trained EOS is masked" if want == eos else "labels differ from encoding"
                problems.append(f"row {r}, position {at + 1 + pos}: {what}")
                break
        at += n
    return problems


def check_padding(
    batch: dict[str, torch.Tensor], rows: Sequence[Sequence[Encoded]], tokenizer: Any, packed: bool
) -> Check:
    """3. Padding is harmless: pad positions carry the ignore label and no attention, and every
    trained label (the reply-ending EOS included, even when pad == EOS) survives collation."""
    pad, eos = tokenizer.pad_token_id, tokenizer.eos_token_id
    if pad is None:
        return Check("padding", "FAIL", "the tokenizer has no pad token")
    problems = [p for r, row in enumerate(rows) for p in _row_problems(batch, r, row, packed, eos)]
    relation = (
        f"pad == eos {tokenizer.eos_token!r} (id {pad})"
        if pad == eos
        else f"pad {tokenizer.pad_token!r} (id {pad}) != eos (id {eos})"
    )
    if problems:
        return Check("padding", "FAIL", f"{relation}: {'; '.join(problems[:_SHOWN])}")
    n_pad = sum(batch["input_ids"].size(1) - sum(len(e.input_ids) for e in row) for row in rows)
    kept = (
        int(((batch["labels"] == eos) & (batch["input_ids"] == eos)).sum())
        if eos is not None
        else 0
    )
    return Check(
        "padding",
        "PASS",
        f"{relation}; in a collated batch of {len(rows)} rows, {n_pad} padding positions carry "
        f"label {IGNORE_INDEX} and no attention, {kept} trained EOS kept",
    )


def check_padding_side(
    batch: dict[str, torch.Tensor], rows: Sequence[Sequence[Encoded]], tokenizer: Any, packed: bool
) -> Check:
    """4. Training batches are right-padded by our collator; generation left-pads
    (:func:`tunesmith.data.completion_batches.left_pad`) so new tokens follow every prompt."""
    right = True
    for r, row in enumerate(rows):
        real = sum(len(e.input_ids) for e in row)
        present = batch["seq_ids"][r] >= 0 if packed else batch["attention_mask"][r].bool()
        right &= bool(present[:real].all()) and not bool(present[real:].any())
    probe = left_pad([[7, 8, 9], [7]], pad_id=0)
    left = probe["attention_mask"][1].tolist() == [0, 0, 1] and int(probe["input_ids"][1, -1]) == 7
    side = getattr(tokenizer, "padding_side", "?")
    note = f"tokenizer.padding_side={side!r} is not used: both pad explicitly"
    if right and left:
        return Check("padding-side", "PASS", f"training right, generation left ({note})")
    wrong = [
        w
        for w, ok in (
            ("training is not right-padded", right),
            ("generation is not left-padded", left),
        )
        if not ok
    ]
    return Check("padding-side", "FAIL", f"{'; '.join(wrong)} ({note})")
