"""Every peft adapter type through the real CLI on the tiny Llama: trains, saves ``final/``,
reloads with plain peft and generates."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
import torch
from transformers import AutoModelForCausalLM, AutoTokenizer

from tests.helpers.runs import step_losses, train, write_chat_data, write_config
from tunesmith.cli import main

# adapter.type -> (extra config sections, learning rate); prompt learning moves slowly at 5e-3.
TYPES: dict[str, tuple[dict[str, Any], float]] = {
    "lora": ({}, 5e-3),
    "rslora": ({"lora": {"r": 4}}, 5e-3),
    "dora": ({"lora": {"r": 4, "target_modules": "attention"}}, 5e-3),
    "prefix": ({"prefix": {"num_virtual_tokens": 4}}, 3e-2),
    "prompt": ({"prompt": {"num_virtual_tokens": 4, "init_text": "Add the numbers."}}, 3e-2),
    "ia3": ({}, 3e-2),
}
PEFT_TYPE = {
    "lora": "LORA",
    "rslora": "LORA",
    "dora": "LORA",
    "prefix": "PREFIX_TUNING",
    "prompt": "PROMPT_TUNING",
    "ia3": "IA3",
}


@pytest.mark.parametrize("kind", list(TYPES))
def test_adapter_type_trains_saves_and_reloads_with_peft(
    tmp_path: Path, tiny_llama: Path, kind: str, capsys: pytest.CaptureFixture[str]
) -> None:
    sections, lr = TYPES[kind]
    cfg = write_config(
        tmp_path,
        tiny_llama,
        write_chat_data(tmp_path / "d.jsonl"),
        adapter={"type": kind},
        train={"max_steps": 6},
        optim={"lr": lr, "schedule": "constant"},
        **sections,
    )
    run = train(cfg)
    losses = step_losses(run)
    assert len(losses) == 6 and sum(losses[-2:]) < sum(losses[:2]), losses
    out = capsys.readouterr().out
    assert "trainable params" in out and "%" in out and "base weights" in out

    info = json.loads((run / "final" / "adapter_config.json").read_text())
    assert info["peft_type"] == PEFT_TYPE[kind]
    assert info.get("use_rslora", False) == (kind == "rslora")
    assert info.get("use_dora", False) == (kind == "dora")

    from peft import PeftModel

    base = AutoModelForCausalLM.from_pretrained(str(tiny_llama))
    model = PeftModel.from_pretrained(base, str(run / "final")).eval()
    tok = AutoTokenizer.from_pretrained(str(run / "final"))
    ids = tok("1 plus 2?", return_tensors="pt")
    with torch.no_grad():
        gen = model.generate(**ids, max_new_tokens=4, do_sample=False, pad_token_id=0)
    assert gen.shape[1] == ids["input_ids"].shape[1] + 4


@pytest.mark.parametrize("kind", ["prompt", "prefix"])
def test_generate_cli_with_prompt_learning(
    tmp_path: Path, tiny_llama: Path, kind: str, capsys: pytest.CaptureFixture[str]
) -> None:
    cfg = write_config(
        tmp_path,
        tiny_llama,
        write_chat_data(tmp_path / "d.jsonl", n=16),
        adapter={"type": kind},
        train={"max_steps": 2},
        **{kind: {"num_virtual_tokens": 3}},
    )
    run = train(cfg)
    capsys.readouterr()
    args = ["generate", str(run), "--prompt", "1 plus 2?", "--max-new-tokens", "4"]
    assert main(args) == 0
    reply = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert isinstance(reply["reply"], str)


def test_prompt_learning_refuses_packing(
    tmp_path: Path, tiny_llama: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    cfg = write_config(
        tmp_path,
        tiny_llama,
        write_chat_data(tmp_path / "d.jsonl", n=8),
        adapter={"type": "prefix"},
        data={"packing": True},
    )
    assert main(["train", str(cfg)]) == 2
    assert "data.packing=false" in capsys.readouterr().err


@pytest.mark.parametrize(
    ("override", "message"),
    [
        ("lora.target_modules=[qq_proj]", "matches no module of this model; its linear modules"),
        ("lora.target_modules=.*\\.nothing", "q_proj"),
        ("lora.r=64", "choose lora.r <= 16"),
    ],
)
def test_bad_targets_and_rank_fail_before_training(
    tmp_path: Path,
    tiny_llama: Path,
    capsys: pytest.CaptureFixture[str],
    override: str,
    message: str,
) -> None:
    cfg = write_config(tmp_path, tiny_llama, write_chat_data(tmp_path / "d.jsonl", n=8))
    assert main(["train", str(cfg), override]) == 2
    err = capsys.readouterr().err
    assert message in err
    assert not (tmp_path / "runs" / "run" / "metrics.jsonl").exists()


class _Killed(Exception):
    """Stands in for the SIGKILL the crash hook sends, so the test stays in-process."""


def crash_and_resume(monkeypatch: pytest.MonkeyPatch, cfg: Path, after: int) -> Path:
    """Train ``cfg`` as run ``crashed``, killed after step ``after``, then resume it."""
    from tunesmith.engine import run as lifecycle

    def kill(pid: int, sig: int) -> None:
        raise _Killed

    monkeypatch.setattr(lifecycle.os, "kill", kill)
    monkeypatch.setenv(lifecycle.CRASH_ENV, str(after))
    with pytest.raises(_Killed):
        main(["train", str(cfg), "train.run_name=crashed"])
    monkeypatch.delenv(lifecycle.CRASH_ENV)
    return train(cfg, "train.run_name=crashed", "train.resume=true")


@pytest.mark.parametrize(
    "kind",
    ["ia3", "prefix", "prompt"],
)
def test_resume_continues_the_same_trajectory(
    tmp_path: Path, tiny_llama: Path, kind: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    cfg = write_config(
        tmp_path,
        tiny_llama,
        write_chat_data(tmp_path / "d.jsonl", n=24),
        adapter={"type": kind},
        train={"max_steps": 6, "save_every": 2},
        optim={"lr": 3e-2},
    )
    whole = step_losses(train(cfg, "train.run_name=whole"))
    resumed = step_losses(crash_and_resume(monkeypatch, cfg, after=3))
    assert len(whole) == len(resumed) == 6
    for a, b in zip(whole, resumed, strict=True):
        assert abs(a - b) < 1e-6
