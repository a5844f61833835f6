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


def describe_type(value: Any) -> str:
    """A JSON-flavoured type name for error messages."""
    if value is None:
        return "null"
    names = {bool: "boolean", str: "string", int: "number", float: "number", list: "list"}
    return names.get(type(value), "object" if isinstance(value, dict) else type(value).__name__)


def content_text(value: Any, source: str, line: int, field_name: str) -> str:
    """The text of a chat turn's ``content``: a string, or OpenAI-style content parts.

    Content parts (``[{"type": "text", "text": "..."}, ...]``) are joined with no separator, as
    OpenAI concatenates them; a part of any other type (``image_url``, ``input_audio``...) cannot
    be trained on by a text model and is an error naming the part (``field_name[i].type``).

    Raises:
        DataError: ``value`` is neither a string nor a list of text parts.
    """
    if isinstance(value, str):
        return value
    if not isinstance(value, list):
        got = describe_type(value)
        reason = f"expected a string or a list of text parts, got {got}"
        raise DataError(source, line, field_name, reason)
    texts = []
    for i, part in enumerate(value):
        where = f"{field_name}[{i}]"
        if not isinstance(part, dict):
            got = describe_type(part)
            reason = f'expected a content part {{"type": "text", "text": ...}}, got {got}'
            raise DataError(source, line, where, reason)
        kind = part.get("type")
        if kind != "text":
            reason = (
                f"content part of type {kind!r} is not supported; only 'text' parts can be "
                "trained on"
            )
            raise DataError(source, line, f"{where}.type", reason)
        text = part.get("text")
        if not isinstance(text, str):
            reason = f"expected a string, got {describe_type(text)}"
            raise DataError(source, line, f"{where}.text", reason)
        texts.append(text)
    return "".join(texts)


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


class NoUsableDataError(DataError):
    """Every record was rejected: nothing is left to train on.

    Carries the ``rejects`` so that whoever owns the run directory writes them where the message
    says (:meth:`tunesmith.engine.run.Run.preparing`); :meth:`with_rejects_path` names that file.
    """

    def __init__(
        self,
        source: str,
        line: int | None,
        field_name: str | None,
        message: str,
        rejects: list[dict[str, Any]],
    ):
        super().__init__(source, line, field_name, message)
        self.rejects = rejects

    @classmethod
    def from_rejects(
        cls, source: str, what: str, rejects: list[dict[str, Any]]
    ) -> NoUsableDataError:
        """The error for ``what`` (``"training example"``...), located at the first reject.

        The message starts with the first reject's ``FILE:LINE: field: reason`` so that even a
        one-record file names its line and rule, then counts the rest.
        """
        if not rejects:
            reason = (
                f"no usable {what} (none was rejected: the files hold none, or the held-out "
                "split took them all)"
            )
            return cls(source, None, None, reason, rejects)
        first = rejects[0]
        rule = f" [{first['rule']}]" if first.get("rule") else ""
        reason = (
            f"{first.get('reason')}{rule}; no usable {what} "
            f"({len(rejects)} rejected; this is the first)"
        )
        return cls(
            str(first.get("source") or source),
            first.get("line"),
            first.get("field"),
            reason,
            rejects,
        )

    def with_rejects_path(self, path: str) -> NoUsableDataError:
        """The same error, its message saying where every reject was written."""
        reason = f"{self.reason}; every reject with its reason is in {path}"
        return NoUsableDataError(self.source, self.line, self.field_name, reason, self.rejects)
