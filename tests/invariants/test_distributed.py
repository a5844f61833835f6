"""Data parallel (torchrun, DDP over gloo on CPU) follows the single-process trajectory."""

from __future__ import annotations

import subprocess
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from tests.helpers.runs import step_losses, train_subprocess, write_chat_data, write_config
from tunesmith.engine.run import CRASH_ENV


def _run(
    config: Path, nproc: int, *args: str, env: dict[str, str] | None = None
) -> subprocess.CompletedProcess[str]:
    return train_subprocess(config, *args, nproc=nproc, env=env)


@pytest.mark.parametrize(
    ("parallel", "adapter", "accum"),
    [("ddp", "lora", 1), ("ddp", "lora", 2), ("fsdp", "lora", 2), ("fsdp", "full", 1)],
)
def test_two_processes_match_one_with_the_same_global_batch(
    tmp_path: Path, tiny_llama: Path, parallel: str, adapter: str, accum: int
) -> None:
    data = write_chat_data(tmp_path / "d.jsonl", n=40)
    cfg = write_config(
        tmp_path,
        tiny_llama,
        data,
        adapter={"type": adapter},
        train={"max_steps": 4, "eval_every": 2, "grad_accum": accum, "parallel": parallel},
        optim={"lr": 1e-2 if adapter == "lora" else 1e-3},
    )
    one = _run(cfg, 1, "train.micro_batch_size=4", "train.run_name=one")
    assert one.returncode == 0, one.stderr[-2000:]
    two = _run(cfg, 2, "train.micro_batch_size=2", "train.run_name=two")
    assert two.returncode == 0, two.stderr[-3000:]
    runs = tmp_path / "runs"
    for a, b in zip(step_losses(runs / "one"), step_losses(runs / "two"), strict=True):
        assert abs(a - b) < 1e-4
    name = "adapter_model.safetensors" if adapter == "lora" else "model.safetensors"
    wa = load_file(str(runs / "one/final" / name))
    wb = load_file(str(runs / "two/final" / name))
    assert wa.keys() == wb.keys()
    for key in wa:
        assert torch.allclose(wa[key], wb[key], atol=1e-4), key


@pytest.mark.parametrize("parallel", ["ddp", "fsdp"])
def test_resume_under_two_processes_continues_exactly(
    tmp_path: Path, tiny_llama: Path, parallel: str
) -> None:
    data = write_chat_data(tmp_path / "d.jsonl", n=24)
    cfg = write_config(
        tmp_path,
        tiny_llama,
        data,
        lora={"dropout": 0.1},
        train={"max_steps": 6, "save_every": 2, "micro_batch_size": 2, "parallel": parallel},
        optim={"lr": 1e-2},
    )
    assert _run(cfg, 2, "train.run_name=whole").returncode == 0
    crashed = _run(cfg, 2, "train.run_name=crashed", env={CRASH_ENV: "3"})
    assert crashed.returncode != 0
    resumed = _run(cfg, 2, "train.run_name=crashed", "--resume")
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    runs = tmp_path / "runs"
    whole, again = step_losses(runs / "whole"), step_losses(runs / "crashed")
    assert len(whole) == len(again) == 6
    for a, b in zip(whole, again, strict=True):
        assert abs(a - b) < 1e-6
