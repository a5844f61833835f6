"""Preference pairs: read ``(prompt, chosen, rejected)`` records and encode them into token ids.

Accepted record forms (every other key is ignored, except a string ``tag``):

* ``{"prompt": str, "chosen": str, "rejected": str}``: the prompt becomes one user turn.
  (Every ``content`` of a turn may be a string or OpenAI text content parts, as in SFT data;
  the keys a pair does not read are named in one warning per file.)
* ``{"messages": [...], "chosen": str, "rejected": str}``: ``messages`` (``role``/``content``
  turns, as in SFT data) is the conversation so far; it must end with a user turn.
* ``{"prompt": [...], "chosen": [...], "rejected": [...]}`` (TRL's conversational form): the
  prompt is a list of turns, chosen and rejected are lists holding one assistant turn.
* ``{"chosen": [...], "rejected": [...]}`` (the conversational form without a prompt): both are
  whole conversations ending in an assistant turn; everything before that turn must be the same in
  both, and it is the prompt.

Rows are read with :func:`tunesmith.data.readers.iter_rows`, so JSONL, JSON, CSV, Parquet and saved
``datasets`` directories all work. A malformed row (missing or mistyped field, bad conversation)
raises :class:`DataError` naming file, line and field, or with ``on_error="skip"`` becomes a reject
with rule ``"malformed"``. A well-formed pair that cannot teach anything is *always* a reject, never
an error and never silently dropped: rule ``"identical"`` (chosen == rejected) or
``"empty_chosen"``/``"empty_rejected"`` (a side that is empty or only whitespace).

:func:`encode_pair` renders the prompt with the chat template plus the assistant generation prompt
(:func:`tunesmith.data.templates.encode_prompt`) and each response as the text the template writes
after that prompt for the full conversation (content plus end-of-turn marker), tokenized without
special tokens, as TRL does.
"""

from __future__ import annotations

import hashlib
import json
import sys
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import jinja2

from tunesmith.data.readers import describe_type, iter_rows
from tunesmith.data.records import ROLES, DataError, Message, NoUsableDataError, content_text
from tunesmith.data.split import cap_held_out, hold_out
from tunesmith.data.templates import (
    encode_prompt,
    end_of_turn_text,
    render_messages,
    template_string,
)

REJECT_RULES: tuple[str, ...] = ("malformed", "identical", "empty_chosen", "empty_rejected")
"""Rule names that appear in the ``rule`` field of a reject."""

_MIN_PROMPT_SHARE = 2
"""When truncating, a prompt keeps at least ``max_length // _MIN_PROMPT_SHARE`` tokens (if it has
them): responses are cut before the prompt loses its ending, which holds the question."""


@dataclass(frozen=True)
class PreferencePair:
    """One preference judgement: for ``prompt``, ``chosen`` is preferred over ``rejected``."""

    prompt: tuple[Message, ...]
    chosen: str
    rejected: str
    source: str
    line: int
    tag: str | None = None

    def to_json(self) -> dict[str, Any]:
        return {
            "messages": [{"role": m.role, "content": m.content} for m in self.prompt],
            "chosen": self.chosen,
            "rejected": self.rejected,
            **({"tag": self.tag} if self.tag is not None else {}),
        }


@dataclass(frozen=True)
class EncodedPair:
    """Token ids of one pair, unpadded.

    ``prompt_ids`` is the chat-template prompt including the assistant header; ``chosen_ids`` and
    ``rejected_ids`` are the response tokens including the end-of-turn token. The model input of a
    side is ``prompt_ids + <side>_ids``; the log-probability is summed over the response only.
    """

    prompt_ids: list[int]
    chosen_ids: list[int]
    rejected_ids: list[int]
    truncated: bool = False


# ---------------------------------------------------------------- reading


