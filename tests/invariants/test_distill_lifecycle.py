"""Distillation on the shared run lifecycle: a run killed mid-way resumes on the same trajectory
(on-policy samples and dropout included), and torchrun DDP follows one process."""

from __future__ import annotations

import subprocess
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from tests.helpers.runs import step_losses, train_subprocess
from tests.methods.test_distill import metrics, write_distill_config
from tunesmith.engine import checkpoint as ckpt
from tunesmith.engine.run import CRASH_ENV

ADAPTER = "final/adapter_model.safetensors"
# half the steps sample their replies (which ones is fixed by train.seed and the step)
ON_POLICY = {"loss": "jsd", "lambda": 0.5, "max_new_tokens": 5, "hard_weight": 0.3}


def _run(
    config: Path, *args: str, nproc: int = 1, env: dict[str, str] | None = None
) -> subprocess.CompletedProcess[str]:
    return train_subprocess(config, *args, nproc=nproc, env=env)


def _assert_same_weights(a: Path, b: Path, atol: float) -> None:
    wa, wb = load_file(str(a)), load_file(str(b))
    assert wa.keys() == wb.keys() and wa
    for key in wa:
        assert torch.allclose(wa[key], wb[key], atol=atol, rtol=0), key


@pytest.fixture
def teacher(tmp_path: Path, tiny_llama: Path) -> Path:
    """A second tiny model (other weights, same tokenizer) as the teacher."""
    from transformers import AutoModelForCausalLM, AutoTokenizer

    torch.manual_seed(1)
    model = AutoModelForCausalLM.from_pretrained(tiny_llama)
    with torch.no_grad():
        for p in model.parameters():
            p.add_(torch.randn_like(p) * 0.05)
    out = tmp_path / "teacher"
    model.save_pretrained(out)
    AutoTokenizer.from_pretrained(tiny_llama).save_pretrained(out)
    return out


def test_killed_run_resumes_on_the_same_trajectory(
    tmp_path: Path, tiny_llama: Path, teacher: Path
) -> None:
    cfg = write_distill_config(
        tmp_path,
        tiny_llama,
        teacher,
        lora={"dropout": 0.1},  # the dropout RNG must be restored too
        train={"max_steps": 5, "save_every": 2, "micro_batch_size": 2, "eval_every": 2},
        distill=ON_POLICY,
    )
    runs = tmp_path / "runs"
    whole = _run(cfg, "train.run_name=whole")
    assert whole.returncode == 0, whole.stderr[-3000:]
    flags = [m["on_policy"] for m in metrics(runs / "whole", "train")]
    assert 0.0 in flags and 1.0 in flags, flags  # both kinds of step are exercised
    # killed right after step 3: the checkpoint of step 2 is the latest, step 3 is done again
    crashed = _run(cfg, "train.run_name=crashed", env={CRASH_ENV: "3"})
    assert crashed.returncode != 0
    assert [s for s, _ in ckpt.list_checkpoints(runs / "crashed")] == [2]
    resumed = _run(cfg, "train.run_name=crashed", "--resume")
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    a, b = metrics(runs / "whole", "train"), metrics(runs / "crashed", "train")
    assert [m["trained_tokens"] for m in a] == [m["trained_tokens"] for m in b]  # same samples
    losses, again = step_losses(runs / "whole"), step_losses(runs / "crashed")
    assert len(losses) == len(again) == 5
    assert again == pytest.approx(losses, abs=1e-6)
    val_whole = [m["kl"] for m in metrics(runs / "whole", "val")]
    val_again = [m["kl"] for m in metrics(runs / "crashed", "val")]
    assert val_again == pytest.approx(val_whole, abs=1e-6) and len(val_whole) == 4  # 0, 2, 4, 5
    _assert_same_weights(runs / "whole" / ADAPTER, runs / "crashed" / ADAPTER, atol=1e-6)


def test_two_processes_match_one_with_the_same_global_batch(
    tmp_path: Path, tiny_llama: Path, teacher: Path
) -> None:
    cfg = write_distill_config(
        tmp_path, tiny_llama, teacher, train={"max_steps": 3, "eval_every": 3}, distill=ON_POLICY
    )
    one = _run(cfg, "train.micro_batch_size=4", "train.run_name=one")
    assert one.returncode == 0, one.stderr[-3000:]
    two = _run(cfg, "train.micro_batch_size=2", "train.run_name=two", nproc=2)
    assert two.returncode == 0, two.stderr[-3000:]
    runs = tmp_path / "runs"
    for split in ("train", "val"):
        a, b = metrics(runs / "one", split), metrics(runs / "two", split)
        assert len(a) == len(b) > 0
        for ma, mb in zip(a, b, strict=True):
            for key in ("loss", "kl", "ce", "trained_tokens"):
                if key in ma or key in mb:
                    assert ma[key] == pytest.approx(mb[key], abs=1e-5), (split, key)
    _assert_same_weights(runs / "one" / ADAPTER, runs / "two" / ADAPTER, atol=1e-5)
