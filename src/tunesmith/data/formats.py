"""Input formats: detect which one a row is in and normalise it to an :class:`Example`.

Supported formats and their keys (``[...]`` = optional):

* ``alpaca``: ``instruction``, ``output``, [``input``], [``system``]
* ``sharegpt``: ``conversations`` (a list of ``{"from", "value"}``), [``system``]
* ``messages``: ``messages`` (a list of ``{"role", "content"}``; extra keys such as ``name``
  are ignored; ``content`` may be OpenAI content parts ``[{"type": "text", "text": ...}]``,
  joined, while a part of another type such as ``image_url`` is an error naming the part)
* ``prompt_completion``: ``prompt``, ``completion`` (becomes a user turn and an assistant turn)
* ``text``: ``text`` (plain text for continued pre-training)

Every other key of a row is kept in :attr:`Example.meta`. Every problem raises a
:class:`DataError` naming the source, the line and the field (such as ``messages[2].content``).
Strings are kept exactly as given; only emptiness checks look past whitespace.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

from tunesmith.data.readers import describe_type, iter_rows
from tunesmith.data.records import DataError, Example, Message, Role, content_text

FORMATS: tuple[str, ...] = ("alpaca", "sharegpt", "messages", "prompt_completion", "text")

# format -> (required keys, optional keys); the order is the detection order.
_KEYS: dict[str, tuple[tuple[str, ...], tuple[str, ...]]] = {
    "messages": (("messages",), ()),
    "sharegpt": (("conversations",), ("system",)),
    "alpaca": (("instruction", "output"), ("input", "system")),
    "prompt_completion": (("prompt", "completion"), ()),
    "text": (("text",), ()),
}

_SHAREGPT_ROLES: dict[str, Role] = {
    "system": "system",
    "human": "user",
    "user": "user",
    "gpt": "assistant",
    "assistant": "assistant",
    "chatgpt": "assistant",
    "bing": "assistant",
    "bard": "assistant",
    "model": "assistant",
}
_MESSAGES_ROLES: dict[str, Role] = {"system": "system", "user": "user", "assistant": "assistant"}


@dataclass(frozen=True)
class _Where:
    """Where a row came from and which format it is read as, for error messages."""

    source: str
    line: int
    fmt: str

    def error(self, field_name: str, message: str) -> DataError:
        return DataError(self.source, self.line, field_name, message)


@dataclass(frozen=True)
class _TurnSpec:
    """How one chat format spells a turn."""

    role_key: str
    content_key: str
    roles: dict[str, Role]


_MESSAGES_SPEC = _TurnSpec("role", "content", _MESSAGES_ROLES)
_SHAREGPT_SPEC = _TurnSpec("from", "value", _SHAREGPT_ROLES)


def detect_format(row: dict[str, Any], source: str, line: int) -> str:
    """The format of ``row``, judged by its keys.

    Checked in this order: ``messages``, ``conversations`` (sharegpt), ``instruction`` +
    ``output`` (alpaca), ``prompt`` + ``completion``, ``text``; the first match wins.

    Raises:
        DataError: when no format's required keys are all present.
    """
    for fmt, (required, _optional) in _KEYS.items():
        if all(key in row for key in required):
            return fmt
    expected = "; ".join(f"{fmt}: {', '.join(req)}" for fmt, (req, _opt) in _KEYS.items())
    seen = ", ".join(repr(key) for key in row) or "none"
    raise DataError(
        source, line, None, f"cannot detect the data format from keys {seen}; expected {expected}"
    )


def to_example(row: dict[str, Any], fmt: str, source: str, line: int) -> Example:
    """Validate ``row`` as format ``fmt`` and normalise it to an :class:`Example`.

    Raises:
        DataError: for any problem with the row, naming the field.
        ValueError: when ``fmt`` is not one of :data:`FORMATS`.
    """
    if fmt not in _CONVERTERS:
        raise ValueError(f"unknown data format {fmt!r}; expected one of {', '.join(FORMATS)}")
    required, optional = _KEYS[fmt]
    meta = {key: value for key, value in row.items() if key not in required + optional}
    content = _CONVERTERS[fmt](row, _Where(source, line, fmt))
    if isinstance(content, str):
        return Example(source=source, line=line, text=content, meta=meta)
    return Example(source=source, line=line, messages=content, meta=meta)


def unused_keys(examples: list[Example]) -> list[str]:
    """The keys of ``examples``' rows that their format does not read, in first-seen order (kept
    in :attr:`Example.meta`, never trained on); ``tag`` and ``task`` are read by mixing."""
    seen: dict[str, None] = {}
    for ex in examples:
        seen.update(dict.fromkeys(k for k in ex.meta if k not in ("tag", "task")))
    return list(seen)


def load_examples(
    path: str | Path,
    fmt: str = "auto",
    split: str = "train",
    on_error: Literal["raise", "skip"] = "raise",
) -> tuple[list[Example], list[dict[str, Any]]]:
    """Read every row of ``path`` and normalise it, returning ``(examples, rejects)``.

    With ``fmt="auto"`` the format is detected once, from the first row that has a recognisable
    format; every later row must then be in that format. With ``on_error="raise"`` the first
    row-level :class:`DataError` is raised; with ``"skip"`` each bad row becomes a reject
    ``{source, line, field, reason, row}`` (``row`` is the raw row, or the raw line text when it
    could not be parsed) and loading continues. File-level errors always raise.
    """
    if fmt != "auto" and fmt not in FORMATS:
        raise ValueError(f"unknown data format {fmt!r}; expected 'auto' or one of {FORMATS}")
    if on_error not in ("raise", "skip"):
        raise ValueError(f"on_error must be 'raise' or 'skip', got {on_error!r}")
    source = str(path)
    rejects: list[dict[str, Any]] = []

    def reject(err: DataError, raw: Any) -> None:
        rejects.append({**err.to_json(), "row": raw})

    handler = reject if on_error == "skip" else None
    examples: list[Example] = []
    chosen = None if fmt == "auto" else fmt
    for line, row in iter_rows(path, split=split, on_bad_row=handler):
        try:
            chosen = chosen or detect_format(row, source, line)
            examples.append(to_example(row, chosen, source, line))
        except DataError as err:
            if handler is None:
                raise
            handler(err, row)
    return examples, rejects


# ---------------------------------------------------------------- field helpers


def _require(row: dict[str, Any], key: str, where: _Where) -> Any:
    if key not in row:
        raise where.error(key, f"missing (required by the '{where.fmt}' format)")
    return row[key]


def _require_str(row: dict[str, Any], key: str, where: _Where) -> str:
    value = _require(row, key, where)
    if not isinstance(value, str):
        raise where.error(key, f"expected a string, got {describe_type(value)}")
    return value


def _require_nonblank(row: dict[str, Any], key: str, where: _Where) -> str:
    value = _require_str(row, key, where)
    if not value.strip():
        raise where.error(key, "is empty or only whitespace")
    return value


def _optional_str(row: dict[str, Any], key: str, where: _Where) -> str:
    """An optional string field; absent or null reads as ``""``."""
    value = row.get(key)
    if value is None:
        return ""
    if not isinstance(value, str):
        raise where.error(key, f"expected a string, got {describe_type(value)}")
    return value


# ---------------------------------------------------------------- converters


def _alpaca(row: dict[str, Any], where: _Where) -> tuple[Message, ...]:
    instruction = _require_str(row, "instruction", where)
    output = _require_nonblank(row, "output", where)
    extra = _optional_str(row, "input", where)
    system = _optional_str(row, "system", where)
    user = instruction + "\n\n" + extra if extra.strip() else instruction
    turns = (Message("user", user), Message("assistant", output))
    return (Message("system", system), *turns) if system.strip() else turns


def _prompt_completion(row: dict[str, Any], where: _Where) -> tuple[Message, ...]:
    prompt = _require_str(row, "prompt", where)
    completion = _require_nonblank(row, "completion", where)
    return (Message("user", prompt), Message("assistant", completion))


def _text(row: dict[str, Any], where: _Where) -> str:
    return _require_nonblank(row, "text", where)


def _messages(row: dict[str, Any], where: _Where) -> tuple[Message, ...]:
    return _conversation(_require(row, "messages", where), "messages", _MESSAGES_SPEC, where)


def _sharegpt(row: dict[str, Any], where: _Where) -> tuple[Message, ...]:
    turns = _conversation(
        _require(row, "conversations", where), "conversations", _SHAREGPT_SPEC, where
    )
    system = _optional_str(row, "system", where)
    if not system.strip():
        return turns
    if turns[0].role == "system":
        raise where.error("system", "a system prompt is given both here and as conversations[0]")
    return (Message("system", system), *turns)


def _conversation(value: Any, key: str, spec: _TurnSpec, where: _Where) -> tuple[Message, ...]:
    """Validate a list of chat turns and check the conversation's shape."""
    if not isinstance(value, list):
        raise where.error(key, f"expected a list of turns, got {describe_type(value)}")
    if not value:
        raise where.error(key, "empty conversation")
    turns = tuple(_turn(item, f"{key}[{i}]", spec, where) for i, item in enumerate(value))
    _check_shape(turns, key, spec, where)
    return turns