def load_preference_pairs(
    path: str | Path, *, split: str = "train", on_error: str = "raise"
) -> tuple[list[PreferencePair], list[dict[str, Any]]]:
    """Read every row of ``path`` as a preference pair, returning ``(pairs, rejects)``.

    Each reject is ``{"source", "line", "rule", "record"}`` (plus ``"field"`` and ``"reason"``),
    ``rule`` being one of :data:`REJECT_RULES` and ``record`` the raw row (or line text).

    Raises:
        DataError: file-level problems always; a malformed row when ``on_error="raise"``.
        ValueError: ``on_error`` is neither ``"raise"`` nor ``"skip"``.
    """
    if on_error not in ("raise", "skip"):
        raise ValueError(f"on_error must be 'raise' or 'skip', got {on_error!r}")
    source = str(path)
    pairs: list[PreferencePair] = []
    rejects: list[dict[str, Any]] = []

    def malformed(err: DataError, raw: Any) -> None:
        if on_error == "raise":
            raise err
        rejects.append(_reject(source, err.line or 0, "malformed", raw, err.field_name, err.reason))

    unused: dict[str, None] = {}
    for line, row in iter_rows(path, split=split, on_bad_row=malformed):
        unused.update(dict.fromkeys(k for k in row if k not in _PAIR_KEYS))
        try:
            pair = pair_from_row(row, source, line)
        except DataError as err:
            malformed(err, row)
            continue
        rule = quality_rule(pair)
        if rule is None:
            pairs.append(pair)
        else:
            field_name = "chosen" if rule != "empty_rejected" else "rejected"
            rejects.append(_reject(source, line, rule, row, field_name, _RULE_REASONS[rule]))
    if unused:
        names = ", ".join(repr(k) for k in unused)
        print(
            f"[tunesmith] warning: {source}: {names} not used by preference pairs (ignored)",
            file=sys.stderr,
            flush=True,
        )
    return pairs, rejects


_PAIR_KEYS = frozenset({"prompt", "messages", "chosen", "rejected", "tag"})


_RULE_REASONS = {
    "identical": "chosen and rejected are identical, so the pair carries no preference",
    "empty_chosen": "chosen reply is empty or only whitespace",
    "empty_rejected": "rejected reply is empty or only whitespace",
}


def _reject(
    source: str, line: int, rule: str, record: Any, field_name: str | None, reason: str
) -> dict[str, Any]:
    return {
        "source": source,
        "line": line,
        "rule": rule,
        "field": field_name,
        "reason": reason,
        "record": record,
    }


def quality_rule(pair: PreferencePair) -> str | None:
    """The reject rule a well-formed pair breaks, or ``None`` when it can be trained on."""
    if not pair.chosen.strip():
        return "empty_chosen"
    if not pair.rejected.strip():
        return "empty_rejected"
    if pair.chosen == pair.rejected:
        return "identical"
    return None


def pair_from_row(row: dict[str, Any], source: str, line: int) -> PreferencePair:
    """Normalise one row (any of the module's record forms) to a :class:`PreferencePair`.

    Raises:
        DataError: naming the field when the row matches no form or a field is malformed.
    """
    for key in ("chosen", "rejected"):
        if key not in row:
            raise DataError(source, line, key, "missing (preference rows need chosen and rejected)")
    tag = row.get("tag")
    tag = tag if isinstance(tag, str) else None
    if "prompt" in row and "messages" in row:
        raise DataError(source, line, "prompt", "give either 'prompt' or 'messages', not both")
    if "messages" in row:
        prompt = _prompt_turns(row["messages"], "messages", source, line)
    elif isinstance(row.get("prompt"), list):
        prompt = _prompt_turns(row["prompt"], "prompt", source, line)
    elif "prompt" in row:
        prompt = (Message("user", _as_str(row["prompt"], "prompt", source, line)),)
    else:
        prompt, chosen, rejected = _split_conversations(row, source, line)
        return PreferencePair(prompt, chosen, rejected, source, line, tag)
    chosen = _reply(row["chosen"], "chosen", source, line)
    rejected = _reply(row["rejected"], "rejected", source, line)
    return PreferencePair(prompt, chosen, rejected, source, line, tag)


def _as_str(value: Any, field_name: str, source: str, line: int) -> str:
    if not isinstance(value, str):
        raise DataError(source, line, field_name, f"expected a string, got {describe_type(value)}")
    return value


def _turns(value: Any, field_name: str, source: str, line: int) -> tuple[Message, ...]:
    """A list of ``{"role", "content"}`` turns with known roles."""
    if not isinstance(value, list):
        raise DataError(
            source, line, field_name, f"expected a list of turns, got {describe_type(value)}"
        )
    turns: list[Message] = []
    for i, item in enumerate(value):
        where = f"{field_name}[{i}]"
        if not isinstance(item, dict):
            got = describe_type(item)
            raise DataError(
                source, line, where, f"expected an object with role and content, got {got}"
            )
        role = _as_str(item.get("role"), f"{where}.role", source, line)
        if role not in ROLES:
            raise DataError(
                source, line, f"{where}.role", f"unknown role {role!r}; expected one of {ROLES}"
            )
        content = content_text(item.get("content"), source, line, f"{where}.content")
        turns.append(Message(role, content))  # type: ignore[arg-type]
    return tuple(turns)


