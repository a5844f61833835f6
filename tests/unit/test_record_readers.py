"""The one reader per record kind: preference data (train/held-out) and prompts."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from tunesmith.data.preference import read_preference_data
from tunesmith.data.prompts import read_prompts
from tunesmith.data.records import DataError


def _write(path: Path, rows: list[dict[str, Any]]) -> Path:
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return path


def _pairs(n: int) -> list[dict[str, Any]]:
    return [{"prompt": f"q{i}", "chosen": f"good {i}", "rejected": f"bad {i}"} for i in range(n)]


def test_preference_data_holds_out_with_the_shared_rule(tmp_path: Path) -> None:
    f = _write(tmp_path / "p.jsonl", _pairs(20))
    a = read_preference_data(str(f), None, val_fraction=0.25, seed=7)
    b = read_preference_data(str(f), None, val_fraction=0.25, seed=7)
    assert len(a.val) == 5 and len(a.train) == 15
    assert [p.line for p in a.val] == [p.line for p in b.val]  # fixed seed
    assert [p.line for p in a.val] == sorted(p.line for p in a.val)  # file order
    capped = read_preference_data(str(f), None, val_fraction=0.25, max_val=2, seed=7)
    assert len(capped.val) == 2 and len(capped.train) == 15
    tiny = read_preference_data(str(f), None, val_fraction=0.01, seed=7)
    assert len(tiny.val) == 1  # a positive fraction never rounds to an empty held-out set


def test_preference_validation_files_are_capped_and_rejects_kept(tmp_path: Path) -> None:
    train = _write(
        tmp_path / "t.jsonl", [*_pairs(4), {"prompt": "x", "chosen": "s", "rejected": "s"}]
    )
    val = _write(tmp_path / "v.jsonl", _pairs(6))
    got = read_preference_data(str(train), str(val), max_val=3, seed=1)
    assert len(got.train) == 4 and len(got.val) == 3
    assert [r["rule"] for r in got.rejects] == ["identical"]


def test_no_usable_pair_counts_the_rejects(tmp_path: Path) -> None:
    f = _write(tmp_path / "p.jsonl", [{"prompt": "x", "chosen": "s", "rejected": "s"}])
    with pytest.raises(DataError, match="no usable preference pair \\(1 rejected"):
        read_preference_data(str(f), None)


def test_prompts_from_chat_examples_and_preference_rows(
    tmp_path: Path, tiny_tokenizer_no_bos: Any
) -> None:
    f = _write(
        tmp_path / "p.jsonl",
        [
            {
                "messages": [
                    {"role": "user", "content": "hi"},
                    {"role": "assistant", "content": "yo"},
                ]
            },
            {"prompt": "q", "chosen": "a", "rejected": "b", "answer": "1"},
        ],
    )
    recs = read_prompts([str(f)], tiny_tokenizer_no_bos)
    assert [m.role for m in recs[0].messages] == ["user"]  # the reference reply is dropped
    assert recs[1].text == "q" and recs[1].fields == {"answer": "1"}


def test_prompt_errors_skip_into_rejects(tmp_path: Path, tiny_tokenizer_no_bos: Any) -> None:
    f = _write(tmp_path / "p.jsonl", [{"prompt": "ok"}, {"prompt": ""}])
    with pytest.raises(DataError, match=r"p\.jsonl:2: field 'prompt'"):
        read_prompts([str(f)], tiny_tokenizer_no_bos)
    rejects: list[dict[str, Any]] = []
    recs = read_prompts([str(f)], tiny_tokenizer_no_bos, on_error="skip", rejects=rejects)
    assert len(recs) == 1
    assert rejects[0]["line"] == 2 and rejects[0]["field"] == "prompt"
