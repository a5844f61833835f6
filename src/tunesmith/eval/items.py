"""Turn a task's data rows into evaluation items: the prompt, the reference and the choices."""

from __future__ import annotations

import string
from dataclasses import dataclass, field
from itertools import islice
from pathlib import Path
from typing import Any

from tunesmith.data.formats import detect_format, to_example
from tunesmith.data.readers import iter_rows
from tunesmith.data.records import DataError, Example, Message
from tunesmith.eval.suite import TaskSpec


@dataclass(frozen=True)
class EvalItem:
    """One row of a task, ready to run."""

    id: str
    source: str
    line: int
    prompt: tuple[Message, ...]
    reference: str | None = None
    choices: tuple[str, ...] = ()
    answer: int | None = None
    example: Example | None = None  # loss tasks: the whole conversation
    meta: dict[str, Any] = field(default_factory=dict, compare=False)

    def prompt_text(self) -> str:
        """The last user message (what a person reads in a table)."""
        users = [m.content for m in self.prompt if m.role == "user"]
        return users[-1] if users else ""


def _template_fields(template: str) -> list[str]:
    return [name for _, name, _, _ in string.Formatter().parse(template) if name]


def _fill(template: str, row: dict[str, Any], source: str, line: int) -> str:
    for name in _template_fields(template):
        if name not in row:
            raise DataError(source, line, name, f"missing (the task's prompt uses {{{name}}})")
    return template.format_map({k: row[k] for k in _template_fields(template)})


def _conversation(
    task: TaskSpec, row: dict[str, Any], source: str, line: int
) -> tuple[tuple[Message, ...], str | None, Example]:
    """(prompt turns, the final assistant turn if any, the whole example)."""
    template = task.prompt
    if template is None and task.type == "preference" and isinstance(row.get("prompt"), str):
        template = "{prompt}"
    if template is not None:
        user = Message("user", _fill(template, row, source, line))
        ex = Example(source=source, line=line, messages=(user,), meta=row)
        return (user,), None, ex
    fmt = detect_format(row, source, line) if task.format == "auto" else task.format
    ex = to_example(row, fmt, source, line)
    if not ex.is_chat:
        raise DataError(source, line, "text", "plain text rows need a `prompt:` template")
    msgs = ex.messages
    if msgs and msgs[-1].role == "assistant":
        return msgs[:-1], msgs[-1].content, ex
    return msgs, None, ex


def _with_system(msgs: tuple[Message, ...], system: str | None) -> tuple[Message, ...]:
    if system is None or (msgs and msgs[0].role == "system"):
        return msgs
    return (Message("system", system), *msgs)


def _choice_answer(
    task: TaskSpec, row: dict[str, Any], source: str, line: int
) -> tuple[tuple[str, ...], int]:
    choices = row.get(task.choices)
    if (
        not isinstance(choices, list)
        or len(choices) < 2
        or not all(isinstance(c, str) for c in choices)
    ):
        raise DataError(source, line, task.choices, "must be a list of at least 2 strings")
    if task.answer not in row:
        raise DataError(source, line, task.answer, "missing (the index or text of the answer)")
    answer = row[task.answer]
    if isinstance(answer, int) and not isinstance(answer, bool) and 0 <= answer < len(choices):
        return tuple(choices), answer
    if isinstance(answer, str) and answer in choices:
        return tuple(choices), choices.index(answer)
    raise DataError(
        source, line, task.answer, f"{answer!r} is neither an index of nor one of the choices"
    )


def _reply(row: dict[str, Any], key: str, source: str, line: int) -> str:
    """A preference reply: a string, or a conversation whose last turn is the reply."""
    value = row.get(key)
    if isinstance(value, list) and value and isinstance(value[-1], dict):
        value = value[-1].get("content")
    if not isinstance(value, str):
        raise DataError(source, line, key, "missing or not a string (the preferred/other reply)")
    return value


def _item(
    task: TaskSpec, row: dict[str, Any], source: str, line: int, system: str | None
) -> EvalItem:
    prompt, final_turn, ex = _conversation(task, row, source, line)
    prompt = _with_system(prompt, system)
    choices: tuple[str, ...] = ()
    answer: int | None = None
    reference = final_turn
    if task.type == "choice":
        choices, answer = _choice_answer(task, row, source, line)
        reference = choices[answer]
    elif task.type == "preference":
        choices = (_reply(row, "chosen", source, line), _reply(row, "rejected", source, line))
        answer, reference = 0, choices[0]
    elif task.reference is not None:
        if task.reference not in row:
            raise DataError(source, line, task.reference, "missing (the task's reference field)")
        reference = str(row[task.reference])
    if task.type == "generation" and reference is None:
        raise DataError(
            source, line, task.reference or "messages", "no reference: no final assistant turn"
        )
    return EvalItem(
        id=f"{task.name}:{line}",
        source=source,
        line=line,
        prompt=prompt,
        reference=reference,
        choices=choices,
        answer=answer,
        example=ex,
    )


def load_items(task: TaskSpec, path: Path, system: str | None = None) -> list[EvalItem]:
    """Every row of ``path`` (the first ``task.limit``) as an item; a bad row raises DataError."""
    source = str(path)
    rows = islice(iter_rows(path), task.limit)
    items = [_item(task, row, source, line, task.system or system) for line, row in rows]
    if not items:
        raise DataError(source, None, None, f"task '{task.name}': no rows")
    return items