def _prompt_turns(value: Any, field_name: str, source: str, line: int) -> tuple[Message, ...]:
    """The conversation before the compared reply: non-empty, system only first, ends with user."""
    turns = _turns(value, field_name, source, line)
    if not turns:
        raise DataError(source, line, field_name, "empty conversation")
    for i, turn in enumerate(turns[1:], 1):
        if turn.role == "system":
            raise DataError(
                source, line, f"{field_name}[{i}].role", "system only as the first turn"
            )
    if turns[-1].role != "user":
        raise DataError(
            source, line, field_name, f"must end with a user turn, ends with {turns[-1].role!r}"
        )
    return turns


def _reply(value: Any, field_name: str, source: str, line: int) -> str:
    """A reply given as a string or as a list holding one assistant turn."""
    if isinstance(value, str):
        return value
    turns = _turns(value, field_name, source, line)
    if len(turns) != 1 or turns[0].role != "assistant":
        raise DataError(
            source, line, field_name, "expected a string or a list with exactly one assistant turn"
        )
    return turns[0].content


def _split_conversations(
    row: dict[str, Any], source: str, line: int
) -> tuple[tuple[Message, ...], str, str]:
    """The shared prefix and the two final assistant turns of the conversational form."""
    sides = []
    for name in ("chosen", "rejected"):
        turns = _turns(row[name], name, source, line)
        if len(turns) < 2 or turns[-1].role != "assistant":
            raise DataError(
                source,
                line,
                name,
                "without 'prompt' or 'messages', chosen and rejected must be conversations "
                "ending in an assistant turn",
            )
        sides.append(turns)
    chosen, rejected = sides
    if chosen[:-1] != rejected[:-1]:
        raise DataError(
            source, line, "rejected", "the turns before the last one differ from chosen's"
        )
    prompt = _prompt_turns(
        [{"role": m.role, "content": m.content} for m in chosen[:-1]], "chosen", source, line
    )
    return prompt, chosen[-1].content, rejected[-1].content


# ---------------------------------------------------------------- encoding


def encode_pair(
    pair: PreferencePair, tokenizer: Any, template: str = "tokenizer", max_length: int = 512
) -> EncodedPair:
    """Tokenize one pair; truncate to ``max_length`` tokens per side (prompt + longer response).

    Truncation cuts the prompt from the left first (keeping at least half of ``max_length`` when
    the prompt has that many tokens), then both responses from the right. ``truncated`` says
    whether anything was cut.

    Raises:
        DataError: the chat template cannot render the pair.
    """
    if max_length < 2:
        raise ValueError(f"max_length must be at least 2, got {max_length}")
    try:
        prompt_ids = encode_prompt(pair.prompt, tokenizer, template)
        jinja = template_string(template, tokenizer)
        prompt_text = render_messages(pair.prompt, tokenizer, jinja, generation_prompt=True)
        chosen_ids = _response_ids(pair, pair.chosen, prompt_text, tokenizer, jinja, template)
        rejected_ids = _response_ids(pair, pair.rejected, prompt_text, tokenizer, jinja, template)
    except jinja2.TemplateError as exc:
        raise DataError(
            pair.source, pair.line, "prompt", f"chat template {template!r} cannot render it: {exc}"
        ) from exc
    return truncate_pair(prompt_ids, chosen_ids, rejected_ids, max_length)


