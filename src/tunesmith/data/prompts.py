"""Prompt records for online RL (GRPO, PPO): a prompt plus the fields its rewards need.

A record holds ``prompt`` (a string: one user turn) or ``messages`` (a list of ``{role,
content}`` turns ending before the reply), and any other fields (``answer``, ``tests``, ...),
which are passed to the reward functions unchanged. Files: anything ``iter_rows`` reads.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

from tunesmith.data.readers import iter_rows
from tunesmith.data.records import DataError, Message
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
        if not isinstance(m.get("content"), str):
            raise DataError(source, line, f"messages[{i}].content", "must be a string")
        turns.append(Message(role=m["role"], content=m["content"]))
    if turns[-1].role == "assistant":
        raise DataError(source, line, "messages", "the last turn must not be the assistant's")
    return turns


def _messages(row: dict[str, Any], source: str, line: int, system: str | None) -> list[Message]:
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
) -> list[PromptRecord]:
    """Every record of ``paths``, tokenized with the chat template (generation prompt added).
    A record missing a ``required`` field or longer than ``max_prompt_length`` tokens is an
    error naming the file and line."""
    out: list[PromptRecord] = []
    for path in paths:
        for line, row in iter_rows(path):
            messages = _messages(row, str(path), line, system_prompt)
            for name in required:
                if name not in row:
                    raise DataError(str(path), line, name, "missing (a reward function needs it)")
            fields = {k: v for k, v in row.items() if k not in ("prompt", "messages")}
            rec = PromptRecord(str(path), line, messages, fields)
            rec.prompt_ids = encode_prompt(messages, tokenizer, template)
            if max_prompt_length is not None and len(rec.prompt_ids) > max_prompt_length:
                raise DataError(
                    str(path),
                    line,
                    "prompt",
                    f"{len(rec.prompt_ids)} tokens > max_prompt_length {max_prompt_length}",
                )
            out.append(rec)
    if not out:
        raise DataError(", ".join(map(str, paths)), None, None, "no prompt records")
    return out


def reward_fields(records: Sequence[PromptRecord], repeat: int) -> dict[str, list[Any]]:
    """Each field as a list with one value per completion (``repeat`` completions per record,
    prompt-major); a record without a field gives None there."""
    names = sorted({k for r in records for k in r.fields})
    return {n: [r.fields.get(n) for r in records for _ in range(repeat)] for n in names}
