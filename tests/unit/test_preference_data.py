"""Preference records: every accepted form, rejects with their rule, encoding and truncation."""

from __future__ import annotations

import csv
import json
from pathlib import Path
from typing import Any

import pytest

from tests.helpers.tiny_tokenizer import make_tiny_tokenizer
from tunesmith.data.preference import (
    PreferencePair,
    encode_pair,
    load_preference_pairs,
    truncate_pair,
)
from tunesmith.data.records import DataError, Message


def _jsonl(path: Path, rows: list[Any]) -> Path:
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return path


USER_Q = {"role": "user", "content": "Q?"}


def test_every_record_form_gives_the_same_pair(tmp_path: Path) -> None:
    rows = [
        {"prompt": "Q?", "chosen": "good", "rejected": "bad"},
        {"messages": [USER_Q], "chosen": "good", "rejected": "bad", "tag": "t"},
        {
            "prompt": [USER_Q],
            "chosen": [{"role": "assistant", "content": "good"}],
            "rejected": [{"role": "assistant", "content": "bad"}],
        },
        {
            "chosen": [USER_Q, {"role": "assistant", "content": "good"}],
            "rejected": [USER_Q, {"role": "assistant", "content": "bad"}],
        },
    ]
    pairs, rejects = load_preference_pairs(_jsonl(tmp_path / "p.jsonl", rows))
    assert rejects == []
    assert {(p.prompt, p.chosen, p.rejected) for p in pairs} == {
        ((Message("user", "Q?"),), "good", "bad")
    }
    assert [p.line for p in pairs] == [1, 2, 3, 4]
    assert [p.tag for p in pairs] == [None, "t", None, None]


def test_csv_rows_are_read_with_their_line(tmp_path: Path) -> None:
    path = tmp_path / "p.csv"
    with path.open("w", newline="") as fh:
        writer = csv.writer(fh)
        writer.writerow(["prompt", "chosen", "rejected"])
        writer.writerow(["Q?", "good", "bad"])
    pairs, _ = load_preference_pairs(path)
    assert pairs == [PreferencePair((Message("user", "Q?"),), "good", "bad", str(path), 2)]


def test_useless_pairs_are_rejected_with_their_rule_never_dropped(tmp_path: Path) -> None:
    rows = [
        {"prompt": "Q?", "chosen": "same", "rejected": "same"},
        {"prompt": "Q?", "chosen": "", "rejected": "bad"},
        {"prompt": "Q?", "chosen": "good", "rejected": " \n"},
        {"prompt": "Q?", "chosen": "good", "rejected": "bad"},
    ]
    # Even with on_error="raise" these are rejects, not errors: the rows are well formed.
    pairs, rejects = load_preference_pairs(_jsonl(tmp_path / "p.jsonl", rows))
    assert [p.line for p in pairs] == [4]
    assert [(r["line"], r["rule"]) for r in rejects] == [
        (1, "identical"),
        (2, "empty_chosen"),
        (3, "empty_rejected"),
    ]
    assert rejects[0]["record"] == rows[0] and rejects[0]["source"].endswith("p.jsonl")


@pytest.mark.parametrize(
    ("row", "field", "reason"),
    [
        ({"prompt": "Q?", "chosen": "x"}, "rejected", "missing"),
        ({"prompt": 3, "chosen": "x", "rejected": "y"}, "prompt", "expected a string, got number"),
        (
            {"messages": [{"role": "bot", "content": "Q"}], "chosen": "x", "rejected": "y"},
            "messages[0].role",
            "unknown role",
        ),
        (
            {
                "messages": [USER_Q, {"role": "assistant", "content": "A"}],
                "chosen": "x",
                "rejected": "y",
            },
            "messages",
            "must end with a user turn",
        ),
        (
            {
                "chosen": [USER_Q, {"role": "assistant", "content": "a"}],
                "rejected": [
                    {"role": "user", "content": "other"},
                    {"role": "assistant", "content": "b"},
                ],
            },
            "rejected",
            "differ from chosen",
        ),
        (
            {"chosen": [{"role": "assistant", "content": "a"}], "rejected": "b"},
            "chosen",
            "conversations",
        ),
    ],
)
def test_malformed_rows_raise_naming_line_and_field_or_become_rejects(
    tmp_path: Path, row: dict[str, Any], field: str, reason: str
) -> None:
    path = _jsonl(tmp_path / "p.jsonl", [{"prompt": "Q?", "chosen": "a", "rejected": "b"}, row])
    with pytest.raises(DataError) as info:
        load_preference_pairs(path)
    assert (info.value.line, info.value.field_name) == (2, field)
    assert reason in info.value.reason
    pairs, rejects = load_preference_pairs(path, on_error="skip")
    assert len(pairs) == 1
    assert [(r["line"], r["rule"], r["field"]) for r in rejects] == [(2, "malformed", field)]
    assert rejects[0]["record"] == row


def test_unparseable_line_is_a_malformed_reject(tmp_path: Path) -> None:
    path = tmp_path / "p.jsonl"
    path.write_text('{"prompt": "Q?", "chosen": "a", "rejected": "b"}\n{not json\n')
    _, rejects = load_preference_pairs(path, on_error="skip")
    assert [(r["line"], r["rule"], r["record"]) for r in rejects] == [(2, "malformed", "{not json")]


def test_encoding_prompt_has_the_generation_header_and_responses_end_with_eot() -> None:
    tok = make_tiny_tokenizer()
    pair = PreferencePair((Message("user", "Hello"),), "Good morning.", "Go.", "s", 1)
    enc = encode_pair(pair, tok, max_length=256)
    assert tok.decode(enc.prompt_ids).endswith(
        "<|im_start|>user\nHello<|im_end|>\n<|im_start|>assistant\n"
    )
    assert enc.chosen_ids[-1] == enc.rejected_ids[-1] == tok.convert_tokens_to_ids("<|im_end|>")
    assert tok.decode(enc.chosen_ids) == "Good morning.<|im_end|>"
    assert tok.decode(enc.rejected_ids) == "Go.<|im_end|>"
    assert not enc.truncated
    # Prompt + response is the chat template's full conversation, token for token.
    full = tok.apply_chat_template(
        [{"role": "user", "content": "Hello"}, {"role": "assistant", "content": "Good morning."}],
        tokenize=False,
    )
    assert tok.decode(enc.prompt_ids + enc.chosen_ids) == "<s>" + full.rstrip()  # BOS once


def test_truncation_cuts_the_prompt_from_the_left_then_responses_from_the_right() -> None:
    prompt, chosen, rejected = list(range(10)), [20, 21, 22], [30, 31, 32, 33, 34]
    # Fits: 10 + 5 = 15.
    assert not truncate_pair(prompt, chosen, rejected, 15).truncated
    # 12 tokens: the prompt keeps its last 12 - 5 = 7 tokens; responses intact.
    cut = truncate_pair(prompt, chosen, rejected, 12)
    assert cut.truncated and cut.prompt_ids == list(range(3, 10))
    assert (cut.chosen_ids, cut.rejected_ids) == (chosen, rejected)
    # 8 tokens: the prompt keeps at least 8 // 2 = 4 (its ending), responses get the other 4.
    cut = truncate_pair(prompt, chosen, rejected, 8)
    assert cut.prompt_ids == [6, 7, 8, 9]
    assert (cut.chosen_ids, cut.rejected_ids) == ([20, 21, 22], [30, 31, 32, 33])
