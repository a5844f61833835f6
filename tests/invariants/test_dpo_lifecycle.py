"""DPO on the shared run lifecycle: a killed run resumes on the same trajectory (live and
precomputed reference), resume refusals, and torchrun (DDP / FSDP2) follows one process."""

from __future__ import annotations

import subprocess
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from tests.helpers.runs import step_losses, train_subprocess
from tests.methods.test_dpo import metrics, write_dpo_config, write_pref_data
from tunesmith.cli import main
from tunesmith.engine import checkpoint as ckpt
from tunesmith.engine.run import CRASH_ENV

ADAPTER = "final/adapter_model.safetensors"


def _run(
    config: Path, *args: str, nproc: int = 1, env: dict[str, str] | None = None
) -> subprocess.CompletedProcess[str]:
    return train_subprocess(config, *args, nproc=nproc, env=env)


def _assert_same_weights(a: Path, b: Path, atol: float) -> None:
    wa, wb = load_file(str(a)), load_file(str(b))
    assert wa.keys() == wb.keys() and wa
    for key in wa:
        assert torch.allclose(wa[key], wb[key], atol=atol, rtol=0), key


@pytest.mark.parametrize("precompute", [False, True], ids=["adapter-reference", "precomputed"])
def test_killed_run_resumes_on_the_same_trajectory(
    tmp_path: Path, tiny_llama: Path, precompute: bool
) -> None:
    data = write_pref_data(tmp_path / "p.jsonl", n=24)
    cfg = write_dpo_config(
        tmp_path,
        tiny_llama,
        data,
        lora={"dropout": 0.1},  # the dropout RNG must be restored too
        train={"max_steps": 5, "save_every": 2, "micro_batch_size": 2, "eval_every": 2},
        dpo={"precompute_ref": precompute},
    )
    runs = tmp_path / "runs"
    whole = _run(cfg, "train.run_name=whole")
    assert whole.returncode == 0, whole.stderr[-3000:]
    # killed right after step 3: the checkpoint of step 2 is the latest, step 3 is done again
    crashed = _run(cfg, "train.run_name=crashed", env={CRASH_ENV: "3"})
    assert crashed.returncode != 0
    assert [s for s, _ in ckpt.list_checkpoints(runs / "crashed")] == [2]
    if precompute:
        saved = ckpt.load_state(runs / "crashed" / "checkpoints" / "step-2")["train"]["method"]
        assert "ref_logps" in saved
        # a cache that no longer matches the checkpoint's hash is recomputed, not trusted
        (cache,) = (runs / "crashed").glob("ref_logps-*.pt")
        torch.save({k: v * 0 for k, v in torch.load(cache, weights_only=True).items()}, cache)
    resumed = _run(cfg, "train.run_name=crashed", "--resume")
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    assert ("recomputing" in resumed.stdout) == precompute
    losses, again = step_losses(runs / "whole"), step_losses(runs / "crashed")
    assert len(losses) == len(again) == 5
    for a, b in zip(losses, again, strict=True):
        assert abs(a - b) < 1e-6
    val_whole = [m["loss"] for m in metrics(runs / "whole", "val")]
    val_again = [m["loss"] for m in metrics(runs / "crashed", "val")]
    assert val_again == pytest.approx(val_whole, abs=1e-6) and len(val_whole) == 4  # 0, 2, 4, 5
    _assert_same_weights(runs / "whole" / ADAPTER, runs / "crashed" / ADAPTER, atol=1e-6)


def test_resume_is_refused_without_a_checkpoint_or_with_a_changed_beta(
    tmp_path: Path, tiny_llama: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    data = write_pref_data(tmp_path / "p.jsonl", n=12)
    cfg = write_dpo_config(tmp_path, tiny_llama, data, train={"max_steps": 1})
    assert main(["train", str(cfg), "train.run_name=bare"]) == 0
    capsys.readouterr()
    assert main(["train", str(cfg), "train.run_name=bare", "--resume"]) == 2
    assert "holds no checkpoint" in capsys.readouterr().err
    assert main(["train", str(cfg), "train.run_name=saved", "train.save_every=1"]) == 0
    capsys.readouterr()
    args = ["train", str(cfg), "train.run_name=saved", "train.save_every=1"]
    assert main([*args, "dpo.beta=0.3", "--resume"]) == 2
    err = capsys.readouterr().err
    assert "dpo.beta: 0.5 -> 0.3" in err
    assert (
        main([*args, "train.max_steps=2", "--resume"]) == 0
    )  # a longer run is a resume, not a change
    assert len(step_losses(tmp_path / "runs" / "saved")) == 2


@pytest.mark.parametrize(
    ("parallel", "accum", "precompute"),
    [("ddp", 1, False), ("fsdp", 2, True)],
    ids=["ddp-lora", "fsdp-lora-precomputed"],
)
def test_two_processes_match_one_with_the_same_global_batch(
    tmp_path: Path, tiny_llama: Path, parallel: str, accum: int, precompute: bool
) -> None:
    # 6 held-out pairs: the second evaluation round leaves rank 1 without pairs
    data = write_pref_data(tmp_path / "p.jsonl", n=24)
    cfg = write_dpo_config(
        tmp_path,
        tiny_llama,
        data,
        train={"max_steps": 3, "eval_every": 2, "grad_accum": accum, "parallel": parallel},
        dpo={"precompute_ref": precompute},
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
            # grad_norm: AdamW hides a wrong gradient scale from the weights, not from the norm
            for key in ("loss", "accuracy", "margin", *(["grad_norm"] if split == "train" else [])):
                assert abs(ma[key] - mb[key]) < 1e-4, (split, ma["step"], key)
        if split == "train":
            assert [m["pairs"] for m in b] == [4.0 * accum] * 3
    _assert_same_weights(runs / "one" / ADAPTER, runs / "two" / ADAPTER, atol=1e-4)
