"""Unit tests for tunesmith.data.formats: detection, normalisation, errors and load_examples."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from tunesmith.data.formats import FORMATS, detect_format, load_examples, to_example
from tunesmith.data.records import DataError, Example, Message

SRC = "data/train.jsonl"


def _ex(row: dict[str, Any], fmt: str, line: int = 7) -> Example:
    return to_example(row, fmt, SRC, line)


def _error(row: dict[str, Any], fmt: str, line: int = 7) -> DataError:
    with pytest.raises(DataError) as exc:
        to_example(row, fmt, SRC, line)
    assert exc.value.source == SRC and exc.value.line == line
    assert f"{SRC}:{line}" in str(exc.value)
    return exc.value


def _pairs(example: Example) -> list[tuple[str, str]]:
    return [(m.role, m.content) for m in example.messages]


def _write_jsonl(path: Path, rows: list[Any]) -> Path:
    path.write_text("".join(json.dumps(r) + "\n" for r in rows), encoding="utf-8")
    return path


# ---------------------------------------------------------------- detection


@pytest.mark.parametrize(
    ("row", "fmt"),
    [
        ({"messages": [], "text": "ignored"}, "messages"),
        ({"conversations": []}, "sharegpt"),
        ({"instruction": "i", "input": "", "output": "o"}, "alpaca"),
        ({"prompt": "p", "completion": "c"}, "prompt_completion"),
        ({"text": "t", "id": 3}, "text"),
    ],
)
def test_detect_format(row: dict[str, Any], fmt: str) -> None:
    assert detect_format(row, SRC, 1) == fmt
    assert fmt in FORMATS


def test_detect_format_failure_names_keys_and_expectations() -> None:
    with pytest.raises(DataError) as exc:
        detect_format({"instruction": "i", "response": "r"}, SRC, 4)
    assert exc.value.line == 4 and exc.value.source == SRC
    message = str(exc.value)
    assert "'instruction', 'response'" in message
    for expected in ("messages", "conversations", "instruction, output", "prompt, completion"):
        assert expected in message


# ---------------------------------------------------------------- alpaca


def test_alpaca_without_input() -> None:
    ex = _ex({"instruction": "Add 2+2.", "input": "", "output": "4"}, "alpaca")
    assert _pairs(ex) == [("user", "Add 2+2."), ("assistant", "4")]
    assert (ex.source, ex.line, ex.text, ex.meta) == (SRC, 7, None, {})


def test_alpaca_with_input_system_and_meta() -> None:
    row = {
        "instruction": "Translate.",
        "input": " Bonjour ",
        "output": " Hello\n",
        "system": "Be terse.",
        "answer": "Hello",
        "tag": "mt",
    }
    ex = _ex(row, "alpaca")
    assert _pairs(ex) == [
        ("system", "Be terse."),
        ("user", "Translate.\n\n Bonjour "),
        ("assistant", " Hello\n"),  # kept exactly
    ]
    assert ex.meta == {"answer": "Hello", "tag": "mt"}


def test_alpaca_null_optional_fields() -> None:
    ex = _ex({"instruction": "i", "input": None, "system": None, "output": "o"}, "alpaca")
    assert _pairs(ex) == [("user", "i"), ("assistant", "o")]


@pytest.mark.parametrize(
    ("row", "field", "reason"),
    [
        ({"instruction": "i"}, "output", "missing"),
        ({"output": "o"}, "instruction", "missing"),
        ({"instruction": "i", "output": "  \n"}, "output", "whitespace"),
        ({"instruction": "i", "output": 4}, "output", "got number"),
        ({"instruction": ["i"], "output": "o"}, "instruction", "got list"),
        ({"instruction": "i", "input": 3, "output": "o"}, "input", "got number"),
    ],
)
def test_alpaca_errors(row: dict[str, Any], field: str, reason: str) -> None:
    err = _error(row, "alpaca")
    assert err.field_name == field and reason in err.reason
    assert f"field '{field}'" in str(err)


# ---------------------------------------------------------------- sharegpt


def test_sharegpt_multi_turn_with_system_and_role_mapping() -> None:
    row = {
        "id": "abc",
        "conversations": [
            {"from": "system", "value": "You are kind."},
            {"from": "human", "value": "Hi"},
            {"from": "gpt", "value": "Hello!"},
            {"from": "user", "value": "Bye"},
            {"from": "chatgpt", "value": "Bye!", "weight": 1},
        ],
    }
    ex = _ex(row, "sharegpt")
    assert _pairs(ex) == [
        ("system", "You are kind."),
        ("user", "Hi"),
        ("assistant", "Hello!"),
        ("user", "Bye"),
        ("assistant", "Bye!"),
    ]
    assert ex.meta == {"id": "abc"}


@pytest.mark.parametrize("who", ["gpt", "assistant", "chatgpt", "bing", "bard", "model"])
def test_sharegpt_assistant_aliases(who: str) -> None:
    row = {"conversations": [{"from": "human", "value": "q"}, {"from": who, "value": "a"}]}
    assert _ex(row, "sharegpt").messages[1] == Message("assistant", "a")


def test_sharegpt_top_level_system() -> None:
    turns = [{"from": "human", "value": "q"}, {"from": "gpt", "value": "a"}]
    ex = _ex({"system": "S", "conversations": turns}, "sharegpt")
    assert _pairs(ex)[0] == ("system", "S")
    both = {"system": "S", "conversations": [{"from": "system", "value": "T"}, *turns]}
    assert _error(both, "sharegpt").field_name == "system"


@pytest.mark.parametrize(
    ("turns", "field", "reason"),
    [
        ([], "conversations", "empty conversation"),
        ([{"from": "robot", "value": "x"}], "conversations[0].from", "unknown role 'robot'"),
        ([{"value": "x"}], "conversations[0].from", "missing"),
        ([{"from": "human"}], "conversations[0].value", "missing"),
        ([{"from": "human", "value": "q"}], "conversations", "no assistant turn"),
        (
            [{"from": "human", "value": "q"}, {"from": "gpt", "value": 5}],
            "conversations[1].value",
            "got number",
        ),
        (["hi"], "conversations[0]", "got string"),
    ],
)
def test_sharegpt_errors(turns: Any, field: str, reason: str) -> None:
    err = _error({"conversations": turns}, "sharegpt")
    assert err.field_name == field and reason in err.reason


# ---------------------------------------------------------------- messages


def test_messages_multi_turn_with_system_and_extra_keys() -> None:
    row = {
        "messages": [
            {"role": "system", "content": "Sys"},
            {"role": "user", "content": "Q1", "name": "alice"},
            {"role": "assistant", "content": "A1"},
            {"role": "user", "content": "Q2"},
            {"role": "assistant", "content": " A2 "},
        ],
        "answer": "A2",
    }
    ex = _ex(row, "messages")
    assert ex.is_chat
    assert _pairs(ex) == [
        ("system", "Sys"),
        ("user", "Q1"),
        ("assistant", "A1"),
        ("user", "Q2"),
        ("assistant", " A2 "),
    ]
    assert ex.meta == {"answer": "A2"}


@pytest.mark.parametrize(
    ("messages", "field", "reason"),
    [
        ("hello", "messages", "expected a list"),
        ([], "messages", "empty conversation"),
        ([{"role": "human", "content": "x"}], "messages[0].role", "unknown role 'human'"),
        ([{"role": "user", "content": 3}], "messages[0].content", "got number"),
        (  # OpenAI content parts: text parts are read (tests/methods/test_malformed_corpus.py),
            # any other part type is refused by name
            [{"role": "user", "content": [{"type": "image_url", "image_url": {"url": "u"}}]}],
            "messages[0].content[0].type",
            "'image_url' is not supported",
        ),
        ([{"role": "user", "content": "q"}], "messages", "no assistant turn"),
        (
            [
                {"role": "user", "content": "q"},
                {"role": "assistant", "content": "a"},
                {"role": "user", "content": "q"},
                {"role": "assistant", "content": ""},
            ],
            "messages[3].content",
            "empty",
        ),
        (
            [
                {"role": "user", "content": "q"},
                {"role": "system", "content": "late"},
                {"role": "assistant", "content": "a"},
            ],
            "messages[1].role",
            "only allowed as the first",
        ),
    ],
)
def test_messages_errors(messages: Any, field: str, reason: str) -> None:
    err = _error({"messages": messages}, "messages")
    assert err.field_name == field and reason in err.reason
    assert f"field '{field}'" in str(err)


# ---------------------------------------------------------------- prompt_completion / text


def test_prompt_completion() -> None:
    ex = _ex({"prompt": "2+2=", "completion": " 4", "id": 1}, "prompt_completion")
    assert _pairs(ex) == [("user", "2+2="), ("assistant", " 4")]
    assert ex.meta == {"id": 1}
    assert _error({"prompt": "p", "completion": " "}, "prompt_completion").field_name == (
        "completion"
    )
    assert _error({"completion": "c"}, "prompt_completion").field_name == "prompt"


def test_text() -> None:
    ex = _ex({"text": "  raw text\n", "source_url": "u"}, "text")
    assert (ex.text, ex.messages, ex.is_chat, ex.meta) == (
        "  raw text\n",
        (),
        False,
        {"source_url": "u"},
    )
    assert _error({"text": None}, "text").field_name == "text"
    assert _error({"text": ""}, "text").field_name == "text"


def test_unknown_format_name() -> None:
    with pytest.raises(ValueError, match="unknown data format"):
        to_example({"text": "x"}, "chatml", SRC, 1)


# ---------------------------------------------------------------- load_examples


def test_load_examples_auto_jsonl(tmp_path: Path) -> None:
    rows = [{"instruction": f"i{n}", "output": f"o{n}"} for n in range(3)]
    path = _write_jsonl(tmp_path / "d.jsonl", rows)
    examples, rejects = load_examples(path)
    assert rejects == []
    assert [(e.source, e.line) for e in examples] == [(str(path), n) for n in (1, 2, 3)]
    assert _pairs(examples[2]) == [("user", "i2"), ("assistant", "o2")]


def test_load_examples_csv_alpaca(tmp_path: Path) -> None:
    path = tmp_path / "d.csv"
    path.write_text("instruction,input,output\nSum,1 2,3\nHi,,Hello\n", encoding="utf-8")
    examples, _ = load_examples(path, fmt="alpaca")
    assert [_pairs(e)[0][1] for e in examples] == ["Sum\n\n1 2", "Hi"]
    assert [e.line for e in examples] == [2, 3]


def test_load_examples_format_detected_once(tmp_path: Path) -> None:
    rows = [{"text": "a"}, {"prompt": "p", "completion": "c"}]
    path = _write_jsonl(tmp_path / "d.jsonl", rows)
    with pytest.raises(DataError) as exc:
        load_examples(path)
    assert (exc.value.line, exc.value.field_name) == (2, "text")
    assert "'text' format" in exc.value.reason


def test_load_examples_explicit_format_mismatch(tmp_path: Path) -> None:
    path = _write_jsonl(tmp_path / "d.jsonl", [{"text": "a"}])
    with pytest.raises(DataError) as exc:
        load_examples(path, fmt="messages")
    assert (exc.value.line, exc.value.field_name) == (1, "messages")


def test_load_examples_skip_keeps_good_and_records_every_bad(tmp_path: Path) -> None:
    good = {"messages": [{"role": "user", "content": "q"}, {"role": "assistant", "content": "a"}]}
    lines = [
        json.dumps({"mystery": 1}),  # 1: format not detectable -> reject, detect from next row
        json.dumps(good),  # 2
        "{broken",  # 3: invalid JSON
        json.dumps({"messages": [{"role": "user", "content": "q"}]}),  # 4: no assistant
        json.dumps([1, 2]),  # 5: not an object
        json.dumps({**good, "id": 6}),  # 6
        json.dumps({"text": "wrong format"}),  # 7: not the detected format
        json.dumps(good),  # 8
    ]
    path = tmp_path / "d.jsonl"
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    examples, rejects = load_examples(path, on_error="skip")
    assert [e.line for e in examples] == [2, 6, 8]
    assert [r["line"] for r in rejects] == [1, 3, 4, 5, 7]
    assert len(examples) + len(rejects) == len(lines)
    by_line = {r["line"]: r for r in rejects}
    assert by_line[3]["row"] == "{broken" and by_line[3]["reason"].startswith("invalid JSON")
    assert by_line[4]["field"] == "messages" and by_line[4]["row"]["messages"][0]["role"] == "user"
    assert by_line[5]["row"] == [1, 2]
    assert by_line[7]["field"] == "messages"
    assert all(r["source"] == str(path) and r["reason"] for r in rejects)
    json.dumps(rejects)  # rejects are JSON-serialisable
    with pytest.raises(DataError) as exc:
        load_examples(path)
    assert exc.value.line == 1


def test_load_examples_skip_still_raises_file_errors(tmp_path: Path) -> None:
    with pytest.raises(DataError, match="file not found"):
        load_examples(tmp_path / "missing.jsonl", on_error="skip")
    (tmp_path / "d.xml").write_text("<a/>", encoding="utf-8")
    with pytest.raises(DataError, match="unsupported file type"):
        load_examples(tmp_path / "d.xml", on_error="skip")


def test_load_examples_from_saved_dataset_dict(tmp_path: Path) -> None:
    datasets = pytest.importorskip("datasets")
    dd = datasets.DatasetDict(
        train=datasets.Dataset.from_list([{"prompt": "p", "completion": "c"}]),
        test=datasets.Dataset.from_list([{"prompt": "p2", "completion": "c2"}]),
    )
    dd.save_to_disk(str(tmp_path / "dd"))
    examples, _ = load_examples(tmp_path / "dd", split="test")
    assert _pairs(examples[0]) == [("user", "p2"), ("assistant", "c2")]


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [({"fmt": "chatml"}, "unknown data format"), ({"on_error": "x"}, "on_error")],
)
def test_load_examples_bad_arguments(tmp_path: Path, kwargs: dict[str, Any], match: str) -> None:
    path = _write_jsonl(tmp_path / "d.jsonl", [{"text": "a"}])
    with pytest.raises(ValueError, match=match):
        load_examples(path, **kwargs)
