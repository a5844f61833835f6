"""Read raw rows from data files: JSONL, JSON, CSV, Parquet and saved ``datasets`` datasets.

:func:`iter_rows` yields ``(line, row)`` pairs where ``line`` is 1-based: the physical file line
for JSONL and CSV (the CSV header is line 1, a quoted multi-line record is numbered by its first
line), and the row index + 1 for JSON lists, Parquet and saved datasets.

Errors come in two kinds. *File-level* problems (missing file, unsupported type, unreadable or
unparseable document, bad CSV header) always raise :class:`DataError`. *Row-level* problems (a
malformed JSONL line, a row that is not an object, a CSV record with the wrong number of fields,
a line that is not valid UTF-8) raise too, unless an ``on_bad_row`` callback is given: it then
receives the error and the raw row (the line text when it could not be parsed) and reading
continues with the next row.
"""

from __future__ import annotations

import csv
import gzip
import json
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import IO, Any

from tunesmith.data.records import DataError, describe_type

Row = dict[str, Any]
BadRowHandler = Callable[[DataError, Any], None]
# What the per-format readers yield: (line, row or row-level error, raw value for a reject).
_Item = tuple[int, Row | DataError, Any]

SUPPORTED_SUFFIXES = (".jsonl", ".jsonl.gz", ".json", ".json.gz", ".csv", ".csv.gz", ".parquet")
DATASET_MARKERS: tuple[str, ...] = ("dataset_dict.json", "dataset_info.json", "state.json")
_PARQUET_BATCH_ROWS = 1024
_GZIP_MAGIC = b"\x1f\x8b"
MAX_NESTING = 100
"""Deepest nesting of lists and objects a JSON row may have; deeper is a row-level error (a
chat record nests 3 or 4 levels, and Python's parser would hit its recursion limit near 1,000)."""


def iter_rows(
    path: str | Path, split: str = "train", on_bad_row: BadRowHandler | None = None
) -> Iterator[tuple[int, Row]]:
    """Yield ``(line, row)`` for every row of a data file or saved ``datasets`` directory.

    Args:
        path: a ``.jsonl``/``.json``/``.csv`` file (optionally gzipped), a ``.parquet`` file, or a
            directory written by ``datasets``' ``save_to_disk``.
        split: the split to read when ``path`` holds a ``DatasetDict``; ignored otherwise.
        on_bad_row: called as ``on_bad_row(error, raw)`` for a row-level problem instead of
            raising; ``raw`` is the unparsed line text, the non-object value or the CSV fields.

    Raises:
        DataError: for file-level problems (raised at call time when the path is missing or of an
            unsupported type), and for row-level problems when ``on_bad_row`` is ``None``.
    """
    source = str(path)
    p = Path(path)
    if not p.exists():
        raise _file_error(source, "file not found")
    if p.is_dir():
        return _deliver(_dataset_items(p, source, split), on_bad_row)
    reader = _reader_for(p, source)
    _check_compression(p, source)
    return _deliver(reader(p, source), on_bad_row)


def _deliver(items: Iterator[_Item], on_bad_row: BadRowHandler | None) -> Iterator[tuple[int, Row]]:
    """Pass good rows through; raise row-level errors or hand them to ``on_bad_row``."""
    for line, row, raw in items:
        if not isinstance(row, DataError):
            yield line, row
        elif on_bad_row is None:
            raise row
        else:
            on_bad_row(row, raw)


def _reader_for(path: Path, source: str) -> Callable[[Path, str], Iterator[_Item]]:
    name = path.name.lower()
    for suffix in sorted(SUPPORTED_SUFFIXES, key=len, reverse=True):
        if name.endswith(suffix):
            return _READERS[suffix.removesuffix(".gz")]
    raise _file_error(
        source,
        f"unsupported file type '{path.suffix or path.name}'; supported: "
        f"{', '.join(SUPPORTED_SUFFIXES)}, or a directory written by datasets' save_to_disk",
    )


def _check_compression(path: Path, source: str) -> None:
    """Refuse a gzip file whose name does not end in ``.gz``: read as text it is one bad line."""
    if path.name.lower().endswith(".gz") or not path.is_file():
        return
    try:
        with path.open("rb") as fh:
            magic = fh.read(2)
    except OSError as exc:
        raise _file_error(source, f"cannot read file: {exc}") from exc
    if magic == _GZIP_MAGIC:
        raise _file_error(
            source, f"is gzip-compressed but not named .gz; rename it to {path.name}.gz"
        )


def _file_error(source: str, reason: str) -> DataError:
    """An error about the file as a whole (no line, no field)."""
    return DataError(source, None, None, reason)


def _not_object(source: str, line: int, value: Any, hint: str = "") -> DataError:
    return DataError(
        source, line, None, f"expected a JSON object, got {describe_type(value)}{hint}"
    )


