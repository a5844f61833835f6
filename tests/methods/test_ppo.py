"""PPO through the CLI on the tiny model with a toy reward model: a few iterations run and log
finite metrics; held-out evaluations run at their steps, best/ loads and early stopping stops;
a reward model with another tokenizer, or a path that is not a reward model, is refused before
training; fields PPO does not read are refused by the config."""

from __future__ import annotations

import json
import math
import shutil
from pathlib import Path
from typing import Any

import pytest
import torch
import yaml
from peft import PeftModel
from safetensors.torch import load_file
from transformers import AutoModelForCausalLM

from tests.helpers.preference_data import write_pairs
from tests.helpers.runs import write_config
from tests.helpers.tiny_tokenizer import make_tiny_tokenizer
from tunesmith.cli import main
from tunesmith.config import load_config
from tunesmith.data.completion_batches import collate_prompt_response
from tunesmith.data.split import held_out_note
from tunesmith.errors import UserError
from tunesmith.methods.ppo import check_world

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
VAL_KEYS = ("reward_mean", "reward_std", "completion_length")


def train_toy_reward_model(tmp: Path, model: Path) -> tuple[Path, Path]:
    """(a trained toy reward model run dir, the prompt file: preference pairs)."""
    pairs = write_pairs(tmp / "pairs.jsonl", 24, 0)
    cfg = write_config(
        tmp,
        model,
        pairs,
        data={"max_length": 64},
        train={"max_steps": 3, "micro_batch_size": 8},
    )
    cfg.write_text(cfg.read_text() + "method: reward\n")
    assert main(["train", str(cfg), "train.run_name=rm"]) == 0
    return tmp / "runs" / "rm", pairs


