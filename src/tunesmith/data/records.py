"""The canonical record every input format is normalised to, and the data error type.

Every reader and format converter produces :class:`Example` objects; everything downstream
(templates, masks, packing, training) consumes only these. A record always remembers where it
came from (``source`` file and 1-based ``line`` or row) so that any later error or rejection can
point the user back at the exact input.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Literal

Role = Literal["system", "user", "assistant"]
ROLES: tuple[str, ...] = ("system", "user", "assistant")


@dataclass(frozen=True)
class Message:
    """One chat turn."""

    role: Role
    content: str


@dataclass(frozen=True)
class Example:
    """A canonical training record.

    Exactly one of ``messages`` (a conversation) or ``text`` (plain text for continued
    pre-training) is set. ``meta`` carries extra fields of the input row untouched (for example an
    ``answer`` or a ``tag``) so that evaluation and later stages can use them.
    """

    source: str
    line: int
    messages: tuple[Message, ...] = ()
    text: str | None = None
    meta: dict[str, Any] = field(default_factory=dict, compare=False, hash=False)

    @property
    def is_chat(self) -> bool:
        return self.text is None

    def to_json(self) -> dict[str, Any]:
        """A JSON-serialisable view (used for rejects files and prepared splits)."""
        out: dict[str, Any] = {"source": self.source, "line": self.line}
        if self.text is not None:
            out["text"] = self.text
        else:
            out["messages"] = [{"role": m.role, "content": m.content} for m in self.messages]
        if self.meta:
            out["meta"] = self.meta
        return out


class DataError(ValueError):
    """A problem with user data, always naming the file, the line (or row) and the field."""

    def __init__(self, source: str, line: int | None, field_name: str | None, message: str):
        self.source = source
        self.line = line
        self.field_name = field_name
        self.reason = message
        where = source if line is None else f"{source}:{line}"
        what = f" field '{field_name}':" if field_name else ""
        super().__init__(f"{where}:{what} {message}")

    def to_json(self) -> dict[str, Any]:
        return {
            "source": self.source,
            "line": self.line,
            "field": self.field_name,
            "reason": self.reason,
        }