def _nesting_depth(value: Any, limit: int) -> int:
    """How deeply lists and objects nest in ``value`` (a scalar is 0), counted without
    recursion and only up to ``limit + 1``."""
    deepest, stack = 0, [(value, 1)]
    while stack:
        item, depth = stack.pop()
        if not isinstance(item, (dict, list)):
            continue
        deepest = max(deepest, depth)
        if deepest > limit:
            break
        children = item.values() if isinstance(item, dict) else item
        stack.extend((child, depth + 1) for child in children)
    return deepest


def _too_deep(source: str, line: int) -> DataError:
    return DataError(
        source, line, None, f"JSON nested deeper than {MAX_NESTING} levels of lists and objects"
    )


def _nesting_error(value: Any, text: str | None, source: str, line: int) -> DataError | None:
    """A row-level error when ``value`` nests deeper than :data:`MAX_NESTING`."""
    if text is not None and text.count("[") + text.count("{") <= MAX_NESTING:
        return None  # cannot be deeper than its brackets: skip the walk
    return _too_deep(source, line) if _nesting_depth(value, MAX_NESTING) > MAX_NESTING else None


def _open_binary(path: Path) -> IO[bytes]:
    return gzip.open(path, "rb") if path.name.lower().endswith(".gz") else path.open("rb")


def _decoded_lines(path: Path, source: str) -> Iterator[tuple[int, str, DataError | None]]:
    """Yield ``(line, text, error)`` per physical line, decoding each line separately.

    Line endings are kept. A line that is not valid UTF-8 comes with an error naming it and its
    text decoded with replacement characters. A leading byte-order mark is dropped.
    """
    try:
        with _open_binary(path) as fh:
            for number, raw in enumerate(fh, 1):
                try:
                    yield number, raw.decode("utf-8-sig" if number == 1 else "utf-8"), None
                except UnicodeDecodeError as exc:
                    err = _utf8_error(source, number, raw, exc.start)
                    yield number, raw.decode("utf-8", errors="replace"), err
    except (OSError, EOFError) as exc:
        raise _file_error(source, f"cannot read file: {exc}") from exc


def _utf8_error(source: str, line: int, line_bytes: bytes, offset: int) -> DataError:
    """The error for a line that is not valid UTF-8; ``offset`` is the bad byte's index in it."""
    byte = line_bytes[offset : offset + 1].hex()
    return DataError(
        source,
        line,
        None,
        f"not valid UTF-8 (byte 0x{byte} at byte {offset + 1} of the line); "
        "re-save the file with UTF-8 encoding",
    )


# ---------------------------------------------------------------- JSONL


def _jsonl_items(path: Path, source: str) -> Iterator[_Item]:
    for line, text, bad in _decoded_lines(path, source):
        raw = text.rstrip("\r\n")
        if bad is not None:
            yield line, bad, raw
        elif raw.strip():
            yield (line, *_parse_json_line(raw, source, line))


def _parse_json_line(text: str, source: str, line: int) -> tuple[Row | DataError, Any]:
    """One JSONL line as a row, or the row-level error and the raw line text for a reject."""
    try:
        value = json.loads(text)
    except json.JSONDecodeError as exc:
        return DataError(source, line, None, f"invalid JSON: {exc.msg} at column {exc.colno}"), text
    except RecursionError:
        return _too_deep(source, line), text
    if (deep := _nesting_error(value, text, source, line)) is not None:
        return deep, text
    if isinstance(value, dict):
        return value, None
    hint = "; a .jsonl file holds one object per line (a list of objects is a .json file)"
    return _not_object(source, line, value, hint if isinstance(value, list) else ""), value


# ---------------------------------------------------------------- JSON


def _json_items(path: Path, source: str) -> Iterator[_Item]:
    rows = _json_row_list(_load_json_document(path, source), source)
    for line, value in enumerate(rows, 1):
        if not isinstance(value, dict):
            yield line, _not_object(source, line, value), value
        elif (deep := _nesting_error(value, None, source, line)) is not None:
            yield line, deep, None
        else:
            yield line, value, None


def _load_json_document(path: Path, source: str) -> Any:
    """Parse a whole ``.json`` file; errors name the file line where the problem is."""
    try:
        with _open_binary(path) as fh:
            data = fh.read()
    except (OSError, EOFError) as exc:
        raise _file_error(source, f"cannot read file: {exc}") from exc
    try:
        text = data.decode("utf-8-sig")
    except UnicodeDecodeError as exc:
        line = data.count(b"\n", 0, exc.start) + 1
        line_start = data.rfind(b"\n", 0, exc.start) + 1
        raise _utf8_error(source, line, data[line_start:], exc.start - line_start) from None
    try:
        return json.loads(text)
    except RecursionError:
        reason = f"JSON nested too deeply to parse (rows may nest at most {MAX_NESTING} levels)"
        raise _file_error(source, reason) from None
    except json.JSONDecodeError as exc:
        hint = "; for one object per line name the file .jsonl" if exc.msg == "Extra data" else ""
        reason = f"invalid JSON: {exc.msg} at column {exc.colno}{hint}"
        raise DataError(source, exc.lineno, None, reason) from None


