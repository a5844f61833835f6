"""Invariants: accumulation does not change the update; resume continues the exact trajectory."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from tests.helpers.runs import (
    step_losses,
    train,
    train_subprocess,
    write_chat_data,
    write_config,
)
from tunesmith.engine.run import CRASH_ENV


@pytest.mark.parametrize("adapter", ["lora", "full"])
def test_micro4_acc1_equals_micro1_acc4(tmp_path: Path, tiny_llama: Path, adapter: str) -> None:
    data = write_chat_data(tmp_path / "d.jsonl", n=40)
    cfg = write_config(
        tmp_path,
        tiny_llama,
        data,
        adapter={"type": adapter},
        train={"max_steps": 3},
        optim={"lr": 1e-2 if adapter == "lora" else 1e-3},
    )
    a = train(cfg, "train.micro_batch_size=4", "train.grad_accum=1", "train.run_name=a")
    b = train(cfg, "train.micro_batch_size=1", "train.grad_accum=4", "train.run_name=b")
    for la, lb in zip(step_losses(a), step_losses(b), strict=True):
        assert abs(la - lb) < 1e-5
    name = "adapter_model.safetensors" if adapter == "lora" else "model.safetensors"
    wa, wb = load_file(str(a / "final" / name)), load_file(str(b / "final" / name))
    assert wa.keys() == wb.keys()
    for key in wa:
        assert torch.allclose(wa[key], wb[key], atol=1e-5, rtol=0), key
    changed = load_file(str(tiny_llama / "model.safetensors"))
    if adapter == "full":
        assert any(not torch.equal(changed[k], wa[k]) for k in changed)


def _cli(config: Path, *args: str, env: dict[str, str] | None = None) -> int:
    return train_subprocess(config, *args, env=env).returncode


@pytest.mark.parametrize("adapter", ["lora", "full"])
def test_killed_run_resumes_on_the_same_trajectory(
    tmp_path: Path, tiny_llama: Path, adapter: str
) -> None:
    data = write_chat_data(tmp_path / "d.jsonl", n=24)  # several epochs: reshuffles are covered
    cfg = write_config(
        tmp_path,
        tiny_llama,
        data,
        adapter={"type": adapter},
        lora={"dropout": 0.1},  # dropout makes the RNG state part of the test
        train={"max_steps": 10, "save_every": 4, "eval_every": 5},
        optim={"lr": 1e-2 if adapter == "lora" else 1e-3, "warmup_steps": 2},
    )
    assert _cli(cfg, "train.run_name=whole") == 0
    # SIGKILL right after step 6: the last checkpoint is step 4, so steps 5-6 are redone.
    rc = _cli(cfg, "train.run_name=crashed", env={CRASH_ENV: "6"})
    assert rc == -9
    crashed = tmp_path / "runs" / "crashed"
    assert not (crashed / "final").exists()
    assert len(step_losses(crashed)) == 6
    assert _cli(cfg, "train.run_name=crashed", "--resume") == 0
    whole = step_losses(tmp_path / "runs" / "whole")
    resumed = step_losses(crashed)
    assert len(whole) == len(resumed) == 10
    for lw, lr in zip(whole, resumed, strict=True):
        assert abs(lw - lr) < 1e-6
    name = "adapter_model.safetensors" if adapter == "lora" else "model.safetensors"
    wa = load_file(str(tmp_path / "runs" / "whole" / "final" / name))
    wb = load_file(str(crashed / "final" / name))
    for key in wa:
        assert torch.allclose(wa[key], wb[key], atol=1e-6, rtol=0), key


def test_gradient_checkpointing_changes_nothing_but_memory(
    tmp_path: Path, tiny_llama: Path
) -> None:
    data = write_chat_data(tmp_path / "d.jsonl", n=24)
    cfg = write_config(tmp_path, tiny_llama, data, train={"max_steps": 3}, optim={"lr": 1e-2})
    a = train(cfg, "train.run_name=plain")
    b = train(cfg, "train.run_name=ckpt", "train.gradient_checkpointing=true")
    for la, lb in zip(step_losses(a), step_losses(b), strict=True):
        assert abs(la - lb) < 1e-6
    wa = load_file(str(a / "final" / "adapter_model.safetensors"))
    wb = load_file(str(b / "final" / "adapter_model.safetensors"))
    assert all(torch.allclose(wa[k], wb[k], atol=1e-6) for k in wa)


def test_compiled_layers_follow_the_eager_trajectory(tmp_path: Path, tiny_llama: Path) -> None:
    data = write_chat_data(tmp_path / "d.jsonl", n=24)
    cfg = write_config(
        tmp_path,
        tiny_llama,
        data,
        train={"max_steps": 3},
        optim={"lr": 1e-2},
        data={"packing": True},
    )
    a = train(cfg, "train.run_name=eager")
    b = train(cfg, "train.run_name=compiled", "train.compile=true")
    for la, lb in zip(step_losses(a), step_losses(b), strict=True):
        assert abs(la - lb) < 1e-4
