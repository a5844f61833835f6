"""`tunesmith doctor` on dpo, grpo and classify configs through the real CLI: healthy records
pass (exit 0) and a broken one fails (exit 1) with the failing check named."""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

import pytest
import yaml

from tunesmith.cli import main

STATUS = re.compile(r"^(PASS|WARN|FAIL|SKIP)\s+(\S+)", re.MULTILINE)


def _statuses(out: str) -> dict[str, str]:
    return {name: status for status, name in STATUS.findall(out)}


def _write(path: Path, rows: list[dict[str, Any]]) -> Path:
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return path


def _config(tmp_path: Path, model: Path, method: str, **sections: Any) -> Path:
    cfg: dict[str, Any] = {
        "method": method,
        "model": {"name_or_path": str(model)},
        "train": {"output_dir": str(tmp_path / "runs"), "run_name": "run"},
        **sections,
    }
    path = tmp_path / f"{method}.yaml"
    path.write_text(f"# tunesmith doctor {method}.yaml\n" + yaml.safe_dump(cfg))
    return path


def _doctor(cfg: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> tuple[int, str]:
    html = tmp_path / "doctor.html"
    code = main(["doctor", str(cfg), "--html", str(html), "--examples", "1"])
    out = capsys.readouterr().out
    assert f"report: {html}" in out and html.is_file()
    assert not (tmp_path / "runs" / "run").exists()  # doctor creates no run dir
    return code, out


# ----------------------------------------------------------------------------- dpo


def _pairs(n: int, chosen: str = "Yes, the {a} is near.", rejected: str = "No, it is far.") -> Any:
    words = ["sea", "sun", "wind", "dog", "fox", "Paris"]
    return [
        {
            "prompt": f"Is the {words[i % 6]} near?",
            "chosen": chosen.format(a=words[i % 6]),
            "rejected": rejected,
        }
        for i in range(n)
    ]


def test_dpo_doctor_passes_then_fails_on_a_pair_without_preference(
    tmp_path: Path, tiny_llama: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    data = _write(tmp_path / "pairs.jsonl", _pairs(8))
    data_section = {"train": str(data), "max_length": 128, "val_fraction": 0.0}
    cfg = _config(tmp_path, tiny_llama, "dpo", data=data_section)
    code, out = _doctor(cfg, tmp_path, capsys)
    assert code == 0, out
    statuses = _statuses(out)
    assert list(statuses) == [
        "pair-rejects",
        "prompt-match",
        "identical",
        "empty-reply",
        "end-of-turn",
        "bos",
        "template",
        "truncation",
    ]
    assert set(statuses.values()) == {"PASS"}, out
    assert "chosen: " in out and "[[Yes, the " in out and "[[No, it is far.<|im_end|>]]" in out
    assert "training step: skipped for method dpo" in out

    # The replies differ only past max_length: as trained they are the same tokens.
    long = "Yes, the sea is near the sun and the wind and the dog, " * 8
    bad = [*_pairs(7), {"prompt": "Is it near?", "chosen": long + "A.", "rejected": long + "B."}]
    _write(data, bad)
    code, out = _doctor(cfg, tmp_path, capsys)
    assert code == 1
    assert _statuses(out)["identical"] == "FAIL" and "pairs.jsonl:8" in out
    assert "1 check(s) FAILED" in out


# ----------------------------------------------------------------------------- grpo


def broken_reward(prompts: list[str], completions: list[str], **_: Any) -> list[float]:
    raise RuntimeError("this reward is broken")


def test_grpo_doctor_passes_then_fails_on_a_reward_that_raises(
    tmp_path: Path, tiny_llama: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    rows = [{"prompt": f"What is {i} + {i}?", "answer": str(2 * i)} for i in range(6)]
    data = _write(tmp_path / "prompts.jsonl", rows)
    rewards = [{"name": "math"}, {"name": "format"}]
    sections = {"data": {"train": str(data)}, "grpo": {"max_new_tokens": 32}}
    cfg = _config(tmp_path, tiny_llama, "grpo", rewards=rewards, **sections)
    code, out = _doctor(cfg, tmp_path, capsys)
    assert code == 0, out
    statuses = _statuses(out)
    assert statuses == dict.fromkeys(("gen-prompt", "bos", "stop", "context", "rewards"), "PASS")
    assert "<|im_start|>assistant" in out and "What is 0 + 0?" in out
    assert "<= the model's context 512" in out

    rewards.append({"name": "tests.methods.test_doctor_methods:broken_reward", "label": "bad"})
    cfg = _config(tmp_path, tiny_llama, "grpo", rewards=rewards, **sections)
    code, out = _doctor(cfg, tmp_path, capsys)
    assert code == 1 and _statuses(out)["rewards"] == "FAIL"
    assert "reward 'bad' raised RuntimeError" in out and "prompts.jsonl:1" in out


# ----------------------------------------------------------------------------- classify


def _texts(labels: list[str]) -> list[dict[str, str]]:
    return [{"text": f"ticket {i}: a refund please", "label": x} for i, x in enumerate(labels)]


def test_classify_doctor_passes_then_fails_on_an_unseen_held_out_label(
    tmp_path: Path, tiny_llama: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    train = _write(tmp_path / "train.jsonl", _texts(["billing", "shipping"] * 4))
    val = _write(tmp_path / "val.jsonl", _texts(["shipping", "billing"]))
    data = {"train": str(train), "validation": str(val), "max_length": 32}
    cfg = _config(tmp_path, tiny_llama, "classify", data=data)
    code, out = _doctor(cfg, tmp_path, capsys)
    assert code == 0, out
    statuses = _statuses(out)
    assert statuses == dict.fromkeys(
        ("labels", "unseen-labels", "rare-labels", "truncation", "padding"), "PASS"
    )
    assert "train: billing 4, shipping 4; held-out: shipping 1, billing 1" in out

    _write(val, _texts(["shipping", "returns"]))
    code, out = _doctor(cfg, tmp_path, capsys)
    assert code == 1 and _statuses(out)["unseen-labels"] == "FAIL"
    assert "['returns']" in out and "val.jsonl:2" in out
