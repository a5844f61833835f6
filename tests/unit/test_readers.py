"""Unit tests for tunesmith.data.readers: every reader, line numbering and bad input."""

from __future__ import annotations

import gzip
import json
from pathlib import Path
from typing import Any

import pytest

from tunesmith.data.readers import iter_rows
from tunesmith.data.records import DataError


def _write(path: Path, text: str) -> Path:
    path.write_bytes(text.encode("utf-8"))
    return path


def _collect(
    path: Path, **kwargs: Any
) -> tuple[list[tuple[int, dict]], list[tuple[DataError, Any]]]:
    bad: list[tuple[DataError, Any]] = []
    rows = list(iter_rows(path, on_bad_row=lambda err, raw: bad.append((err, raw)), **kwargs))
    return rows, bad


# ---------------------------------------------------------------- JSONL


def test_jsonl_rows_and_line_numbers_skip_blank_lines(tmp_path: Path) -> None:
    path = _write(tmp_path / "d.jsonl", '{"a": 1}\n\n   \n{"a": 2}\r\n{"a": 3}')
    assert list(iter_rows(path)) == [(1, {"a": 1}), (4, {"a": 2}), (5, {"a": 3})]


def test_jsonl_gz(tmp_path: Path) -> None:
    path = tmp_path / "d.jsonl.gz"
    with gzip.open(path, "wt", encoding="utf-8") as fh:
        fh.write('{"a": 1}\n{"a": 2}\n')
    assert list(iter_rows(path)) == [(1, {"a": 1}), (2, {"a": 2})]


def test_jsonl_utf8_bom_and_non_ascii(tmp_path: Path) -> None:
    path = _write(tmp_path / "d.jsonl", '\ufeff{"t": "héllo ✓"}\n')
    assert list(iter_rows(path)) == [(1, {"t": "héllo ✓"})]


def test_jsonl_malformed_line_names_file_and_line(tmp_path: Path) -> None:
    path = _write(tmp_path / "d.jsonl", '{"a": 1}\n\n{"a": 2,}\n')
    with pytest.raises(DataError) as exc:
        list(iter_rows(path))
    assert exc.value.source == str(path)
    assert exc.value.line == 3
    assert exc.value.reason.startswith("invalid JSON: ")
    assert f"{path}:3" in str(exc.value)


def test_jsonl_non_object_line(tmp_path: Path) -> None:
    path = _write(tmp_path / "d.jsonl", '{"a": 1}\n[1, 2]\n')
    with pytest.raises(DataError, match="expected a JSON object, got list") as exc:
        list(iter_rows(path))
    assert exc.value.line == 2


def test_jsonl_non_utf8_line(tmp_path: Path) -> None:
    path = tmp_path / "d.jsonl"
    path.write_bytes(b'{"a": "ok"}\n{"a": "caf\xe9"}\n{"a": "ok"}\n')
    with pytest.raises(DataError, match="not valid UTF-8") as exc:
        list(iter_rows(path))
    assert (exc.value.source, exc.value.line) == (str(path), 2)
    assert "0xe9" in exc.value.reason


def test_jsonl_bad_rows_go_to_handler_and_reading_continues(tmp_path: Path) -> None:
    path = tmp_path / "d.jsonl"
    path.write_bytes(b'{"a": 1}\nnot json\n"str"\n{"a": "\xff"}\n{"a": 5}\n')
    rows, bad = _collect(path)
    assert rows == [(1, {"a": 1}), (5, {"a": 5})]
    assert [err.line for err, _ in bad] == [2, 3, 4]
    assert bad[0][1] == "not json"
    assert bad[1][1] == "str"
    assert "not valid UTF-8" in bad[2][0].reason and isinstance(bad[2][1], str)


# ---------------------------------------------------------------- JSON


def test_json_top_level_list(tmp_path: Path) -> None:
    path = _write(tmp_path / "d.json", json.dumps([{"a": 1}, {"a": 2}], indent=2))
    assert list(iter_rows(path)) == [(1, {"a": 1}), (2, {"a": 2})]


