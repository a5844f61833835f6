"""PPO through the CLI on the tiny model with a toy reward model: a few iterations run and log
finite metrics; a reward model with another tokenizer, or a path that is not a reward model,
is refused before training."""

from __future__ import annotations

import json
import math
import shutil
from pathlib import Path

import pytest
import yaml

from tests.helpers.preference_data import write_pairs
from tests.helpers.runs import write_config
from tests.helpers.tiny_tokenizer import make_tiny_tokenizer
from tunesmith.cli import main

PPO_KEYS = (
    "reward_mean",
    "kl",
    "entropy",
    "clip_fraction",
    "value_loss",
    "policy_loss",
    "response_length",
    "kl_coef",
)


@pytest.fixture(scope="module")
def toy(tiny_llama: Path, tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    """(a trained toy reward model run dir, the prompt file)."""
    tmp = tmp_path_factory.mktemp("ppo")
    pairs = write_pairs(tmp / "pairs.jsonl", 24, 0)
    cfg = write_config(
        tmp,
        tiny_llama,
        pairs,
        data={"max_length": 64},
        train={"max_steps": 3, "micro_batch_size": 8},
    )
    cfg.write_text(cfg.read_text() + "method: reward\n")
    assert main(["train", str(cfg), "train.run_name=rm"]) == 0
    return tmp / "runs" / "rm", pairs


def ppo_config(tmp: Path, model: Path, prompts: Path, reward_model: Path) -> Path:
    cfg = write_config(
        tmp,
        model,
        prompts,
        data={"max_length": 64},
        train={"max_steps": 3},
        optim={"lr": 1e-3, "schedule": "constant"},
    )
    data = yaml.safe_load(cfg.read_text())
    data["method"] = "ppo"
    data["ppo"] = {
        "reward_model": str(reward_model),
        "prompts_per_iteration": 4,
        "minibatch_size": 2,
        "max_new_tokens": 6,
        "epochs": 2,
    }
    cfg.write_text("# tunesmith train cfg.yaml\n" + yaml.safe_dump(data))
    return cfg


def test_ppo_runs_and_logs_finite_metrics(
    tiny_llama: Path, toy: tuple[Path, Path], tmp_path: Path
) -> None:
    rm, prompts = toy
    assert main(["train", str(ppo_config(tmp_path, tiny_llama, prompts, rm))]) == 0
    run = tmp_path / "runs" / "run"
    rows = [json.loads(x) for x in (run / "metrics.jsonl").read_text().splitlines()]
    assert [r["step"] for r in rows] == [1, 2, 3]
    for r in rows:
        for key in PPO_KEYS:
            assert math.isfinite(r[key]), (key, r)
        assert 0.0 <= r["clip_fraction"] <= 1.0
        assert 1 <= r["response_length"] <= 6
    # LoRA's B starts at zero, so before any update the policy is the reference: KL 0; the
    # updates then move it away
    assert abs(rows[0]["kl"]) < 1e-4
    assert abs(rows[-1]["kl"]) > 1e-6
    # the adaptive controller moved beta from its start (KL != target)
    assert rows[0]["kl_coef"] == 0.05 and rows[1]["kl_coef"] != 0.05
    assert (run / "final" / "adapter_config.json").is_file()
    assert (run / "final" / "value_head.safetensors").is_file()


def test_tokenizer_mismatch_is_refused(
    tiny_llama: Path, toy: tuple[Path, Path], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    rm, prompts = toy
    other = tmp_path / "other_rm"
    shutil.copytree(rm / "final", other)
    make_tiny_tokenizer(vocab_size=500).save_pretrained(other)
    cfg = ppo_config(tmp_path, tiny_llama, prompts, other)
    assert main(["train", str(cfg)]) == 2
    err = capsys.readouterr().err
    assert "different tokenizer" in err and str(other) in err
    assert not (tmp_path / "runs" / "run").exists()  # refused before a run dir was made


def test_not_a_reward_model_is_refused(
    tiny_llama: Path, toy: tuple[Path, Path], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    _, prompts = toy
    cfg = ppo_config(tmp_path, tiny_llama, prompts, tiny_llama)
    assert main(["train", str(cfg)]) == 2
    assert "not a tunesmith reward model" in capsys.readouterr().err
