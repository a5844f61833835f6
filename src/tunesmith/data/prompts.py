"""The one prompt reader (GRPO, PPO, evaluation of verifiable rewards): a prompt plus the fields
its rewards need.

A record holds ``prompt`` (a string: one user turn), or ``messages`` (a list of ``{role,
content}`` turns; trailing assistant turns, a dataset's reference reply, are dropped, so the
prompt ends with a user turn), or is a preference pair (``chosen``/``rejected``: its prompt is
used). Any other fields (``answer``, ``tests``, ...) are passed to the reward functions
unchanged. Files: anything ``iter_rows`` reads.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

from tunesmith.data.preference import pair_from_row
from tunesmith.data.readers import iter_rows
from tunesmith.data.records import DataError, Message, NoUsableDataError, content_text
from tunesmith.data.templates import encode_prompt

ROLES = ("system", "user", "assistant")


@dataclass
class PromptRecord:
    source: str
    line: int
    messages: list[Message]
    fields: dict[str, Any] = field(default_factory=dict)
    prompt_ids: list[int] = field(default_factory=list)

    @property
    def text(self) -> str:
        """The last user turn (what reward functions see as the prompt)."""
        return self.messages[-1].content


def _turns(raw: Any, source: str, line: int) -> list[Message]:
    if not isinstance(raw, list) or not raw:
        raise DataError(source, line, "messages", "must be a non-empty list of turns")
    turns = []
    for i, m in enumerate(raw):
        if not isinstance(m, dict) or m.get("role") not in ROLES:
            raise DataError(source, line, f"messages[{i}].role", f"must be one of {ROLES}")
        content = content_text(m.get("content"), source, line, f"messages[{i}].content")
        turns.append(Message(role=m["role"], content=content))
    while turns and turns[-1].role == "assistant":
        turns.pop()  # the reference reply of a chat example: not part of the prompt
    if not turns or turns[-1].role != "user":
        raise DataError(
            source, line, "messages", "must end with a user turn (after any trailing reply)"
        )
    return turns


def _messages(row: dict[str, Any], source: str, line: int, system: str | None) -> list[Message]:
    if "chosen" in row:  # a preference pair: its prompt
        turns = list(pair_from_row(row, source, line).prompt)
        if system and turns[0].role != "system":
            turns.insert(0, Message(role="system", content=system))
        return turns
    if "prompt" in row and "messages" in row:
        raise DataError(source, line, "prompt", "give `prompt` or `messages`, not both")
    if "prompt" in row:
        if not isinstance(row["prompt"], str) or not row["prompt"].strip():
            raise DataError(source, line, "prompt", "must be a non-empty string")
        turns = [Message(role="user", content=row["prompt"])]
    elif "messages" in row:
        turns = _turns(row["messages"], source, line)
    else:
        raise DataError(source, line, None, "a prompt record needs `prompt` or `messages`")
    if system and turns[0].role != "system":
        turns.insert(0, Message(role="system", content=system))
    return turns


def read_prompts(
    paths: Sequence[str],
    tokenizer: Any,
    template: str = "tokenizer",
    system_prompt: str | None = None,
    required: Sequence[str] = (),
    max_prompt_length: int | None = None,
    split: str = "train",
    on_error: str = "raise",
    rejects: list[dict[str, Any]] | None = None,
) -> list[PromptRecord]:
    """Every record of ``paths``, tokenized with the chat template (generation prompt added).
    A record missing a ``required`` field or longer than ``max_prompt_length`` tokens is an
    error naming the file, line and field; with ``on_error="skip"`` it goes to ``rejects``
    (``{"source", "line", "field", "reason", "record"}``) instead."""
    out: list[PromptRecord] = []
    kept = rejects if on_error == "skip" and rejects is not None else None

    def unreadable(err: DataError, raw: Any) -> None:  # a row the reader cannot parse
        assert kept is not None
        kept.append({"rule": "malformed", **err.to_json(), "record": raw})

    handler = unreadable if kept is not None else None
    for path in paths:
        for line, row in iter_rows(path, split=split, on_bad_row=handler):
            try:
                out.append(
                    _record(
                        row,
                        str(path),
                        line,
                        tokenizer,
                        template,
                        system_prompt,
                        required,
                        max_prompt_length,
                    )
                )
            except DataError as err:
                if on_error == "raise" or rejects is None:
                    raise
                rejects.append(
                    {
                        "source": str(path),
                        "line": line,
                        "rule": "malformed",
                        "field": err.field_name,
                        "reason": err.reason,
                        "record": row,
                    }
                )
    if not out:
        source = ", ".join(map(str, paths))
        raise NoUsableDataError.from_rejects(source, "prompt record", rejects or [])
    return out


def _record(
    row: dict[str, Any],
    source: str,
    line: int,
    tokenizer: Any,
    template: str,
    system_prompt: str | None,
    required: Sequence[str],
    max_prompt_length: int | None,
) -> PromptRecord:
    messages = _messages(row, source, line, system_prompt)
    for name in required:
        if name not in row:
            raise DataError(source, line, name, "missing (a reward function needs it)")
    skip = ("prompt", "messages", "chosen", "rejected")
    rec = PromptRecord(source, line, messages, {k: v for k, v in row.items() if k not in skip})
    rec.prompt_ids = encode_prompt(messages, tokenizer, template)
    if max_prompt_length is not None and len(rec.prompt_ids) > max_prompt_length:
        raise DataError(
            source,
            line,
            "prompt",
            f"{len(rec.prompt_ids)} tokens > max_prompt_length {max_prompt_length}",
        )
    return rec


def reward_fields(records: Sequence[PromptRecord], repeat: int) -> dict[str, list[Any]]:
    """Each field as a list with one value per completion (``repeat`` completions per record,
    prompt-major); a record without a field gives None there."""
    names = sorted({k for r in records for k in r.fields})
    return {n: [r.fields.get(n) for r in records for _ in range(repeat)] for n in names}


def read_prompt_section(
    d: Any, tokenizer: Any, rejects: list[dict[str, Any]]
) -> tuple[list[PromptRecord], list[PromptRecord]]:
    """``(train, held_out)`` prompts of a config's prompt-data section (``data:`` of grpo/ppo):
    the validation files (capped at ``max_val_examples``), else the one held-out split of the
    training prompts (:mod:`tunesmith.data.split`). Skipped rows are appended to ``rejects``."""
    from tunesmith.data.split import cap_held_out, hold_out

    def read(paths: Sequence[str]) -> list[PromptRecord]:
        return read_prompts(
            paths,
            tokenizer,
            d.template,
            d.system_prompt,
            max_prompt_length=d.max_prompt_length,
            split=d.split,
            on_error=d.on_error,
            rejects=rejects,
        )

    if d.validation:
        return read(d.train), cap_held_out(read(list(d.validation)), d.max_val_examples, d.seed)
    return hold_out(read(d.train), d.val_fraction, d.seed, d.max_val_examples)
