"""Stream the rows of one input file as canonical examples or as row-level errors, in file order.

Unlike :func:`tunesmith.data.formats.load_examples`, nothing is collected in memory and no
row-level problem is raised here: the caller decides (reject or raise). A row whose response or
text is empty cannot become an :class:`Example` (the canonical format forbids it); it comes back
as an error flagged ``empty``, so prep can count it as junk rather than as malformed input.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from tunesmith.data.formats import detect_format, to_example
from tunesmith.data.readers import iter_rows
from tunesmith.data.records import DataError, Example


@dataclass(frozen=True)
class Row:
    """One input row: an example, or the error that kept it from being one (with the raw row)."""

    source: str
    line: int
    example: Example | None = None
    error: DataError | None = None
    raw: Any = None
    empty: bool = False


def is_empty_error(err: DataError) -> bool:
    """Whether a conversion error is about an empty response, text or conversation."""
    return err.field_name is not None and "empty" in err.reason


def read_rows(path: str | Path, fmt: str = "auto") -> Iterator[Row]:
    """Yield every row of ``path`` in order; with ``fmt="auto"`` the first readable row fixes
    the format for the rest of the file, as in training.

    Raises:
        DataError: file-level problems only (missing file, unsupported type, bad header).
    """
    source = str(path)
    bad: list[Row] = []

    def on_bad_row(err: DataError, raw: Any) -> None:
        bad.append(Row(source, err.line or 0, error=err, raw=raw))

    chosen = None if fmt == "auto" else fmt
    for line, row in iter_rows(path, on_bad_row=on_bad_row):
        yield from bad
        bad.clear()
        try:
            chosen = chosen or detect_format(row, source, line)
            yield Row(source, line, example=to_example(row, chosen, source, line))
        except DataError as err:
            yield Row(source, line, error=err, raw=row, empty=is_empty_error(err))
    yield from bad