def truncate_pair(
    prompt_ids: list[int], chosen_ids: list[int], rejected_ids: list[int], max_length: int
) -> EncodedPair:
    """Fit ``prompt + longer response`` in ``max_length``: prompt from the left, then responses."""
    longest = max(len(chosen_ids), len(rejected_ids))
    if len(prompt_ids) + longest <= max_length:
        return EncodedPair(prompt_ids, chosen_ids, rejected_ids, truncated=False)
    keep_prompt = max(max_length - longest, min(len(prompt_ids), max_length // _MIN_PROMPT_SHARE))
    prompt_ids = prompt_ids[len(prompt_ids) - keep_prompt :]
    budget = max_length - len(prompt_ids)
    return EncodedPair(prompt_ids, chosen_ids[:budget], rejected_ids[:budget], truncated=True)


def _response_ids(
    pair: PreferencePair, reply: str, prompt_text: str, tokenizer: Any, jinja: str, template: str
) -> list[int]:
    """Ids of the text the template writes for ``reply`` after the prompt (content + end of turn).

    When the template renders the prompt differently inside the full conversation, the response
    is the reply followed by the template's end-of-turn text.
    """
    full = render_messages(
        (*pair.prompt, Message("assistant", reply)), tokenizer, jinja, generation_prompt=False
    )
    if full.startswith(prompt_text):
        text = full[len(prompt_text) :].rstrip()
    else:
        text = reply + end_of_turn_text(template, tokenizer)
    return list(tokenizer(text, add_special_tokens=False)["input_ids"])


def encode_pairs(
    pairs: Sequence[PreferencePair], tokenizer: Any, template: str, max_length: int
) -> tuple[list[EncodedPair], int]:
    """Encode every pair; returns ``(encoded, number truncated)``."""
    encoded = [encode_pair(p, tokenizer, template, max_length) for p in pairs]
    return encoded, sum(e.truncated for e in encoded)


def pairs_hash(encoded: Sequence[EncodedPair]) -> str:
    """A short content hash of encoded pairs (in order), keying caches of reference log-probs."""
    digest = hashlib.sha256()
    for e in encoded:
        digest.update(json.dumps([e.prompt_ids, e.chosen_ids, e.rejected_ids]).encode())
    return digest.hexdigest()[:16]


# ---------------------------------------------------------------- train / held-out


@dataclass
class PairSplits:
    """The pairs a preference method trains and evaluates on, and every row it dropped."""

    train: list[PreferencePair]
    val: list[PreferencePair]
    rejects: list[dict[str, Any]]


def _file_list(value: str | Sequence[str] | None) -> list[str]:
    return [] if value is None else [value] if isinstance(value, str) else list(value)


def read_pair_files(
    paths: str | Sequence[str] | None,
    rejects: list[dict[str, Any]],
    *,
    split: str = "train",
    on_error: str = "raise",
) -> list[PreferencePair]:
    """The pairs of every file in ``paths``; dropped rows are appended to ``rejects``."""
    pairs: list[PreferencePair] = []
    for path in _file_list(paths):
        got, bad = load_preference_pairs(path, split=split, on_error=on_error)
        pairs += got
        rejects += bad
    return pairs


def read_preference_data(
    train: str | Sequence[str],
    validation: str | Sequence[str] | None,
    *,
    split: str = "train",
    on_error: str = "raise",
    val_fraction: float = 0.1,
    max_val: int | None = None,
    seed: int = 1234,
) -> PairSplits:
    """The one reader of preference data (DPO, reward model, PPO prompts): the pairs of
    ``train`` and ``validation`` files, or, without validation files, the held-out split of
    :func:`tunesmith.data.split.hold_out`; ``max_val`` caps the held-out pairs either way.

    Raises:
        DataError: no usable training pair (the message counts the rejects).
    """
    rejects: list[dict[str, Any]] = []
    pairs = read_pair_files(train, rejects, split=split, on_error=on_error)
    if validation is not None:
        val = read_pair_files(validation, rejects, split=split, on_error=on_error)
        val = cap_held_out(val, max_val, seed)
    else:
        pairs, val = hold_out(pairs, val_fraction, seed, max_val)
    if not pairs:
        raise NoUsableDataError.from_rejects(
            ", ".join(_file_list(train)), "preference pair", rejects
        )
    return PairSplits(pairs, val, rejects)


@dataclass
class EncodedSplits:
    """The token ids of a :class:`PairSplits` (same order) and the counts a run logs."""

    train: list[EncodedPair]
    val: list[EncodedPair]
    stats: dict[str, int]


def encode_pair_splits(
    splits: PairSplits, tokenizer: Any, template: str, max_length: int
) -> EncodedSplits:
    """Encode the train and held-out pairs (:func:`encode_pair`, one prompt for both replies).

    ``stats``: pairs per split, rejected rows, truncated pairs per split, and ``train_tokens``
    (prompt twice plus both replies, summed over the train pairs).
    """
    train, cut_train = encode_pairs(splits.train, tokenizer, template, max_length)
    val, cut_val = encode_pairs(splits.val, tokenizer, template, max_length)
    stats = {
        "train_pairs": len(train),
        "val_pairs": len(val),
        "rejected": len(splits.rejects),
        "truncated_train": cut_train,
        "truncated_val": cut_val,
        "train_tokens": sum(
            len(e.prompt_ids) * 2 + len(e.chosen_ids) + len(e.rejected_ids) for e in train
        ),
    }
    return EncodedSplits(train, val, stats)


def read_pair_section(d: Any) -> PairSplits:
    """:func:`read_preference_data` for a config's pair-data section (``data:`` of dpo/reward):
    its files, split, on_error, val_fraction, max_val_pairs and seed."""
    return read_preference_data(
        d.train,
        d.validation,
        split=d.split,
        on_error=d.on_error,
        val_fraction=d.val_fraction,
        max_val=d.max_val_pairs,
        seed=d.seed,
    )