def _turn(item: Any, field_name: str, spec: _TurnSpec, where: _Where) -> Message:
    if not isinstance(item, dict):
        raise where.error(
            field_name,
            f"expected an object with '{spec.role_key}' and '{spec.content_key}', "
            f"got {describe_type(item)}",
        )
    raw_role = _turn_str(item, spec.role_key, field_name, where)
    if raw_role not in spec.roles:
        allowed = ", ".join(spec.roles)
        raise where.error(
            f"{field_name}.{spec.role_key}", f"unknown role {raw_role!r}; expected one of {allowed}"
        )
    content_field = f"{field_name}.{spec.content_key}"
    if spec.content_key not in item:
        raise where.error(content_field, "missing")
    content = content_text(item[spec.content_key], where.source, where.line, content_field)
    return Message(spec.roles[raw_role], content)


def _turn_str(item: dict[str, Any], key: str, field_name: str, where: _Where) -> str:
    """A string field of one turn; errors name it as ``<field_name>.<key>``."""
    if key not in item:
        raise where.error(f"{field_name}.{key}", "missing")
    value = item[key]
    if not isinstance(value, str):
        raise where.error(f"{field_name}.{key}", f"expected a string, got {describe_type(value)}")
    return value


def _check_shape(turns: tuple[Message, ...], key: str, spec: _TurnSpec, where: _Where) -> None:
    """System only first, at least one assistant turn, no empty assistant turn."""
    for i, turn in enumerate(turns):
        if turn.role == "system" and i > 0:
            raise where.error(
                f"{key}[{i}].{spec.role_key}", "a system message is only allowed as the first turn"
            )
        if turn.role == "assistant" and not turn.content.strip():
            raise where.error(f"{key}[{i}].{spec.content_key}", "assistant content is empty")
    if not any(turn.role == "assistant" for turn in turns):
        raise where.error(key, "conversation has no assistant turn")


_CONVERTERS: dict[str, Callable[[dict[str, Any], _Where], tuple[Message, ...] | str]] = {
    "alpaca": _alpaca,
    "sharegpt": _sharegpt,
    "messages": _messages,
    "prompt_completion": _prompt_completion,
    "text": _text,
}
