"""A corpus of malformed and odd data files fed to ``tunesmith train`` in both modes (issue #14, 1).

Every file is written by :data:`CASES` (bytes in code, so the corpus is reviewable in one place)
and run through the real CLI with ``data.on_error=raise`` and ``data.on_error=skip``. Each case
states its outcome per mode:

* :class:`Err`: exit 2, the error names ``FILE:LINE: field '...': reason`` (or ``FILE: reason`` for
  a problem with the file as a whole) and leaves no run dir;
* :class:`Kept`: exit 2 because no record is usable; the rejects are kept in the run dir's
  ``rejects.jsonl`` (with a ``FAILED`` marker), the message names that path and starts with the
  first reject's line and reason;
* :class:`Loads`: trains one step; the named rejects and warning are there.

Data errors happen before the model is built (SFT and DPO read their data right after the
tokenizer), so most cases cost a tokenizer load.
"""

from __future__ import annotations

import gzip
import json
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
import yaml

from tests.helpers.runs import write_config
from tests.methods.test_dpo import write_dpo_config
from tunesmith.cli import main
from tunesmith.data.formats import load_examples
from tunesmith.data.preference import load_preference_pairs
from tunesmith.data.prompts import read_prompts
from tunesmith.data.records import DataError, NoUsableDataError
from tunesmith.models.load import load_tokenizer


@dataclass(frozen=True)
class Err:
    """Refused with an error naming ``line`` (None: the file) and ``field``; no run dir."""

    line: int | None
    field: str | None
    text: str


@dataclass(frozen=True)
class Kept:
    """No usable record; the reject for ``line`` is kept in the run dir, with ``text``."""

    line: int
    field: str | None
    text: str


@dataclass(frozen=True)
class Loads:
    """Trains; ``rejected`` lines are in rejects.jsonl, ``warning`` is printed."""

    rejected: tuple[int, ...] = ()
    warning: str | None = None


Outcome = Err | Kept | Loads


@dataclass(frozen=True)
class Case:
    name: str
    file: str
    data: bytes
    raise_: Outcome
    skip: Outcome
    method: str = "sft"
    overrides: tuple[str, ...] = field(default_factory=tuple)


def _jl(*rows: Any) -> bytes:
    return "".join(json.dumps(r) + "\n" for r in rows).encode()


def _chat(*turns: tuple[str, Any]) -> dict[str, Any]:
    return {"messages": [{"role": r, "content": c} for r, c in turns]}


def _same(outcome: Outcome) -> tuple[Outcome, Outcome]:
    return outcome, outcome


GOOD = _chat(("user", "2 plus 3?"), ("assistant", "It is 5."))
PAIR = {"prompt": "Is it near?", "chosen": "Yes.", "rejected": "No."}
IMAGE = {"type": "image_url", "image_url": {"url": "http://x/y.png"}}
DEEP = ("[" * 100_000 + "]" * 100_000 + "\n").encode()
NESTED: dict[str, Any] = {"x": 1}
for _ in range(150):
    NESTED = {"x": NESTED}
UTF8 = "not valid UTF-8 (byte 0xe9"
FIX = "data.on_error=skip records it"

