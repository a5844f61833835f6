"""GRPO on the run lifecycle, through the real CLI in subprocesses: a killed run resumes on the
same trajectory (losses, rewards, sampled completions, adapter), resume refusals, and two
processes sampling half a round each follow the one-process run."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import torch
import yaml
from safetensors.torch import load_file

from tests.helpers.runs import train_subprocess
from tunesmith.engine.run import CRASH_ENV

ADAPTER = "final/adapter_model.safetensors"


def length_reward(prompts: list[str], completions: list[str], **_: Any) -> list[float]:
    """Varies within every group on a random model, so every round has a gradient."""
    return [len(c) / 20 for c in completions]


def _config(tmp_path: Path, model: Path, **sections: dict[str, Any]) -> Path:
    rows = [{"prompt": f"What is {i} + {i}?", "answer": str(2 * i)} for i in range(12)]
    data = tmp_path / "prompts.jsonl"
    data.write_text("".join(json.dumps(r) + "\n" for r in rows))
    cfg: dict[str, Any] = {
        "method": "grpo",
        "model": {"name_or_path": str(model)},
        # no validation file: a quarter of the prompts is held out (data/split.py)
        "data": {"train": str(data), "val_fraction": 0.25},
        "train": {
            "output_dir": str(tmp_path / "runs"),
            "run_name": "run",
            "max_steps": 5,
            "micro_batch_size": 3,
            "precision": "fp32",
            "seed": 7,
        },
        "optim": {"lr": 2e-2, "warmup_steps": 1},
        "lora": {"r": 4, "dropout": 0.0},
        "grpo": {
            "num_generations": 3,
            "prompts_per_step": 2,
            "max_new_tokens": 6,
            "inner_steps": 2,
            "beta": 0.1,
            "eval_before": False,
        },
        "rewards": [
            {"name": "tests.invariants.test_grpo_lifecycle:length_reward", "label": "length"}
        ],
    }
    for name, values in sections.items():
        cfg.setdefault(name, {}).update(values)
    path = tmp_path / "grpo.yaml"
    path.write_text("# tunesmith train grpo.yaml\n" + yaml.safe_dump(cfg))
    return path


def _rounds(run: Path) -> list[dict[str, Any]]:
    rows = [json.loads(x) for x in (run / "metrics.jsonl").read_text().splitlines()]
    return [r for r in rows if r["split"] == "train"]


def _same_trajectory(a: Path, b: Path, tol: float) -> None:
    ra, rb = _rounds(a), _rounds(b)
    assert [r["step"] for r in ra] == [r["step"] for r in rb] == [1, 2, 3, 4, 5]
    for x, y in zip(ra, rb, strict=True):
        assert x["completions_sha256"] == y["completions_sha256"], x["step"]
        assert x["rewards"] == y["rewards"], x["step"]
        assert abs(x["loss"] - y["loss"]) < tol, (x["step"], x["loss"], y["loss"])
    assert len({r["completions_sha256"] for r in ra}) == 5  # every round samples afresh
    wa, wb = load_file(str(a / ADAPTER)), load_file(str(b / ADAPTER))
    assert wa.keys() == wb.keys()
    for key in wa:
        assert torch.allclose(wa[key], wb[key], atol=tol, rtol=0), key


def test_killed_grpo_run_resumes_on_the_same_trajectory(tmp_path: Path, tiny_llama: Path) -> None:
    cfg = _config(
        tmp_path,
        tiny_llama,
        train={"save_every": 2, "eval_every": 2},
        lora={"dropout": 0.1},  # dropout makes the torch RNG part of the test
    )
    whole = train_subprocess(cfg, "train.run_name=whole")
    assert whole.returncode == 0, whole.stderr[-3000:]
    runs = tmp_path / "runs"
    assert (runs / "whole" / "best" / "adapter_model.safetensors").is_file()
    # SIGKILL right after round 3: the last checkpoint is round 2, so round 3 is redone.
    killed = train_subprocess(cfg, "train.run_name=crashed", env={CRASH_ENV: "3"})
    assert killed.returncode == -9
    assert len(_rounds(runs / "crashed")) == 3 and not (runs / "crashed" / "final").exists()
    resumed = train_subprocess(cfg, "train.run_name=crashed", "--resume")
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    _same_trajectory(runs / "whole", runs / "crashed", 1e-6)
    evals = [json.loads(x) for x in (runs / "crashed" / "metrics.jsonl").read_text().splitlines()]
    assert [e["step"] for e in evals if e["split"] == "eval"] == [2, 4, 5]
    assert all(e["n"] == 3 for e in evals if e["split"] == "eval")  # 12 prompts, 1/4 held out

    # a changed loss setting would not continue the same run: refused, naming the key
    changed = train_subprocess(cfg, "train.run_name=crashed", "--resume", "grpo.beta=0.2")
    assert changed.returncode == 2 and "grpo.beta" in changed.stderr


def test_grpo_resume_without_a_checkpoint_is_refused(tmp_path: Path, tiny_llama: Path) -> None:
    cfg = _config(tmp_path, tiny_llama, train={"max_steps": 1})
    assert train_subprocess(cfg).returncode == 0  # no save_every: no checkpoint
    again = train_subprocess(cfg, "--resume")
    assert again.returncode == 2 and "holds no checkpoint" in again.stderr


def test_two_processes_sample_half_a_round_each_and_match_one(
    tmp_path: Path, tiny_llama: Path
) -> None:
    cfg = _config(tmp_path, tiny_llama, train={"eval_every": 5})
    one = train_subprocess(cfg, "train.run_name=one")
    assert one.returncode == 0, one.stderr[-3000:]
    two = train_subprocess(cfg, "train.run_name=two", nproc=2)
    assert two.returncode == 0, two.stderr[-3000:]
    _same_trajectory(tmp_path / "runs" / "one", tmp_path / "runs" / "two", 1e-4)
    env = json.loads((tmp_path / "runs" / "two" / "env.json").read_text())
    assert env["world_size"] == 2
    # a round that does not split evenly over the processes is a clear error
    odd = train_subprocess(cfg, "train.run_name=odd", "grpo.prompts_per_step=3", nproc=2)
    assert odd.returncode != 0
    assert "does not split evenly over 2 processes" in odd.stdout + odd.stderr
