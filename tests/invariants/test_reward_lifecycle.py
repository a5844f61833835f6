"""Reward-model training on the run lifecycle: a killed run resumes on the same trajectory (head
included), resume refuses what it cannot continue, two processes follow one, and a config field
reward does not read is an error."""

from __future__ import annotations

import json
import subprocess
from pathlib import Path
from typing import Any

import pytest
import torch
from safetensors.torch import load_file

from tests.helpers.preference_data import write_pairs
from tests.helpers.runs import step_losses, train_subprocess, write_config
from tunesmith.cli import main
from tunesmith.engine.run import CRASH_ENV


def _config(tmp_path: Path, model: Path, n: int = 24, **sections: dict[str, Any]) -> Path:
    data = write_pairs(tmp_path / "pairs.jsonl", n, 0)
    sections["data"] = {"max_length": 64, "val_fraction": 0.25, **sections.get("data", {})}
    cfg = write_config(tmp_path, model, data, **sections)
    cfg.write_text(cfg.read_text() + "method: reward\n")
    return cfg


def _rows(run: Path, split: str) -> list[dict[str, Any]]:
    rows = [json.loads(x) for x in (run / "metrics.jsonl").read_text().splitlines()]
    return [r for r in rows if r.get("split") == split]


def _weights(run: Path, adapter: str) -> dict[str, torch.Tensor]:
    name = "adapter_model.safetensors" if adapter == "lora" else "model.safetensors"
    return load_file(str(run / "final" / name))


def _ok(done: subprocess.CompletedProcess[str]) -> None:
    assert done.returncode == 0, done.stderr[-3000:]


@pytest.mark.parametrize("adapter", ["lora", "full"])
def test_killed_reward_run_resumes_on_the_same_trajectory(
    tmp_path: Path, tiny_llama: Path, adapter: str
) -> None:
    cfg = _config(
        tmp_path,
        tiny_llama,
        adapter={"type": adapter},
        lora={"dropout": 0.1},  # dropout makes the RNG state part of the test
        train={"max_steps": 8, "save_every": 3, "eval_every": 4},  # 18 pairs: several epochs
        optim={"lr": 5e-3 if adapter == "lora" else 1e-3, "warmup_steps": 2},
    )
    _ok(train_subprocess(cfg, "train.run_name=whole"))
    # SIGKILL right after step 5: the last checkpoint is step 3, so steps 4-5 are redone.
    killed = train_subprocess(cfg, "train.run_name=crashed", env={CRASH_ENV: "5"})
    assert killed.returncode == -9
    runs = tmp_path / "runs"
    assert len(step_losses(runs / "crashed")) == 5
    assert not (runs / "crashed" / "final").exists()
    _ok(train_subprocess(cfg, "train.run_name=crashed", "--resume"))
    whole, resumed = step_losses(runs / "whole"), step_losses(runs / "crashed")
    assert len(whole) == len(resumed) == 8
    for a, b in zip(whole, resumed, strict=True):
        assert abs(a - b) < 1e-6
    val_whole, val_resumed = _rows(runs / "whole", "val"), _rows(runs / "crashed", "val")
    assert [r["step"] for r in val_resumed] == [r["step"] for r in val_whole] == [0, 4, 8]
    for a, b in zip(val_whole, val_resumed, strict=True):
        assert abs(a["val_loss"] - b["val_loss"]) < 1e-6
    wa, wb = _weights(runs / "whole", adapter), _weights(runs / "crashed", adapter)
    assert wa.keys() == wb.keys()
    assert any("score" in k.split(".") for k in wa)  # the head is saved and restored too
    for key in wa:
        assert torch.allclose(wa[key], wb[key], atol=1e-6, rtol=0), key
    for run in ("whole", "crashed"):
        assert (runs / run / "final" / "tunesmith_reward.json").is_file()
        assert (runs / run / "best" / "tunesmith_reward.json").is_file()
        assert (runs / run / "rejects.jsonl").is_file()


