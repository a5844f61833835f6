"""PPO on the run lifecycle: a killed run resumes on the exact trajectory (losses, rewards, KL
coefficient, every sampled completion, the held-out evaluations, best/, final adapter and value
head); a resume that cannot be exact is refused; two processes follow one process's trajectory
and evaluate the same held-out rewards."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
import torch
from safetensors.torch import load_file

from tests.helpers.runs import train_subprocess
from tests.methods.test_ppo import ppo_config, train_toy_reward_model
from tunesmith.cli import main
from tunesmith.engine.run import CRASH_ENV

# What each iteration must reproduce: losses, rewards, KL and its coefficient, the sampled
# completions (a hash of every completion's token ids) and the update's gradient norms.
COMPARED = (
    "policy_loss",
    "value_loss",
    "reward_mean",
    "reward_std",
    "kl",
    "kl_coef",
    "entropy",
    "grad_norm",
    "samples_sha256",
)
# What each held-out evaluation must reproduce (samples_sha256: every greedy reply's token ids).
VAL_COMPARED = ("reward_mean", "reward_std", "completion_length", "n", "samples_sha256")


@pytest.fixture(scope="module")
def toy(tiny_llama: Path, tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    return train_toy_reward_model(tmp_path_factory.mktemp("ppo-rm"), tiny_llama)


def iterations(run_dir: Path, split: str = "train") -> list[dict[str, Any]]:
    rows = [json.loads(x) for x in (run_dir / "metrics.jsonl").read_text().splitlines()]
    return [r for r in rows if r.get("split") == split]


def assert_same_records(
    ra: list[dict[str, Any]], rb: list[dict[str, Any]], keys: tuple[str, ...], tol: float
) -> None:
    assert [r["step"] for r in ra] == [r["step"] for r in rb]
    for x, y in zip(ra, rb, strict=True):
        for key in keys:
            if isinstance(x[key], str):
                assert x[key] == y[key], (x["step"], key)
            else:
                assert abs(x[key] - y[key]) <= tol, (x["step"], key, x[key], y[key])


def assert_same_weights(a: Path, b: Path, tol: float) -> None:
    for name in ("adapter_model.safetensors", "value_head.safetensors"):
        wa, wb = load_file(str(a / name)), load_file(str(b / name))
        assert wa.keys() == wb.keys()
        for key in wa:
            assert torch.allclose(wa[key], wb[key], atol=tol, rtol=0), (name, key)


def assert_same_trajectory(a: Path, b: Path, tol: float) -> None:
    """Every iteration, every held-out evaluation, and the final and best weights."""
    assert_same_records(iterations(a), iterations(b), COMPARED, tol)
    assert_same_records(iterations(a, "val"), iterations(b, "val"), VAL_COMPARED, tol)
    assert_same_weights(a / "final", b / "final", tol)
    assert_same_weights(a / "best", b / "best", tol)


def test_killed_ppo_run_resumes_on_the_same_trajectory(
    tmp_path: Path, tiny_llama: Path, toy: tuple[Path, Path], capsys: pytest.CaptureFixture[str]
) -> None:
    rm, prompts = toy
    cfg = ppo_config(
        tmp_path,
        tiny_llama,
        prompts,
        rm,
        train={"max_steps": 5, "save_every": 2, "eval_every": 2},
        optim={"lr": 1e-3, "schedule": "cosine", "warmup_steps": 2},
        ppo={"kl_target": 0.01},  # the controller moves beta every iteration
    )
    runs = tmp_path / "runs"
    assert train_subprocess(cfg, "train.run_name=whole").returncode == 0
    # SIGKILL right after iteration 3: the last checkpoint is iteration 2, so 3 is redone.
    assert train_subprocess(cfg, "train.run_name=crashed", env={CRASH_ENV: "3"}).returncode == -9
    crashed = runs / "crashed"
    assert not (crashed / "final").exists()
    assert len(iterations(crashed)) == 3
    resumed = train_subprocess(cfg, "train.run_name=crashed", "--resume")
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    assert len(iterations(runs / "whole")) == 5
    assert len({r["kl_coef"] for r in iterations(crashed)}) == 5  # beta really is state
    # the baseline is not repeated on resume, and the evaluation at 4 (after the crash) is redone
    assert [r["step"] for r in iterations(crashed, "val")] == [0, 2, 4, 5]
    assert_same_trajectory(runs / "whole", crashed, 1e-6)

    # a changed PPO setting cannot continue the same run
    assert main(["train", str(cfg), "train.run_name=whole", "ppo.kl_coef=0.1", "--resume"]) == 2
    err = capsys.readouterr().err
    assert "ppo.kl_coef" in err and "0.05 -> 0.1" in err
    # a longer run continues from the last checkpoint (iteration 5)
    assert main(["train", str(cfg), "train.run_name=whole", "train.max_steps=6", "--resume"]) == 0
    assert [r["step"] for r in iterations(runs / "whole")] == [1, 2, 3, 4, 5, 6]
    assert [r["step"] for r in iterations(runs / "whole", "val")] == [0, 2, 4, 5, 6]


def test_resume_without_a_checkpoint_is_refused(
    tmp_path: Path, tiny_llama: Path, toy: tuple[Path, Path], capsys: pytest.CaptureFixture[str]
) -> None:
    rm, prompts = toy
    cfg = ppo_config(tmp_path, tiny_llama, prompts, rm, train={"max_steps": 1})
    assert main(["train", str(cfg)]) == 0  # no save_every: no checkpoint
    assert main(["train", str(cfg), "--resume"]) == 2
    err = capsys.readouterr().err
    assert "holds no checkpoint" in err and str(tmp_path / "runs" / "run") in err


def test_two_processes_follow_one(tmp_path: Path, tiny_llama: Path, toy: tuple[Path, Path]) -> None:
    rm, prompts = toy
    cfg = ppo_config(
        tmp_path,
        tiny_llama,
        prompts,
        rm,
        data={"val_fraction": 0.25},  # 6 held out: each process answers 3 of them
        train={"max_steps": 2, "eval_every": 1},
    )
    one = train_subprocess(cfg, "train.run_name=one")
    assert one.returncode == 0, one.stderr[-2000:]
    two = train_subprocess(cfg, "train.run_name=two", nproc=2)
    assert two.returncode == 0, two.stderr[-3000:]
    runs = tmp_path / "runs"
    assert json.loads((runs / "two" / "env.json").read_text())["world_size"] == 2
    assert [(r["step"], r["n"]) for r in iterations(runs / "two", "val")] == [
        (0, 6),
        (1, 6),
        (2, 6),
    ]
    assert_same_trajectory(runs / "one", runs / "two", 1e-4)