CASES: list[Case] = [
    # -- bytes and lines
    Case("non_utf8", "d.jsonl", b'{"text": "caf\xe9"}\n', Err(1, None, UTF8), Kept(1, None, UTF8)),
    Case(
        "extra_data",
        "d.jsonl",
        b'{"text": "a"} {"text": "b"}\n',
        Err(1, None, "invalid JSON: Extra data"),
        Kept(1, None, "invalid JSON: Extra data"),
    ),
    Case(
        "scalar_line",
        "d.jsonl",
        b"42\n",
        Err(1, None, "expected a JSON object, got number"),
        Kept(1, None, "expected a JSON object, got number"),
    ),
    Case(
        "array_line",
        "d.jsonl",
        _jl([{"text": "a"}]),
        Err(1, None, "got list; a .jsonl file holds one object per line"),
        Kept(1, None, "got list; a .jsonl file holds one object per line"),
    ),
    Case(
        "gzip_named_jsonl",
        "d.jsonl",
        gzip.compress(_jl({"text": "a"})),
        *_same(Err(None, None, "is gzip-compressed but not named .gz; rename it to d.jsonl.gz")),
    ),
    Case(
        "not_gzip_named_gz",
        "d.jsonl.gz",
        _jl({"text": "a"}),
        *_same(Err(None, None, "cannot read file: Not a gzipped file")),
    ),
    Case(
        "deep_array",
        "d.jsonl",
        DEEP,
        Err(1, None, "nested deeper than 100 levels"),
        Kept(1, None, "nested deeper than 100 levels"),
    ),
    Case(
        "deep_object",
        "d.jsonl",
        _jl({"text": "a", "x": NESTED}),
        Err(1, None, "nested deeper than 100 levels"),
        Kept(1, None, "nested deeper than 100 levels"),
    ),
    Case(
        "broken_json",
        "d.jsonl",
        b"{not json\n",
        Err(1, None, "invalid JSON: Expecting property name"),
        Kept(1, None, "invalid JSON: Expecting property name"),
    ),
    Case(
        "unterminated_object",
        "d.jsonl",
        b'{"text": "a"\n',
        Err(1, None, "invalid JSON: Expecting ',' delimiter"),
        Kept(1, None, "invalid JSON: Expecting ',' delimiter"),
    ),
    Case(
        "blank_lines_then_bad",
        "d.jsonl",
        b'\n  \n{"text": 5}\n',
        Err(3, "text", "expected a string, got number"),
        Kept(3, "text", "expected a string, got number"),
    ),
    Case("empty_file", "d.jsonl", b"", *_same(Err(None, None, "no records (the file is empty"))),
    Case("blank_only", "d.jsonl", b"\n \r\n", *_same(Err(None, None, "no records"))),
    Case(
        "unknown_keys",
        "d.jsonl",
        _jl({"foo": "bar"}),
        Err(1, None, "cannot detect the data format from keys 'foo'"),
        Kept(1, None, "cannot detect the data format from keys 'foo'"),
    ),
    # -- fields
    Case(
        "null_text",
        "d.jsonl",
        _jl({"text": None}),
        Err(1, "text", "expected a string, got null"),
        Kept(1, "text", "expected a string, got null"),
    ),
    Case(
        "blank_text",
        "d.jsonl",
        _jl({"text": "  "}),
        Err(1, "text", "is empty or only whitespace"),
        Kept(1, "text", "is empty or only whitespace"),
    ),
    Case(
        "messages_not_list",
        "d.jsonl",
        _jl({"messages": "hi"}),
        Err(1, "messages", "expected a list of turns, got string"),
        Kept(1, "messages", "expected a list of turns, got string"),
    ),
    Case(
        "unknown_role",
        "d.jsonl",
        _jl(_chat(("human", "x"), ("assistant", "y"))),
        Err(1, "messages[0].role", "unknown role 'human'"),
        Kept(1, "messages[0].role", "unknown role 'human'"),
    ),
    Case(
        "content_number",
        "d.jsonl",
        _jl(_chat(("user", 3), ("assistant", "y"))),
        Err(1, "messages[0].content", "expected a string or a list of text parts, got number"),
        Kept(1, "messages[0].content", "expected a string or a list of text parts, got number"),
    ),
    Case(
        "image_part",
        "d.jsonl",
        _jl(_chat(("user", [{"type": "text", "text": "see"}, IMAGE]), ("assistant", "y"))),
        Err(1, "messages[0].content[1].type", "'image_url' is not supported"),
        Kept(1, "messages[0].content[1].type", "'image_url' is not supported"),
    ),
    Case(
        "part_not_object",
        "d.jsonl",
        _jl(_chat(("user", ["hi"]), ("assistant", "y"))),
        Err(1, "messages[0].content[0]", "expected a content part"),
        Kept(1, "messages[0].content[0]", "expected a content part"),
    ),
    Case(
        "part_without_text",
        "d.jsonl",
        _jl(_chat(("user", [{"type": "text"}]), ("assistant", "y"))),
        Err(1, "messages[0].content[0].text", "expected a string, got null"),
        Kept(1, "messages[0].content[0].text", "expected a string, got null"),
    ),
    Case(
        "no_assistant",
        "d.jsonl",
        _jl(_chat(("user", "hi"))),
        Err(1, "messages", "conversation has no assistant turn"),
        Kept(1, "messages", "conversation has no assistant turn"),
    ),
    Case(
        "empty_assistant",
        "d.jsonl",
        _jl(_chat(("user", "hi"), ("assistant", " "))),
        Err(1, "messages[1].content", "assistant content is empty"),
        Kept(1, "messages[1].content", "assistant content is empty"),
    ),
    Case(
        "late_system",
        "d.jsonl",
        _jl(_chat(("user", "hi"), ("assistant", "y"), ("system", "s"))),
        Err(1, "messages[2].role", "only allowed as the first turn"),
        Kept(1, "messages[2].role", "only allowed as the first turn"),
    ),
    Case(
        "sharegpt_bad_from",
        "d.jsonl",
        _jl({"conversations": [{"from": "robot", "value": "x"}]}),
        Err(1, "conversations[0].from", "unknown role 'robot'"),
        Kept(1, "conversations[0].from", "unknown role 'robot'"),
    ),
    Case(
        "alpaca_output_number",
        "d.jsonl",
        _jl({"instruction": "i", "output": 3}),
        Err(1, "output", "expected a string, got number"),
        Kept(1, "output", "expected a string, got number"),
    ),
    # -- CSV and JSON documents
    Case(
        "csv_field_count",
        "d.csv",
        b"text\na,b\n",
        Err(2, None, "expected 1 fields (as in the header), got 2"),
        Kept(2, None, "expected 1 fields (as in the header), got 2"),
    ),
    Case(
        "csv_unterminated_quote",
        "d.csv",
        b'text\n"abc\n',
        *_same(Err(2, None, "CSV parse error")),
    ),
    Case(
        "csv_duplicate_header",
        "d.csv",
        b"text,text\na,b\n",
        *_same(Err(1, None, "duplicate column names in the header: ['text']")),
    ),
    Case("csv_non_utf8", "d.csv", b"text\ncaf\xe9\n", Err(2, None, UTF8), Kept(2, None, UTF8)),
    Case(
        "json_extra_data",
        "d.json",
        b'[{"text": "a"}] [1]',
        *_same(Err(1, None, "invalid JSON: Extra data at column 17; for one object per line")),
    ),
    Case(
        "json_scalar_document",
        "d.json",
        b"42",
        *_same(Err(None, None, "expected a list of objects at the top level, got number")),
    ),
    Case(
        "json_list_of_scalars",
        "d.json",
        b"[1]",
        Err(1, None, "expected a JSON object, got number"),
        Kept(1, None, "expected a JSON object, got number"),
    ),
    Case(
        "json_single_example",
        "d.json",
        json.dumps(GOOD).encode(),
        *_same(Err(None, None, "holds a single example; wrap it in a list")),
    ),
    Case("unsupported_suffix", "d.txt", b"hello\n", *_same(Err(None, None, "unsupported file"))),
    # -- records the encoder cannot train on
    Case(
        "dropped_for_length",
        "d.jsonl",
        _jl({"text": "word " * 400}),
        *_same(Kept(1, None, "tokens > max_length 96")),
        overrides=("data.truncation=drop",),
    ),
    Case(
        "no_trainable_token",
        "d.jsonl",
        _jl(_chat(("user", "word " * 400), ("assistant", "y"))),
        Err(1, "messages", f"no trainable token within max_length ({FIX}"),
        Kept(1, "messages", "no trainable token within max_length"),
    ),
    # -- odd but valid
    Case(
        "content_parts",
        "d.jsonl",
        _jl(
            _chat(
                ("user", [{"type": "text", "text": "2 plus "}, {"type": "text", "text": "3?"}]),
                ("assistant", "It is 5."),
            ),
            _chat(("user", "hi"), ("assistant", [{"type": "text", "text": "Hello."}])),
        ),
        *_same(Loads()),
    ),
    Case(
        "csv_unused_column",
        "d.csv",
        b"text,label\nThe fox ran.,1\nThe dog sat.,0\n",
        *_same(Loads(warning="d.csv: 'label' not used by the 'text' format")),
    ),
    Case(
        "bom_crlf_blank_lines",
        "d.jsonl",
        b"\xef\xbb\xbf" + _jl(GOOD).replace(b"\n", b"\r\n") + b"\r\n" + _jl(GOOD),
        *_same(Loads()),
    ),
    Case(
        "one_bad_line_among_good",
        "d.jsonl",
        _jl(GOOD) + b'{"messages": [}\n' + _jl(GOOD, GOOD),
        Err(2, None, "invalid JSON"),
        Loads(rejected=(2,)),
    ),
    # -- preference pairs (DPO)
    Case(
        "pref_identical",
        "p.jsonl",
        _jl({**PAIR, "rejected": "Yes."}),
        *_same(Kept(1, "chosen", "chosen and rejected are identical")),
        method="dpo",
    ),
    Case(
        "pref_empty_rejected",
        "p.jsonl",
        _jl({**PAIR, "rejected": " "}),
        *_same(Kept(1, "rejected", "rejected reply is empty")),
        method="dpo",
    ),
    Case(
        "pref_image_part",
        "p.jsonl",
        _jl({**PAIR, "prompt": [{"role": "user", "content": [IMAGE]}]}),
        Err(1, "prompt[0].content[0].type", "'image_url' is not supported"),
        Kept(1, "prompt[0].content[0].type", "'image_url' is not supported"),
        method="dpo",
    ),
    Case(
        "pref_non_utf8",
        "p.jsonl",
        b'{"prompt": "caf\xe9", "chosen": "a", "rejected": "b"}\n',
        Err(1, None, UTF8),
        Kept(1, None, UTF8),
        method="dpo",
    ),
    Case(
        "pref_missing_chosen",
        "p.jsonl",
        _jl({"prompt": "q", "rejected": "b"}),
        Err(1, "chosen", "missing"),
        Kept(1, "chosen", "missing"),
        method="dpo",
    ),
]


