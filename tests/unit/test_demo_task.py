"""The quickstart demo task: the strict scorer and the shipped data files."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from tunesmith.examples.demo_task import score_reply

ROOT = Path(__file__).resolve().parents[2]
DEMO = ROOT / "data" / "demo"
REF = '{"name": "Maria Lopez", "age": 34, "city": "Lisbon"}'


# --- scorer -------------------------------------------------------------------------------


def test_exact_reply_scores():
    assert score_reply(REF, REF)


def test_surrounding_whitespace_is_ignored():
    assert score_reply(f"\n  {REF}  \n", REF)


def test_key_order_and_inner_whitespace_are_not_checked():
    assert score_reply('{"city":"Lisbon","age":34,"name":"Maria Lopez"}', REF)
    assert score_reply('{\n  "name": "Maria Lopez",\n  "age": 34,\n  "city": "Lisbon"\n}', REF)


@pytest.mark.parametrize(
    "reply",
    [
        f"```json\n{REF}\n```",  # code fence
        f"```\n{REF}\n```",
        f"Here is the JSON: {REF}",  # prose before
        f"{REF}\nThis JSON describes Maria.",  # prose after
        f"{REF}\n{REF}",  # two objects
        "",
        "Maria Lopez, 34, Lisbon",
    ],
)
def test_anything_around_the_json_fails(reply):
    assert not score_reply(reply, REF)


@pytest.mark.parametrize(
    "reply",
    [
        '{"name": "Maria Lopez", "age": 35, "city": "Lisbon"}',  # wrong value
        '{"name": "Lopez", "age": 34, "city": "Lisbon"}',
        '{"name": "Maria Lopez", "age": "34", "city": "Lisbon"}',  # string age
        '{"name": "Maria Lopez", "age": 34.0, "city": "Lisbon"}',  # float age
        '{"name": "Maria Lopez", "age": 34}',  # missing key
        '{"name": "Maria Lopez", "age": 34, "city": "Lisbon", "country": "Portugal"}',  # extra key
        '{"full_name": "Maria Lopez", "age": 34, "location": "Lisbon"}',  # other key names
        '{"person": {"name": "Maria Lopez", "age": 34, "city": "Lisbon"}}',  # nested
        '[{"name": "Maria Lopez", "age": 34, "city": "Lisbon"}]',  # not an object
        '{"name": "Maria Lopez", "age": 34, "city": "Lisbon"',  # truncated
    ],
)
def test_wrong_content_fails(reply):
    assert not score_reply(reply, REF)


# --- shipped data -------------------------------------------------------------------------


def _rows(split: str) -> list[dict]:
    path = DEMO / f"{split}.jsonl"
    assert path.is_file(), f"{path} is missing; run scripts/make_demo_data.py"
    return [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines()]


@pytest.mark.parametrize(("split", "low", "high"), [("train", 400, 600), ("test", 50, 100)])
def test_split_files_parse(split, low, high):
    rows = _rows(split)
    assert low <= len(rows) <= high
    for row in rows:
        user, assistant = row["messages"]
        assert user["role"] == "user" and user["content"].strip()
        assert assistant["role"] == "assistant"
        assert assistant["content"] == row["answer"]
        assert "\n" not in row["answer"]
        fields = json.loads(row["answer"])
        assert list(fields) == ["name", "age", "city"]
        assert type(fields["age"]) is int
        assert score_reply(row["answer"], row["answer"])
        # every value can be read off the sentence
        assert all(str(v) in user["content"] for v in fields.values())


def test_no_test_prompt_name_or_city_appears_in_train():
    train, test = _rows("train"), _rows("test")
    train_prompts = {r["messages"][0]["content"] for r in train}
    test_prompts = [r["messages"][0]["content"] for r in test]
    assert len(set(test_prompts)) == len(test_prompts)
    assert not train_prompts & set(test_prompts)
    train_fields = [json.loads(r["answer"]) for r in train]
    train_words = {w for f in train_fields for w in f["name"].split()}
    train_cities = {f["city"] for f in train_fields}
    for row in test:
        fields = json.loads(row["answer"])
        assert not set(fields["name"].split()) & train_words, fields
        assert fields["city"] not in train_cities, fields


def test_generator_is_deterministic(tmp_path):
    import runpy

    gen = runpy.run_path(str(ROOT / "scripts" / "make_demo_data.py"))
    gen["main"](["--out", str(tmp_path)])
    for split in ("train", "test"):
        assert (tmp_path / f"{split}.jsonl").read_bytes() == (DEMO / f"{split}.jsonl").read_bytes()
