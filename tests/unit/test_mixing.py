"""Mixing, replay and multi-task sampling: deterministic, as configured, errors named."""

from __future__ import annotations

import json
import random
from pathlib import Path

import pytest

from tunesmith.config import ConfigError, DataSection, load_config
from tunesmith.data.dataset import prepare_data
from tunesmith.data.mixing import draw, replay_count, temperature_counts
from tunesmith.data.records import DataError


def test_draw_copies_then_samples() -> None:
    rng = random.Random(0)
    assert sorted(draw(3, 3, rng)) == [0, 1, 2]
    seven = draw(7, 3, rng)
    assert len(seven) == 7 and all(seven.count(i) in (2, 3) for i in range(3))
    assert len(set(draw(2, 10, rng))) == 2
    assert draw(5, 20, random.Random(1)) == draw(5, 20, random.Random(1))


def test_temperature_counts_hand_worked() -> None:
    # sizes 900 and 100, total 1000. T=1: proportional. T=2: sqrt -> 30 : 10 -> 750 / 250.
    assert temperature_counts({"a": 900, "b": 100}, 1.0) == {"a": 900, "b": 100}
    assert temperature_counts({"a": 900, "b": 100}, 2.0) == {"a": 750, "b": 250}
    flat = temperature_counts({"a": 900, "b": 100}, 1000.0)
    assert abs(flat["a"] - 500) <= 2


def test_replay_fraction() -> None:
    assert replay_count(90, 0.1) == 10  # 10 / (90 + 10) = 10%
    assert replay_count(300, 0.25) == 100


def _write(path: Path, n: int, word: str, tag: str | None = None) -> str:
    with path.open("w") as fh:
        for i in range(n):
            row = {
                "messages": [
                    {"role": "user", "content": f"{word} {i}"},
                    {"role": "assistant", "content": f"{word} reply {i}"},
                ]
            }
            if tag:
                row["task"] = tag
            fh.write(json.dumps(row) + "\n")
    return str(path)


def _data(**kwargs) -> DataSection:
    return DataSection(val_fraction=0.0, max_length=64, **kwargs)


def _tags(prepared) -> dict[str, int]:
    out: dict[str, int] = {}
    for ex in prepared.train.examples:
        out[ex.meta.get("tag", "")] = out.get(ex.meta.get("tag", ""), 0) + 1
    return out


def test_weights_counts_and_replay(tmp_path: Path, tiny_tokenizer) -> None:
    a = _write(tmp_path / "a.jsonl", 20, "alpha")
    b = _write(tmp_path / "b.jsonl", 10, "beta")
    g = _write(tmp_path / "general.jsonl", 50, "general")
    cfg = _data(
        train=[{"path": a, "weight": 0.5}, {"path": b, "weight": 3.0}],
        replay={"path": g, "fraction": 0.2},
    )
    prepared = prepare_data(cfg, tiny_tokenizer)
    assert prepared.stats["mix"] == {"a": 10, "b": 30, "replay": 10}
    assert _tags(prepared) == {"a": 10, "b": 30, "replay": 10}
    again = prepare_data(cfg, tiny_tokenizer)
    assert [e.line for e in again.train.examples] == [e.line for e in prepared.train.examples]
    counted = prepare_data(_data(train=[{"path": a, "count": 5}, b]), tiny_tokenizer)
    assert counted.stats["mix"] == {"a": 5, "b": 10}


def test_task_temperature_and_per_record_tags(tmp_path: Path, tiny_tokenizer) -> None:
    a = _write(tmp_path / "a.jsonl", 90, "alpha", tag="math")
    b = _write(tmp_path / "b.jsonl", 10, "beta", tag="poems")
    prepared = prepare_data(_data(train=[a, b], task_temperature=2.0), tiny_tokenizer)
    assert prepared.stats["mix"] == {"math": 75, "poems": 25}
    assert _tags(prepared) == {"math": 75, "poems": 25}


def test_validation_is_held_out_per_dataset(tmp_path: Path, tiny_tokenizer) -> None:
    a = _write(tmp_path / "a.jsonl", 40, "alpha")
    b = _write(tmp_path / "b.jsonl", 20, "beta")
    prepared = prepare_data(
        DataSection(train=[a, b], val_fraction=0.25, max_length=64), tiny_tokenizer
    )
    val_tags = [e.meta["tag"] for e in prepared.val.examples]
    assert val_tags.count("a") == 10 and val_tags.count("b") == 5
    held = {(e.source, e.line) for e in prepared.val.examples}
    assert held.isdisjoint({(e.source, e.line) for e in prepared.train.examples})


def test_bad_mixing_input_is_named(tmp_path: Path, tiny_tokenizer) -> None:
    a = _write(tmp_path / "a.jsonl", 5, "alpha")
    with pytest.raises(DataError, match=r"a\.jsonl: field 'count': .*5 usable.*count=8"):
        prepare_data(_data(train=[{"path": a, "count": 8}]), tiny_tokenizer)
    alp = tmp_path / "alp.jsonl"
    alp.write_text(json.dumps({"instruction": "hi", "output": "yo"}) + "\n")
    with pytest.raises(DataError, match=r"alp\.jsonl:1: format 'alpaca' differs from 'messages'"):
        prepare_data(_data(train=[{"path": [a, str(alp)]}]), tiny_tokenizer)
    cfg = tmp_path / "c.yaml"
    cfg.write_text(f"data:\n  train:\n    - path: {a}\n      weight: 0\n")
    with pytest.raises(ConfigError, match=r"c\.yaml:4: field 'data\.train\.0\.weight'.*greater"):
        load_config(cfg)
    cfg.write_text(f"data:\n  train:\n    - path: {a}\n      wieght: 2\n")
    with pytest.raises(ConfigError, match=r"did you mean 'data\.train\.0\.weight'"):
        load_config(cfg)
    with pytest.raises(ConfigError, match="task_temperature sets the mix"):
        load_config(
            None, base={"data": {"train": [{"path": a, "weight": 2}], "task_temperature": 2}}
        )