def test_resume_without_a_checkpoint_is_refused_not_repeated(
    tmp_path: Path, tiny_llama: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """The reported case: a finished run without checkpoints, resumed, trained again from step 0
    and logged every step twice."""
    cfg = _config(tmp_path, tiny_llama)
    assert main(["train", str(cfg), "train.max_steps=3", "train.run_name=R"]) == 0
    run = tmp_path / "runs" / "R"
    before = (run / "metrics.jsonl").read_text()
    capsys.readouterr()
    assert main(["train", str(cfg), "train.max_steps=3", "train.run_name=R", "--resume"]) == 2
    assert "holds no checkpoint" in capsys.readouterr().err
    assert (run / "metrics.jsonl").read_text() == before


def test_resume_refuses_a_changed_margin_and_continues_a_longer_run(
    tmp_path: Path, tiny_llama: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    cfg = _config(tmp_path, tiny_llama, train={"max_steps": 3, "save_every": 2})
    assert main(["train", str(cfg)]) == 0
    run = tmp_path / "runs" / "run"
    capsys.readouterr()
    assert main(["train", str(cfg), "reward.margin=0.5", "--resume"]) == 2
    err = capsys.readouterr().err
    assert "reward.margin" in err and "0.0 -> 0.5" in err
    # resuming the finished run adds nothing; a longer run continues after step 3
    assert main(["train", str(cfg), "--resume"]) == 0
    assert [r["step"] for r in _rows(run, "train")] == [1, 2, 3]
    assert [r["step"] for r in _rows(run, "val")] == [0, 3]
    assert main(["train", str(cfg), "train.max_steps=5", "--resume"]) == 0
    assert [r["step"] for r in _rows(run, "train")] == [1, 2, 3, 4, 5]
    assert [r["step"] for r in _rows(run, "val")] == [0, 3, 5]


@pytest.mark.parametrize(
    ("section", "field", "value"),
    [("data", "packing", True), ("data", "train_on", "all"), ("train", "compile", True)],
)
def test_a_field_reward_does_not_read_is_refused(
    tmp_path: Path,
    tiny_llama: Path,
    capsys: pytest.CaptureFixture[str],
    section: str,
    field: str,
    value: Any,
) -> None:
    cfg = _config(tmp_path, tiny_llama, **{section: {field: value}})
    assert main(["validate", str(cfg)]) == 2
    assert f"{section}.{field}" in capsys.readouterr().err


@pytest.mark.parametrize(
    ("parallel", "adapter"), [("ddp", "lora"), ("fsdp", "lora"), ("fsdp", "full")]
)
def test_two_processes_match_one_with_the_same_global_batch(
    tmp_path: Path, tiny_llama: Path, parallel: str, adapter: str
) -> None:
    cfg = _config(
        tmp_path,
        tiny_llama,
        n=32,
        adapter={"type": adapter},
        train={"max_steps": 3, "eval_every": 2, "grad_accum": 2, "parallel": parallel},
        optim={"lr": 5e-3 if adapter == "lora" else 1e-3},
    )
    _ok(train_subprocess(cfg, "train.micro_batch_size=4", "train.run_name=one"))
    _ok(train_subprocess(cfg, "train.micro_batch_size=2", "train.run_name=two", nproc=2))
    runs = tmp_path / "runs"
    one, two = step_losses(runs / "one"), step_losses(runs / "two")
    assert len(one) == len(two) == 3
    for a, b in zip(one, two, strict=True):
        assert abs(a - b) < 1e-4
    for a, b in zip(_rows(runs / "one", "val"), _rows(runs / "two", "val"), strict=True):
        assert abs(a["val_loss"] - b["val_loss"]) < 1e-4
    wa, wb = _weights(runs / "one", adapter), _weights(runs / "two", adapter)
    assert wa.keys() == wb.keys()
    for key in wa:
        assert torch.allclose(wa[key], wb[key], atol=1e-4), key
