"""Compact per-record state: where each input row came from and what happened to it.

A few bytes per row (file, line, tag, token count, rule, split, duplicate-of), never its text, so
inputs far larger than memory can be prepared. Rows of an existing test file (``splits.test_file``)
are recorded too, with the status :data:`REFERENCE`, so duplicates can point at them.
"""

from __future__ import annotations

from array import array
from dataclasses import dataclass
from typing import Any

import numpy as np

RULES: tuple[str, ...] = (
    "malformed",
    "empty",
    "short_response",
    "too_long",
    "repeats_prompt",
    "repetition",
    "refusal",
    "broken_markup",
    "test_overlap",
    "exact_duplicate",
    "near_duplicate",
    "cap",
)
"""Every reason a record can be removed, in the order the pipeline applies them."""

KEPT = 0
REFERENCE = 255


def rule_code(rule: str) -> int:
    return RULES.index(rule) + 1


def rule_name(code: int) -> str:
    return RULES[code - 1]


UNTAGGED = "untagged"


def tag_of(fields: Any, default: str | None) -> str:
    """A row's task/source tag: its own ``tag`` or ``task`` key, else the file's tag."""
    value = None
    if isinstance(fields, dict):
        value = fields.get("tag")
        value = fields.get("task") if value in (None, "") else value
    if value in (None, ""):
        return default or UNTAGGED
    return str(value)


@dataclass
class Records:
    """Per-record arrays, indexed by record id (input order, test-file rows first)."""

    sources: list[str]
    tags: list[str]
    file: np.ndarray  # uint32, index into sources
    line: np.ndarray  # uint64, 1-based line or row
    tag: np.ndarray  # uint32, index into tags
    length: np.ndarray  # uint32, tokens of the whole example
    status: np.ndarray  # uint8, KEPT, REFERENCE or rule_code(rule)
    of: np.ndarray  # int64, the record a duplicate duplicates (-1: none)
    similarity: np.ndarray  # float32, estimated Jaccard similarity to ``of``
    split: np.ndarray  # uint8, 0 = none, 1 train, 2 validation, 3 test

    def where(self, rid: int) -> dict[str, Any]:
        return {"source": self.sources[int(self.file[rid])], "line": int(self.line[rid])}

    def mark(self, rid: int, rule: str, of: int = -1, similarity: float = 0.0) -> None:
        self.status[rid] = rule_code(rule)
        self.of[rid] = of
        self.similarity[rid] = similarity

    @property
    def is_input(self) -> np.ndarray:
        return self.status != REFERENCE


class Ledger:
    """Append-only builder of :class:`Records` during the streaming first pass."""

    def __init__(self) -> None:
        self.sources: list[str] = []
        self.tags: list[str] = []
        self._tag_codes: dict[str, int] = {}
        self._file = array("I")
        self._line = array("Q")
        self._tag = array("I")
        self._length = array("I")
        self._status = bytearray()

    def __len__(self) -> int:
        return len(self._status)

    def add_source(self, source: str) -> int:
        self.sources.append(source)
        return len(self.sources) - 1

    def add(self, file: int, line: int, tag: str, status: int = KEPT, length: int = 0) -> int:
        """Record one row; returns its record id."""
        code = self._tag_codes.get(tag)
        if code is None:
            code = self._tag_codes[tag] = len(self.tags)
            self.tags.append(tag)
        self._file.append(file)
        self._line.append(line)
        self._tag.append(code)
        self._length.append(min(length, 2**32 - 1))
        self._status.append(status)
        return len(self._status) - 1

    def set(self, rid: int, status: int, length: int | None = None) -> None:
        self._status[rid] = status
        if length is not None:
            self._length[rid] = min(length, 2**32 - 1)

    def freeze(self) -> Records:
        n = len(self)
        return Records(
            sources=self.sources,
            tags=self.tags or [UNTAGGED],
            file=np.frombuffer(self._file, dtype=np.uint32).copy(),
            line=np.frombuffer(self._line, dtype=np.uint64).copy(),
            tag=np.frombuffer(self._tag, dtype=np.uint32).copy(),
            length=np.frombuffer(self._length, dtype=np.uint32).copy(),
            status=np.frombuffer(bytes(self._status), dtype=np.uint8).copy(),
            of=np.full(n, -1, dtype=np.int64),
            similarity=np.zeros(n, dtype=np.float32),
            split=np.zeros(n, dtype=np.uint8),
        )