@pytest.fixture(scope="module")
def toy(tiny_llama: Path, tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    return train_toy_reward_model(tmp_path_factory.mktemp("ppo"), tiny_llama)


def ppo_config(
    tmp: Path, model: Path, prompts: Path, reward_model: Path, **sections: dict[str, Any]
) -> Path:
    """A PPO config of a few short iterations in fp32 (``sections`` update its sections)."""
    data: dict[str, Any] = {
        "method": "ppo",
        "model": {"name_or_path": str(model)},
        "data": {"train": str(prompts), "max_prompt_length": 128},
        "train": {
            "output_dir": str(tmp / "runs"),
            "run_name": "run",
            "max_steps": 3,
            "seed": 3,
            "precision": "fp32",
        },
        "optim": {"lr": 1e-3, "schedule": "constant"},
        "ppo": {
            "reward_model": str(reward_model),
            "prompts_per_iteration": 4,
            "minibatch_size": 2,
            "max_new_tokens": 6,
            "epochs": 2,
        },
    }
    for name, values in sections.items():
        data.setdefault(name, {}).update(values)
    cfg = tmp / "ppo.yaml"
    cfg.write_text("# tunesmith train ppo.yaml\n" + yaml.safe_dump(data))
    return cfg


def records(run_dir: Path, split: str) -> list[dict[str, Any]]:
    rows = [json.loads(x) for x in (run_dir / "metrics.jsonl").read_text().splitlines()]
    return [r for r in rows if r.get("split") == split]


def summary(out: str) -> dict[str, Any]:
    """The result `tunesmith train` prints last (a JSON object)."""
    return json.loads(out[out.rindex("\n{\n") + 1 :])


def test_ppo_runs_and_logs_finite_metrics(
    tiny_llama: Path, toy: tuple[Path, Path], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    rm, prompts = toy
    cfg = ppo_config(tmp_path, tiny_llama, prompts, rm, train={"eval_every": 2})
    assert main(["train", str(cfg)]) == 0
    result = summary(capsys.readouterr().out)
    run = tmp_path / "runs" / "run"
    env = json.loads((run / "env.json").read_text())
    assert (env["prompts"], env["val_prompts"]) == (22, 2)  # 24 prompts, val_fraction 0.1
    rows = records(run, "train")
    assert [r["step"] for r in rows] == [1, 2, 3]
    for r in rows:
        for key in PPO_KEYS:
            assert math.isfinite(r[key]), (key, r)
        assert 0.0 <= r["clip_fraction"] <= 1.0
        assert 1 <= r["response_length"] <= 6
        assert len(r["samples_sha256"]) == 64
    # LoRA's B starts at zero, so before any update the policy is the reference: KL 0; the
    # updates then move it away
    assert abs(rows[0]["kl"]) < 1e-4
    assert abs(rows[-1]["kl"]) > 1e-6
    # the adaptive controller moved beta from its start (KL != target)
    assert rows[0]["kl_coef"] == 0.05 and rows[1]["kl_coef"] != 0.05
    assert len({r["samples_sha256"] for r in rows}) == 3  # fresh samples every iteration
    assert (run / "final" / "adapter_config.json").is_file()
    assert (run / "final" / "value_head.safetensors").is_file()
    assert (run / "final" / "tunesmith_config.yaml").is_file()
    assert (run / "rejects.jsonl").read_text() == ""

    # held out: the untrained policy (step 0), every eval_every iterations and the last one
    val = records(run, "val")
    assert [r["step"] for r in val] == [0, 2, 3]
    for r in val:
        assert r["n"] == 2
        for key in VAL_KEYS:
            assert math.isfinite(r[key]), (key, r)
        assert 1 <= r["completion_length"] <= 6
    rewards = {r["step"]: r["reward_mean"] for r in val}
    assert result["val_reward_first"] == rewards[0] and result["val_reward_last"] == rewards[3]
    # best/ is the best of the tracked evaluations (step 0 is only the baseline)
    assert result["best_step"] in (2, 3) and result["best_val_reward"] == max(
        rewards[2], rewards[3]
    )
    best = run / "best"
    head = load_file(str(best / "value_head.safetensors"))
    assert head["weight"].shape == (1, 32) and head["bias"].shape == (1,)
    adapter = load_file(str(best / "adapter_model.safetensors"))
    final = load_file(str(run / "final" / "adapter_model.safetensors"))
    same = all(torch.equal(adapter[k], final[k]) for k in final)
    assert same == (result["best_step"] == 3)  # best/ holds the weights of its step
    policy = PeftModel.from_pretrained(AutoModelForCausalLM.from_pretrained(tiny_llama), best)
    assert any(torch.count_nonzero(p) for n, p in policy.named_parameters() if "lora_B" in n)
    assert (best / "tunesmith_config.yaml").is_file() and (best / "tokenizer_config.json").is_file()


def test_early_stopping_ends_a_run_whose_held_out_reward_stops_improving(
    tiny_llama: Path, toy: tuple[Path, Path], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """A learning rate of 1e-30 leaves every greedy reply, and so the held-out reward, as it
    was: the second evaluation is no improvement, and patience 1 ends the run there. Held-out
    prompts come from data.validation (capped by max_val_examples); train keeps all of its."""
    rm, prompts = toy
    cfg = ppo_config(
        tmp_path,
        tiny_llama,
        prompts,
        rm,
        data={"validation": str(prompts), "max_val_examples": 3},
        train={"max_steps": 5, "eval_every": 1, "early_stopping_patience": 1},
        optim={"lr": 1e-30},
    )
    assert main(["train", str(cfg)]) == 0
    result = summary(capsys.readouterr().out)
    run = tmp_path / "runs" / "run"
    env = json.loads((run / "env.json").read_text())
    assert (env["prompts"], env["val_prompts"]) == (24, 3)
    assert [r["step"] for r in records(run, "train")] == [1, 2]
    val = records(run, "val")
    assert [r["step"] for r in val] == [0, 1, 2]
    assert len({r["reward_mean"] for r in val}) == 1  # the premise: nothing improved
    assert len({r["samples_sha256"] for r in val}) == 1
    assert result["stopped_early"] is True and result["steps"] == 2 and result["best_step"] == 1
    assert (run / "best" / "adapter_model.safetensors").is_file()
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
    assert "tokenizes differently from the policy" in err and str(other) in err
    assert not (tmp_path / "runs" / "run").exists()  # refused before a run dir was made


def test_not_a_reward_model_is_refused(
    tiny_llama: Path, toy: tuple[Path, Path], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    _, prompts = toy
    cfg = ppo_config(tmp_path, tiny_llama, prompts, tiny_llama)
    assert main(["train", str(cfg)]) == 2
    assert "not a tunesmith reward model" in capsys.readouterr().err


def test_chat_prompts_drop_their_reply_and_bad_rows_go_to_rejects(
    tiny_llama: Path, toy: tuple[Path, Path], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    rm, _ = toy
    chat = tmp_path / "chat.jsonl"
    rows = [
        {
            "messages": [
                {"role": "user", "content": f"Say {i}"},
                {"role": "assistant", "content": "ok"},
            ]
        }
        for i in range(4)
    ]
    rows.append({"messages": [{"role": "assistant", "content": "no user turn"}]})
    chat.write_text("".join(json.dumps(r) + "\n" for r in rows))
    cfg = ppo_config(
        tmp_path,
        tiny_llama,
        chat,
        rm,
        data={"on_error": "skip", "val_fraction": 0},
        train={"max_steps": 1},
    )
    assert main(["train", str(cfg)]) == 0
    run = tmp_path / "runs" / "run"
    rejects = [json.loads(x) for x in (run / "rejects.jsonl").read_text().splitlines()]
    assert [(r["line"], r["field"]) for r in rejects] == [(5, "messages")]
    assert json.loads((run / "env.json").read_text())["prompts"] == 4
    # nothing held out: said out loud, and no evaluation or best/
    note = held_out_note(0, "prompts")
    assert note is not None and note in capsys.readouterr().out
    assert records(run, "val") == [] and not (run / "best").exists()


@pytest.mark.parametrize(
    ("override", "named"),
    [
        ("data.packing=true", "packing"),
        ("train.micro_batch_size=2", "micro_batch_size"),
        ("train.parallel=fsdp", "fsdp"),
        ("lora.dropout=0.1", "lora.dropout"),
        ("model.quantization=nf4", "quantization"),
    ],
)
def test_fields_ppo_does_not_read_are_refused(
    tmp_path: Path, tiny_llama: Path, override: str, named: str, capsys: pytest.CaptureFixture[str]
) -> None:
    cfg = ppo_config(tmp_path, tiny_llama, tmp_path / "p.jsonl", tmp_path / "rm")
    assert main(["validate", str(cfg)]) == 0
    assert main(["validate", str(cfg), override]) == 2
    assert named in capsys.readouterr().err


def test_prompts_and_minibatches_must_split_across_processes(
    tmp_path: Path, tiny_llama: Path
) -> None:
    cfg = load_config(
        ppo_config(tmp_path, tiny_llama, tmp_path / "p.jsonl", tmp_path / "rm"),
        ["ppo.prompts_per_iteration=6", "ppo.minibatch_size=3"],
    )
    check_world(cfg, 1)
    check_world(cfg, 3)
    with pytest.raises(UserError, match=r"ppo.prompts_per_iteration=6 .* 4 processes"):
        check_world(cfg, 4)
    with pytest.raises(UserError, match=r"ppo.minibatch_size=3 .* 2 processes"):
        check_world(cfg, 2)


def test_prompt_response_batches_line_responses_up() -> None:
    batch = collate_prompt_response([[5, 6, 7], [8]], [[1], [2, 3]], pad_id=0)
    assert batch["input_ids"].tolist() == [[5, 6, 7, 1, 0], [0, 0, 8, 2, 3]]
    assert batch["attention_mask"].tolist() == [[1, 1, 1, 1, 0], [0, 0, 1, 1, 1]]
    assert batch["response_mask"].tolist() == [[1, 0], [1, 1]]
