"""Rows to score with a reward model (``tunesmith score --data``): a prompt and a completion.

``{"prompt": str | [turns], "completion": str}`` or ``{"messages": [turns], "completion": str}``;
a bad row is a :class:`DataError` naming the file, line and field.
"""

from __future__ import annotations

from typing import Any

from tunesmith.data.readers import iter_rows
from tunesmith.data.records import ROLES, DataError, Message


def _row_prompt(row: dict[str, Any], source: str, line: int) -> Any:
    """A prompt string, or a conversation as a tuple of messages ending with a user turn."""
    key = "messages" if "messages" in row else "prompt"
    value = row.get(key)
    if isinstance(value, str):
        return value
    ok = (
        isinstance(value, list)
        and value
        and all(
            isinstance(t, dict) and t.get("role") in ROLES and isinstance(t.get("content"), str)
            for t in value
        )
    )
    if not ok or value[-1]["role"] != "user":
        raise DataError(
            source,
            line,
            key,
            "expected a prompt string or a list of role/content turns ending with a user turn",
        )
    return tuple(Message(t["role"], t["content"]) for t in value)


def read_score_rows(path: str) -> tuple[list[dict[str, Any]], list[Any], list[str]]:
    """(rows, prompts, completions) of a --data file; a bad row is a DataError (file:line)."""
    rows, prompts, completions = [], [], []
    for line, row in iter_rows(path):
        completion = row.get("completion")
        if not isinstance(completion, str):
            raise DataError(path, line, "completion", "missing or not a string")
        rows.append(row)
        prompts.append(_row_prompt(row, path, line))
        completions.append(completion)
    return rows, prompts, completions
