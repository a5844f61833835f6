"""Pre-flight for preference pairs (``dpo``, ``reward``): what the model compares, pair by pair.

Entry point: :func:`preflight_pairs` ``(pairs, tokenizer, cfg, *, rejects, encoded, per_side)``
on the pairs read by :func:`tunesmith.data.preference.load_preference_pairs`; no model is run.
Each pair becomes two sides (:class:`SidePair`) as the method feeds them to the model: the prompt
tokens (masked) followed by the reply tokens (trained). ``per_side=False`` encodes the pair once
with :func:`~tunesmith.data.preference.encode_pair` (DPO: one prompt for both replies);
``per_side=True`` encodes each reply on its own with that function (how a causal-LM reward model
encodes a side, :meth:`tunesmith.models.reward_head.RewardModel.encode`); the default follows
``cfg.method``.

The checks, in report order:

1. ``pair-rejects``: rows the reader dropped (chosen == rejected, an empty side, malformed):
   WARN naming them; FAIL when no usable pair is left;
2. ``prompt-match``: the chosen and rejected sides start with the same prompt token ids, and the
   template writes the prompt as the start of each full conversation;
3. ``identical``: chosen and rejected differ as token ids (truncation can make them equal);
4. ``empty-reply``: each side keeps at least one reply token after truncation;
5. ``end-of-turn``, 6. ``bos``: as for SFT (:mod:`tunesmith.checks.checks`), on both sides;
7. ``template``: the training template is the one saved for serving;
8. ``truncation``: the share of pairs truncated to ``data.max_length``.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import jinja2

from tunesmith.checks.checks import Check, check_bos, check_end_of_turn
from tunesmith.checks.preflight import WARN_SHARE, check_template
from tunesmith.checks.render import RenderedExample, rendered
from tunesmith.data.preference import EncodedPair, PreferencePair, encode_pair
from tunesmith.data.records import DataError, Message
from tunesmith.data.templates import (
    IGNORE_INDEX,
    ChatTemplateError,
    Encoded,
    render_messages,
    template_string,
)

SAMPLE_PAIRS = 512
"""Pairs encoded by the checks when the method passes no encodings (the first ones in order)."""

_SHOWN = 3  # offending pairs named in a detail line


@dataclass(frozen=True)
class SidePair:
    """One pair as the model sees it: each side is prompt (masked) + reply (trained)."""

    name: str  # "file:line"
    chosen: Encoded
    rejected: Encoded
    chosen_prompt: int  # prompt tokens at the start of chosen.input_ids
    rejected_prompt: int
    truncated: bool

    def reply(self, side: str) -> list[int]:
        """The reply token ids of ``side`` ("chosen" or "rejected")."""
        if side == "chosen":
            return list(self.chosen.input_ids[self.chosen_prompt :])
        return list(self.rejected.input_ids[self.rejected_prompt :])


def _side(prompt: Sequence[int], reply: Sequence[int], cut: bool, max_length: int) -> Encoded:
    """One side as an :class:`Encoded`; ``truncated`` only when the reply may have been cut
    (it reaches ``max_length``), so the end-of-turn check judges every whole reply."""
    ids = [*prompt, *reply]
    labels = [IGNORE_INDEX] * len(prompt) + list(reply)
    return Encoded(ids, labels, len(reply), cut and len(ids) >= max_length)


def _joint(pair: PreferencePair, e: EncodedPair, max_length: int) -> SidePair:
    n = len(e.prompt_ids)
    return SidePair(
        f"{pair.source}:{pair.line}",
        _side(e.prompt_ids, e.chosen_ids, e.truncated, max_length),
        _side(e.prompt_ids, e.rejected_ids, e.truncated, max_length),
        n,
        n,
        e.truncated,
    )


def _one_side(pair: PreferencePair, reply: str, tokenizer: Any, template: str, limit: int) -> Any:
    alone = PreferencePair(pair.prompt, reply, reply, pair.source, pair.line)
    return encode_pair(alone, tokenizer, template, limit)


def _per_side(pair: PreferencePair, tokenizer: Any, template: str, limit: int) -> SidePair:
    c = _one_side(pair, pair.chosen, tokenizer, template, limit)
    r = _one_side(pair, pair.rejected, tokenizer, template, limit)
    return SidePair(
        f"{pair.source}:{pair.line}",
        _side(c.prompt_ids, c.chosen_ids, c.truncated, limit),
        _side(r.prompt_ids, r.chosen_ids, r.truncated, limit),
        len(c.prompt_ids),
        len(r.prompt_ids),
        c.truncated or r.truncated,
    )


def encode_sides(
    pairs: Sequence[PreferencePair],
    tokenizer: Any,
    cfg: Any,
    *,
    encoded: Sequence[EncodedPair] | None = None,
    per_side: bool | None = None,
) -> list[SidePair]:
    """Both sides of every pair as the method feeds them (see the module docstring); with
    ``encoded`` (the method's own encodings of ``pairs``, in order) nothing is re-encoded.

    Raises:
        DataError: the chat template cannot render a pair.
    """
    template, limit = cfg.data.template, cfg.data.max_length
    if per_side is None:
        per_side = cfg.method == "reward"
    if encoded is not None and not per_side:
        return [_joint(p, e, limit) for p, e in zip(pairs, encoded, strict=True)]
    if per_side:
        return [_per_side(p, tokenizer, template, limit) for p in pairs]
    return [_joint(p, encode_pair(p, tokenizer, template, limit), limit) for p in pairs]


# ----------------------------------------------------------------------------- checks


def _names(items: Sequence[str]) -> str:
    more = f" and {len(items) - _SHOWN} more" if len(items) > _SHOWN else ""
    return ", ".join(items[:_SHOWN]) + more


def check_rejects(n_pairs: int, rejects: Sequence[dict[str, Any]]) -> Check:
    """1. Rows the reader dropped, by rule: WARN naming them; FAIL when no pair is left."""
    total = n_pairs + len(rejects)
    if n_pairs == 0:
        return Check("pair-rejects", "FAIL", f"no usable pair: all {total} rows rejected")
    if not rejects:
        return Check("pair-rejects", "PASS", f"all {total} rows are usable pairs")
    by_rule: dict[str, list[str]] = {}
    for r in rejects:
        by_rule.setdefault(str(r.get("rule")), []).append(f"{r.get('source')}:{r.get('line')}")
    parts = "; ".join(f"{len(v)} {rule} ({_names(v)})" for rule, v in sorted(by_rule.items()))
    return Check(
        "pair-rejects",
        "WARN",
        f"{len(rejects)} of {total} rows are not trained on: {parts} (training lists them in "
        "rejects.jsonl)",
    )


def _first_difference(a: str, b: str) -> str:
    at = next(
        (i for i, (x, y) in enumerate(zip(a, b, strict=False)) if x != y), min(len(a), len(b))
    )
    return f"at char {at}: {a[at : at + 30]!r} vs {b[at : at + 30]!r}"


def _render_problem(pair: PreferencePair, tokenizer: Any, jinja: str) -> str | None:
    """How the template writes the prompt differently once a reply follows it, or None."""
    prompt = render_messages(pair.prompt, tokenizer, jinja, generation_prompt=True)
    for side in ("chosen", "rejected"):
        reply = Message("assistant", getattr(pair, side))
        full = render_messages((*pair.prompt, reply), tokenizer, jinja, generation_prompt=False)
        if not full.startswith(prompt):
            return f"before the {side} reply the prompt renders {_first_difference(prompt, full)}"
    return None


def check_prompt_match(
    pairs: Sequence[PreferencePair], sides: Sequence[SidePair], tokenizer: Any, template: str
) -> Check:
    """2. Both sides of a pair are conditioned on the same prompt: equal prompt token ids (a
    reply encoded on its own can cut the prompt differently), and the template renders the
    prompt alone as the start of each full conversation (else the reply text the model is
    trained on is not what the served template writes after that prompt)."""
    bad: list[str] = []
    for s in sides:
        a, b = s.chosen.input_ids[: s.chosen_prompt], s.rejected.input_ids[: s.rejected_prompt]
        if a != b:
            bad.append(f"{s.name}: chosen has {len(a)} prompt tokens, rejected {len(b)}, differing")
    try:
        jinja = template_string(template, tokenizer)
        bad += [
            f"{p.source}:{p.line}: {problem}"
            for p in pairs
            if (problem := _render_problem(p, tokenizer, jinja)) is not None
        ]
    except (ChatTemplateError, jinja2.TemplateError) as e:
        return Check("prompt-match", "FAIL", f"template {template!r} cannot render pairs: {e}")
    if bad:
        return Check(
            "prompt-match",
            "FAIL",
            f"{len(bad)} problem(s) in {len(sides)} pairs: {'; '.join(bad[:_SHOWN])}. The two "
            "replies would not be compared on the same prompt.",
        )
    return Check(
        "prompt-match",
        "PASS",
        f"chosen and rejected share identical prompt token ids in all {len(sides)} pairs",
    )


def check_identical(sides: Sequence[SidePair]) -> Check:
    """3. Chosen and rejected are different token sequences (else the pair has no signal)."""
    same = [s.name for s in sides if s.chosen.input_ids == s.rejected.input_ids]
    if same:
        return Check(
            "identical",
            "FAIL",
            f"{len(same)} of {len(sides)} pairs encode chosen and rejected to the same tokens "
            f"({_names(same)}): after truncation to data.max_length they carry no preference",
        )
    return Check("identical", "PASS", f"chosen differs from rejected in all {len(sides)} pairs")


def check_empty_reply(sides: Sequence[SidePair]) -> Check:
    """4. Every side keeps at least one reply token (truncation must not remove a reply)."""
    empty = [
        f"{s.name} {side}" for s in sides for side in ("chosen", "rejected") if not s.reply(side)
    ]
    if empty:
        return Check(
            "empty-reply",
            "FAIL",
            f"{len(empty)} replies have no token left ({_names(empty)}): the prompt fills "
            "data.max_length",
        )
    return Check("empty-reply", "PASS", f"both replies of all {len(sides)} pairs keep tokens")


def check_pair_truncation(sides: Sequence[SidePair], max_length: int) -> Check:
    """8. Share of pairs cut to ``max_length`` (prompt from the left, then replies)."""
    cut = [s.name for s in sides if s.truncated]
    share = len(cut) / max(len(sides), 1)
    detail = f"{len(cut)} of {len(sides)} pairs truncated to max_length {max_length}"
    if share > WARN_SHARE:
        return Check(
            "truncation", "WARN", f"{detail} ({_names(cut)}); raise data.max_length or shorten"
        )
    return Check("truncation", "PASS", f"{detail} ({100 * share:.1f}%)")


def pair_checks(
    pairs: Sequence[PreferencePair],
    sides: Sequence[SidePair],
    tokenizer: Any,
    cfg: Any,
    rejects: Sequence[dict[str, Any]] = (),
) -> list[Check]:
    """Checks 1-8 on pairs already encoded into ``sides``."""
    template = cfg.data.template
    both = [enc for s in sides for enc in (s.chosen, s.rejected)]
    names = [f"{s.name} {side}" for s in sides for side in ("chosen", "rejected")]
    whole = [s for s in sides if not s.truncated]  # a prompt cut from the left loses its BOS
    starts = [enc for s in whole for enc in (s.chosen, s.rejected)]
    start_names = [f"{s.name} {side}" for s in whole for side in ("chosen", "rejected")]
    bos = (
        check_bos(starts, tokenizer, None, start_names)
        if whole
        else Check("bos", "SKIP", "every checked pair is truncated (its prompt may start cut)")
    )
    rendered_sample = pairs[:SAMPLE_PAIRS]
    conversation = (
        (*pairs[0].prompt, Message("assistant", pairs[0].chosen))
        if pairs
        else (Message("user", "Hello?"), Message("assistant", "Hello."))
    )
    return [
        check_rejects(len(pairs), rejects),
        check_prompt_match(rendered_sample, sides, tokenizer, template),
        check_identical(sides),
        check_empty_reply(sides),
        check_end_of_turn(both, tokenizer, template, names),
        bos,
        check_template(tokenizer, template, conversation),
        check_pair_truncation(sides, cfg.data.max_length),
    ]


def preflight_pairs(
    pairs: Sequence[PreferencePair],
    tokenizer: Any,
    cfg: Any,
    *,
    rejects: Sequence[dict[str, Any]] = (),
    encoded: Sequence[EncodedPair] | None = None,
    per_side: bool | None = None,
) -> list[Check]:
    """Every pair check (module docstring) on the train pairs; no model is run.

    Args:
        pairs: the train pairs as read (``load_preference_pairs``), in order.
        tokenizer: the policy / reward-model tokenizer.
        cfg: a ``dpo`` or ``reward`` config (reads ``method``, ``data.template``,
            ``data.max_length``).
        rejects: the reader's rejects (rule ``identical``, ``empty_*``, ``malformed``).
        encoded: the method's own :class:`EncodedPair` of every pair (joint encoding); when
            absent the first :data:`SAMPLE_PAIRS` pairs are encoded here.
        per_side: encode each reply on its own (default: ``cfg.method == "reward"``).
    """
    if not pairs:
        return [check_rejects(0, rejects)]
    sample = pairs if encoded is not None else pairs[:SAMPLE_PAIRS]
    try:
        sides = encode_sides(sample, tokenizer, cfg, encoded=encoded, per_side=per_side)
    except (DataError, ChatTemplateError, jinja2.TemplateError) as e:
        return [check_rejects(len(pairs), rejects), Check("template", "FAIL", str(e))]
    return pair_checks(sample, sides, tokenizer, cfg, rejects)


def render_pairs(sides: Sequence[SidePair], tokenizer: Any, n: int) -> list[RenderedExample]:
    """The first ``n`` pairs as two rendered examples each (chosen, then rejected); the trained
    tokens are the reply's."""
    return [
        rendered(getattr(s, side), tokenizer, f"{s.name} {side}")
        for s in sides[:n]
        for side in ("chosen", "rejected")
    ]