def test_json_object_with_one_list_key(tmp_path: Path) -> None:
    path = _write(tmp_path / "d.json", json.dumps({"version": 2, "data": [{"a": 1}]}))
    assert list(iter_rows(path)) == [(1, {"a": 1})]


@pytest.mark.parametrize(
    "doc",
    [
        {"train": [{"a": 1}], "test": [{"a": 2}]},
        {"version": 1},
        {"messages": [{"role": "user", "content": "x"}]},
        "just a string",
    ],
)
def test_json_ambiguous_or_unusable_document(tmp_path: Path, doc: Any) -> None:
    path = _write(tmp_path / "d.json", json.dumps(doc))
    with pytest.raises(DataError) as exc:
        list(iter_rows(path))
    assert exc.value.source == str(path) and exc.value.line is None


def test_json_non_object_element_is_row_error(tmp_path: Path) -> None:
    path = _write(tmp_path / "d.json", json.dumps([{"a": 1}, 7, {"a": 3}]))
    rows, bad = _collect(path)
    assert rows == [(1, {"a": 1}), (3, {"a": 3})]
    assert bad[0][0].line == 2 and bad[0][1] == 7


def test_json_syntax_error_names_file_line(tmp_path: Path) -> None:
    path = _write(tmp_path / "d.json", '[\n  {"a": 1},\n  {"a": }\n]\n')
    with pytest.raises(DataError, match="invalid JSON") as exc:
        list(iter_rows(path))
    assert exc.value.line == 3


def test_json_that_is_really_jsonl_gets_a_hint(tmp_path: Path) -> None:
    path = _write(tmp_path / "d.json", '{"a": 1}\n{"a": 2}\n')
    with pytest.raises(DataError, match=r"\.jsonl") as exc:
        list(iter_rows(path))
    assert exc.value.line == 2


def test_json_non_utf8_names_line(tmp_path: Path) -> None:
    path = tmp_path / "d.json"
    path.write_bytes(b'[\n{"a": "x"},\n{"a": "\xc3("}\n]')
    with pytest.raises(DataError, match="not valid UTF-8") as exc:
        list(iter_rows(path))
    assert exc.value.line == 3


# ---------------------------------------------------------------- CSV


def test_csv_rows_numbered_by_file_line(tmp_path: Path) -> None:
    text = 'instruction,output\nSay hi,Hi\n\n"multi\nline",x\nlast,"a, b"\n'
    path = _write(tmp_path / "d.csv", text)
    assert list(iter_rows(path)) == [
        (2, {"instruction": "Say hi", "output": "Hi"}),
        (4, {"instruction": "multi\nline", "output": "x"}),
        (6, {"instruction": "last", "output": "a, b"}),
    ]


def test_csv_bom_header(tmp_path: Path) -> None:
    path = _write(tmp_path / "d.csv", "\ufefftext\nhello\n")
    assert list(iter_rows(path)) == [(2, {"text": "hello"})]


def test_csv_wrong_field_count_names_line(tmp_path: Path) -> None:
    path = _write(tmp_path / "d.csv", "a,b\n1,2\n1,2,3\n4\n5,6\n")
    with pytest.raises(DataError, match="expected 2 fields") as exc:
        list(iter_rows(path))
    assert (exc.value.source, exc.value.line) == (str(path), 3)
    rows, bad = _collect(path)
    assert rows == [(2, {"a": "1", "b": "2"}), (5, {"a": "5", "b": "6"})]
    assert [(err.line, raw) for err, raw in bad] == [(3, ["1", "2", "3"]), (4, ["4"])]


def test_csv_non_utf8_names_line(tmp_path: Path) -> None:
    path = tmp_path / "d.csv"
    path.write_bytes(b"text\nfine\nna\xefve\nfine again\n")
    with pytest.raises(DataError, match="not valid UTF-8") as exc:
        list(iter_rows(path))
    assert exc.value.line == 3
    rows, bad = _collect(path)
    assert [line for line, _ in rows] == [2, 4] and bad[0][0].line == 3


def test_csv_bad_header(tmp_path: Path) -> None:
    path = _write(tmp_path / "d.csv", "a,a\n1,2\n")
    with pytest.raises(DataError, match="duplicate column") as exc:
        list(iter_rows(path))
    assert exc.value.line == 1