def _json_row_list(data: Any, source: str) -> list[Any]:
    """The list of rows of a JSON document: the document itself or its one list-valued key."""
    if isinstance(data, list):
        return data
    if not isinstance(data, dict):
        got = describe_type(data)
        raise _file_error(source, f"expected a list of objects at the top level, got {got}")
    candidates = [
        key
        for key, value in data.items()
        if isinstance(value, list) and all(isinstance(v, dict) for v in value)
    ]
    if len(candidates) == 1 and candidates[0] not in ("messages", "conversations"):
        return data[candidates[0]]
    if candidates in (["messages"], ["conversations"]):
        reason = "holds a single example; wrap it in a list or use one object per line (.jsonl)"
    else:
        found = ", ".join(repr(k) for k in candidates) or "none"
        reason = (
            "expected a list of objects, or an object with exactly one key holding a list of "
            f"objects (such as 'data'); keys holding a list of objects: {found}"
        )
    raise _file_error(source, reason)


# ---------------------------------------------------------------- CSV


class _CsvLines:
    """The decoded lines fed to :mod:`csv`, remembering which ones were not valid UTF-8."""

    def __init__(self, path: Path, source: str) -> None:
        self._lines = _decoded_lines(path, source)
        self.bad: dict[int, DataError] = {}

    def __iter__(self) -> Iterator[str]:
        for line, text, err in self._lines:
            if err is not None:
                self.bad[line] = err
            yield text

    def first_bad(self, start: int, end: int) -> DataError | None:
        """The decoding error of the first bad line in ``start..end``, if any."""
        return next((self.bad[n] for n in range(start, end + 1) if n in self.bad), None)


def _csv_items(path: Path, source: str) -> Iterator[_Item]:
    lines = _CsvLines(path, source)
    header: list[str] | None = None
    for start, end, fields in _csv_records(lines, source):
        bad = lines.first_bad(start, end)
        if header is None:
            _check_csv_header(fields, bad, source, start)
            header = fields
        else:
            yield (start, *_csv_row(header, fields, bad, source, start))


def _csv_records(lines: _CsvLines, source: str) -> Iterator[tuple[int, int, list[str]]]:
    """Yield ``(first line, last line, fields)`` per non-blank CSV record.

    The reader is strict, so an unterminated quote is an error (naming the line where the record
    starts) instead of silently swallowing the rest of the file into one field.
    """
    reader = csv.reader(lines, strict=True)
    start = 1
    while True:
        try:
            fields = next(reader)
        except StopIteration:
            return
        except csv.Error as exc:
            reason = f"CSV parse error in the record starting on this line: {exc}"
            raise DataError(source, start, None, reason) from exc
        if fields:
            yield start, reader.line_num, fields
        start = reader.line_num + 1


def _check_csv_header(header: list[str], bad: DataError | None, source: str, line: int) -> None:
    if bad is not None:
        raise bad
    duplicates = sorted({name for name in header if header.count(name) > 1})
    if duplicates:
        raise DataError(source, line, None, f"duplicate column names in the header: {duplicates}")


def _csv_row(
    header: list[str], fields: list[str], bad: DataError | None, source: str, line: int
) -> tuple[Row | DataError, Any]:
    if bad is not None:
        return bad, fields
    if len(fields) != len(header):
        reason = f"expected {len(header)} fields (as in the header), got {len(fields)}"
        return DataError(source, line, None, reason), fields
    return dict(zip(header, fields, strict=True)), None


# ---------------------------------------------------------------- Parquet


def _parquet_items(path: Path, source: str) -> Iterator[_Item]:
    """Stream a Parquet file batch by batch so large files are never loaded whole."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    index = 0
    try:
        parquet = pq.ParquetFile(path)
        for batch in parquet.iter_batches(batch_size=_PARQUET_BATCH_ROWS):
            for row in batch.to_pylist():
                index += 1
                yield index, row, None
    except (pa.ArrowException, OSError) as exc:
        raise _file_error(source, f"cannot read Parquet file: {exc}") from exc


# ---------------------------------------------------------------- saved datasets


def _dataset_items(path: Path, source: str, split: str) -> Iterator[_Item]:
    if not any((path / marker).is_file() for marker in DATASET_MARKERS):
        raise _file_error(
            source,
            "directory is not a dataset written by datasets' save_to_disk "
            f"(none of {', '.join(DATASET_MARKERS)} found)",
        )
    dataset = _load_saved_dataset(path, source, split)
    return ((index + 1, row, None) for index, row in enumerate(dataset))


def _load_saved_dataset(path: Path, source: str, split: str) -> Any:
    import datasets

    try:
        loaded = datasets.load_from_disk(str(path))
    except (OSError, ValueError) as exc:
        raise _file_error(source, f"cannot load saved dataset: {exc}") from exc
    if not isinstance(loaded, datasets.DatasetDict):
        return loaded
    if split not in loaded:
        available = ", ".join(repr(name) for name in loaded) or "none"
        raise _file_error(source, f"no split {split!r}; available splits: {available}")
    return loaded[split]


_READERS: dict[str, Callable[[Path, str], Iterator[_Item]]] = {
    ".jsonl": _jsonl_items,
    ".json": _json_items,
    ".csv": _csv_items,
    ".parquet": _parquet_items,
}