def _config(case: Case, tmp_path: Path, model: Path, data: Path) -> Path:
    train = {"max_steps": 1, "micro_batch_size": 2}
    if case.method == "dpo":
        path = write_dpo_config(tmp_path, model, data, train=train)
        cfg = yaml.safe_load(path.read_text())
        cfg["data"]["val_fraction"] = 0.0  # (`data` is also write_dpo_config's file argument)
        path.write_text(yaml.safe_dump(cfg))
        return path
    return write_config(tmp_path, model, data, data={"val_fraction": 0.0}, train=train)


def _where(path: Path, line: int | None, field_name: str | None) -> str:
    where = f"{path}:{line}:" if line is not None else f"{path}:"
    return where + (f" field '{field_name}':" if field_name else "")


def _check(outcome: Outcome, code: int, err: str, data: Path, run_dir: Path) -> None:
    if isinstance(outcome, Err):
        assert code == 2, err
        assert f"tunesmith: error: {_where(data, outcome.line, outcome.field)} " in err, err
        assert outcome.text in err and "Traceback" not in err, err
        assert not run_dir.exists()  # refused before anything is written
    elif isinstance(outcome, Kept):
        assert code == 2, err
        assert f"tunesmith: error: {_where(data, outcome.line, outcome.field)} " in err, err
        assert outcome.text in err, err
        rejects_file = run_dir / "rejects.jsonl"
        assert f"every reject with its reason is in {rejects_file}" in err, err
        rejects = [json.loads(x) for x in rejects_file.read_text().splitlines()]
        assert [(r["line"], r["field"]) for r in rejects] == [(outcome.line, outcome.field)]
        assert outcome.text in rejects[0]["reason"]
        assert (run_dir / "FAILED").is_file() and not (run_dir / "config.yaml").exists()
    else:
        assert code == 0, err
        assert (run_dir / "final").is_dir()
        rejects = [json.loads(x) for x in (run_dir / "rejects.jsonl").read_text().splitlines()]
        assert [r["line"] for r in rejects] == list(outcome.rejected)
        assert outcome.warning is None or outcome.warning in err, err