def test_csv_unterminated_quote_is_an_error_not_a_giant_field(tmp_path: Path) -> None:
    path = _write(tmp_path / "d.csv", 'text\nok\n"unterminated\nmore\nlines\n')
    with pytest.raises(DataError, match="CSV parse error") as exc:
        list(iter_rows(path))
    assert exc.value.line == 3


def test_csv_empty_file(tmp_path: Path) -> None:
    assert list(iter_rows(_write(tmp_path / "d.csv", ""))) == []


# ---------------------------------------------------------------- Parquet


def test_parquet_streams_all_rows(tmp_path: Path) -> None:
    pa = pytest.importorskip("pyarrow")
    pq = pytest.importorskip("pyarrow.parquet")
    rows = [{"text": f"row {i}", "n": i} for i in range(2500)]  # more than one batch
    path = tmp_path / "d.parquet"
    pq.write_table(pa.Table.from_pylist(rows), path, row_group_size=700)
    out = list(iter_rows(path))
    assert [line for line, _ in out] == list(range(1, 2501))
    assert [row for _, row in out] == rows


def test_parquet_nested_messages(tmp_path: Path) -> None:
    pa = pytest.importorskip("pyarrow")
    pq = pytest.importorskip("pyarrow.parquet")
    rows = [{"messages": [{"role": "user", "content": "q"}, {"role": "assistant", "content": "a"}]}]
    path = tmp_path / "d.parquet"
    pq.write_table(pa.Table.from_pylist(rows), path)
    assert list(iter_rows(path)) == [(1, rows[0])]


def test_corrupt_parquet(tmp_path: Path) -> None:
    path = tmp_path / "d.parquet"
    path.write_bytes(b"this is not parquet")
    with pytest.raises(DataError, match="cannot read Parquet") as exc:
        list(iter_rows(path))
    assert exc.value.source == str(path)


# ---------------------------------------------------------------- saved datasets


def test_saved_dataset(tmp_path: Path) -> None:
    datasets = pytest.importorskip("datasets")
    rows = [{"text": "a"}, {"text": "b"}]
    datasets.Dataset.from_list(rows).save_to_disk(str(tmp_path / "ds"))
    assert list(iter_rows(tmp_path / "ds")) == [(1, rows[0]), (2, rows[1])]


def test_saved_dataset_dict_split(tmp_path: Path) -> None:
    datasets = pytest.importorskip("datasets")
    dd = datasets.DatasetDict(
        train=datasets.Dataset.from_list([{"text": "t"}]),
        validation=datasets.Dataset.from_list([{"text": "v1"}, {"text": "v2"}]),
    )
    dd.save_to_disk(str(tmp_path / "dd"))
    assert list(iter_rows(tmp_path / "dd")) == [(1, {"text": "t"})]
    assert [r["text"] for _, r in iter_rows(tmp_path / "dd", split="validation")] == ["v1", "v2"]
    with pytest.raises(DataError, match=r"no split 'test'.*'train', 'validation'"):
        iter_rows(tmp_path / "dd", split="test")


def test_plain_directory_is_rejected(tmp_path: Path) -> None:
    (tmp_path / "plain").mkdir()
    with pytest.raises(DataError, match="save_to_disk"):
        iter_rows(tmp_path / "plain")


# ---------------------------------------------------------------- file-level errors


def test_missing_file(tmp_path: Path) -> None:
    path = tmp_path / "nope.jsonl"
    with pytest.raises(DataError) as exc:
        iter_rows(path)  # raised at call time, not on first iteration
    assert exc.value.to_json() == {
        "source": str(path),
        "line": None,
        "field": None,
        "reason": "file not found",
    }


def test_unknown_extension_lists_supported(tmp_path: Path) -> None:
    path = _write(tmp_path / "d.txt", "hello\n")
    with pytest.raises(DataError, match=r"unsupported file type '\.txt'.*\.jsonl.*\.parquet"):
        iter_rows(path)


def test_file_level_errors_raise_even_with_handler(tmp_path: Path) -> None:
    with pytest.raises(DataError, match="file not found"):
        _collect(tmp_path / "nope.csv")