@pytest.mark.parametrize("mode", ["raise", "skip"])
@pytest.mark.parametrize("case", CASES, ids=[c.name for c in CASES])
def test_malformed_file(
    case: Case, mode: str, tmp_path: Path, tiny_llama: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    data = tmp_path / case.file
    data.write_bytes(case.data)
    cfg = _config(case, tmp_path, tiny_llama, data)
    capsys.readouterr()
    code = main(["train", str(cfg), f"data.on_error={mode}", *case.overrides])
    err = capsys.readouterr().err
    outcome = case.raise_ if mode == "raise" else case.skip
    _check(outcome, code, err, data, tmp_path / "runs" / "run")


def test_corpus_is_large_enough() -> None:
    assert len(CASES) >= 30 and len({c.name for c in CASES}) == len(CASES)


def test_a_failed_start_can_be_run_again_after_the_data_is_fixed(
    tmp_path: Path, tiny_llama: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    data = tmp_path / "d.jsonl"
    data.write_bytes(_jl(_chat(("user", "hi"))))
    cfg = write_config(
        tmp_path, tiny_llama, data, data={"val_fraction": 0.0}, train={"max_steps": 1}
    )
    assert main(["train", str(cfg), "data.on_error=skip"]) == 2
    run_dir = tmp_path / "runs" / "run"
    assert (run_dir / "FAILED").is_file()
    data.write_bytes(_jl(GOOD, GOOD))
    assert main(["train", str(cfg), "data.on_error=skip"]) == 0
    assert not (run_dir / "FAILED").exists() and (run_dir / "final").is_dir()


def test_text_content_parts_are_joined(tmp_path: Path) -> None:
    data = tmp_path / "d.jsonl"
    parts = [{"type": "text", "text": "2 plus "}, {"type": "text", "text": "3?"}]
    data.write_bytes(_jl(_chat(("user", parts), ("assistant", "It is 5."))))
    (example,), rejects = load_examples(data)
    assert example.messages[0].content == "2 plus 3?" and rejects == []


def test_preference_keys_no_form_reads_get_one_warning(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    data = tmp_path / "p.jsonl"
    data.write_bytes(_jl({**PAIR, "score": 3, "tag": "t"}, {**PAIR, "id": 7}))
    pairs, _ = load_preference_pairs(data)
    err = capsys.readouterr().err
    assert len(pairs) == 2 and err.count("warning") == 1
    assert f"{data}: 'score', 'id' not used by preference pairs" in err


@pytest.mark.parametrize("mode", ["raise", "skip"])
def test_prompt_reader_passes_the_readers_error_through(
    mode: str, tmp_path: Path, tiny_llama: Path
) -> None:
    data = tmp_path / "q.jsonl"
    data.write_bytes(b'{"prompt": "caf\xe9"}\n' + _jl({"prompt": "2 plus 3?"}))
    tokenizer = load_tokenizer(tiny_llama)
    rejects: list[dict[str, Any]] = []
    if mode == "raise":
        with pytest.raises(DataError, match=re.escape(f"{data}:1: {UTF8}")):
            read_prompts([str(data)], tokenizer, on_error=mode, rejects=rejects)
        return
    got = read_prompts([str(data)], tokenizer, on_error=mode, rejects=rejects)
    assert [r.line for r in got] == [2] and [r["line"] for r in rejects] == [1]
    data.write_bytes(b'{"prompt": "caf\xe9"}\n')
    with pytest.raises(NoUsableDataError, match=re.escape(f"{data}:1: {UTF8}")) as caught:
        read_prompts([str(data)], tokenizer, on_error=mode, rejects=[])
    assert [r["line"] for r in caught.value.rejects] == [1]
