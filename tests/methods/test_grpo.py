"""GRPO end to end on a tiny random model through the real CLI."""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any

import pytest
import torch
import yaml

from tunesmith.cli import main


@pytest.fixture(autouse=True)
def _one_thread() -> Any:
    """Decoding runs many tiny ops: one thread is several times faster on a busy machine."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


def nan_on_second(prompts: list[str], completions: list[str], **_: Any) -> list[float]:
    return [float("nan") if i == 1 else 0.0 for i in range(len(completions))]


def raise_on_answer(prompts: list[str], completions: list[str], **f: Any) -> list[float]:
    if any(a in ("2", "4", "6", "8") for a in f["answer"]):  # every round meets one of these
        raise RuntimeError("broken reward")
    return [0.0] * len(completions)


def length_reward(prompts: list[str], completions: list[str], **_: Any) -> list[float]:
    """A reward that varies within every group on a random model: completion length."""
    return [len(c) / 50 for c in completions]


def _data(path: Path, n: int) -> Path:
    rows = [{"prompt": f"What is {i} + {i}?", "answer": str(2 * i)} for i in range(n)]
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return path


def _config(tmp_path: Path, model: Path, **grpo: Any) -> Path:
    cfg = {
        "method": "grpo",
        "model": {"name_or_path": str(model)},
        "data": {
            "train": str(_data(tmp_path / "train.jsonl", 8)),
            "validation": str(_data(tmp_path / "val.jsonl", 4)),
        },
        "train": {
            "output_dir": str(tmp_path / "runs"),
            "run_name": "run",
            "max_steps": 3,
            "micro_batch_size": 4,
            "precision": "fp32",
            "seed": 0,
        },
        "optim": {"lr": 1e-2},
        "lora": {"dropout": 0.0, "r": 4},
        "grpo": {
            "num_generations": 4,
            "prompts_per_step": 2,
            "max_new_tokens": 8,
            "inner_steps": 2,
            "beta": 0.1,
            **grpo,
        },
        "rewards": [
            {"name": "math"},
            {"name": "tests.methods.test_grpo:length_reward", "label": "length"},
        ],
    }
    path = tmp_path / "grpo.yaml"
    path.write_text("# tunesmith train grpo.yaml\n" + yaml.safe_dump(cfg))
    return path


def _rows(run: Path) -> list[dict[str, Any]]:
    return [json.loads(x) for x in (run / "metrics.jsonl").read_text().splitlines()]


@pytest.mark.parametrize("loss_norm", ["token", "sequence"])
def test_grpo_steps_run_with_finite_metrics(
    tmp_path: Path, tiny_llama: Path, loss_norm: str
) -> None:
    assert main(["train", str(_config(tmp_path, tiny_llama, loss_norm=loss_norm))]) == 0
    run = tmp_path / "runs" / "run"
    rows = _rows(run)
    train = [r for r in rows if r["split"] == "train"]
    assert [r["step"] for r in train] == [1, 2, 3]
    keys = [
        "loss",
        "kl",
        "clip_fraction",
        "reward_mean",
        "zero_variance_groups",
        "completion_length",
        "reward/math_mean",
        "reward/length_std",
        "grad_norm",
    ]
    for r in train:
        for k in keys:
            assert math.isfinite(r[k]), (k, r)
    # the length reward varies inside groups, so the policy gets a gradient
    assert all(r["grad_norm"] > 0 for r in train)
    assert all(r["kl"] > 0 for r in train)  # logged after an inner update: adapter has moved
    evals = [r for r in rows if r["split"] == "eval"]
    assert [e["step"] for e in evals] == [0, 3] and all(0 <= e["accuracy"] <= 1 for e in evals)
    assert (run / "final" / "adapter_model.safetensors").is_file()


def test_dr_grpo_and_single_inner_step(tmp_path: Path, tiny_llama: Path) -> None:
    cfg = _config(tmp_path, tiny_llama, scale_rewards=False, inner_steps=1)
    assert main(["train", str(cfg), "grpo.eval_before=false"]) == 0
    train = [r for r in _rows(tmp_path / "runs" / "run") if r["split"] == "train"]
    assert len(train) == 3 and all(math.isfinite(r["loss"]) for r in train)
    # one update per round from freshly sampled data: ratio 1, nothing is clipped
    assert all(r["clip_fraction"] == 0.0 for r in train)
    assert train[0]["kl"] == pytest.approx(0.0, abs=1e-6)  # LoRA starts at the reference
    assert train[1]["kl"] > 0


@pytest.mark.parametrize(
    ("fn", "message"),
    [
        (
            "nan_on_second",
            "reward 'tests.methods.test_grpo:nan_on_second' returned nan for example 1",
        ),
        ("raise_on_answer", "raise_on_answer' raised RuntimeError on example"),
    ],
)
def test_bad_reward_is_a_clear_error(
    tmp_path: Path, tiny_llama: Path, capsys: pytest.CaptureFixture[str], fn: str, message: str
) -> None:
    cfg = _config(tmp_path, tiny_llama)
    data = yaml.safe_load(cfg.read_text())
    data["rewards"] = [{"name": f"tests.methods.test_grpo:{fn}"}]
    data["grpo"]["eval_before"] = False
    cfg.write_text("# tunesmith train\n" + yaml.safe_dump(data))
    assert main(["train", str(cfg)]) == 2
    assert message in capsys.readouterr().err


def test_unknown_reward_and_bad_adapter_fail_early(tmp_path: Path, tiny_llama: Path) -> None:
    cfg = _config(tmp_path, tiny_llama)
    assert main(["train", str(cfg), "rewards=[{name: nosuch}]"]) == 2
    assert main(["train", str(cfg), "adapter.type=ia3"]) == 2
    assert not (tmp_path / "runs" / "run").exists()


@pytest.fixture(scope="module")
def llama64(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A 64-wide tiny Llama: bitsandbytes' CPU NF4 kernels need widths that are multiples of 64."""
    from tests.helpers.tiny_model import make_llama64_dir

    return make_llama64_dir(tmp_path_factory.mktemp("models") / "llama64")


def test_qlora_grpo_trains_on_a_4bit_base(
    tmp_path: Path, llama64: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    bnb = pytest.importorskip("bitsandbytes")
    from tunesmith.methods import grpo

    built: list[Any] = []
    original = grpo.build_trainable_model

    def build(*args: Any, **kwargs: Any) -> Any:
        built.append(original(*args, **kwargs))
        return built[-1]

    monkeypatch.setattr(grpo, "build_trainable_model", build)
    cfg = _config(tmp_path, llama64, inner_steps=1, eval_before=False)
    assert main(["train", str(cfg), "model.quantization=nf4", "train.max_steps=2"]) == 0
    layers = [m for m in built[0].modules() if isinstance(m, bnb.nn.Linear4bit)]
    assert layers and all(m.weight.dtype == torch.uint8 for m in layers)  # packed 4-bit base
    run = tmp_path / "runs" / "run"
    train = [r for r in _rows(run) if r["split"] == "train"]
    assert len(train) == 2 and all(r["grad_norm"] > 0 for r in train)
    assert train[1]["kl"] > 0  # the adapter moved away from the (quantized) reference
    env = json.loads((run / "env.json").read_text())
    assert env["quantization"] == "nf4"
    assert (run / "final" / "adapter_model.safetensors").is_file()


@pytest.mark.parametrize(
    ("override", "named"),
    [
        ("train.grad_accum=2", "unknown key 'train.grad_accum' for method grpo"),
        ("train.compile=true", "unknown key 'train.compile' for method grpo"),
        ("data.packing=true", "unknown key 'data.packing' for method grpo"),
        ("grpo.eval_every=2", "unknown key 'grpo.eval_every'"),
        ("train.parallel=fsdp", "grpo runs with train.parallel=ddp only"),
    ],
)
def test_fields_grpo_does_not_read_are_refused(
    tmp_path: Path,
    tiny_llama: Path,
    capsys: pytest.CaptureFixture[str],
    override: str,
    named: str,
) -> None:
    cfg = _config(tmp_path, tiny_llama)
    assert main(["validate", str(cfg)]) == 0
    assert main(["validate", str(cfg), override]) == 2
    assert named in capsys.readouterr().err


def test_early_stopping_ends_a_run_whose_held_out_accuracy_stops_rising(
    tmp_path: Path, tiny_llama: Path
) -> None:
    """With a learning rate too small to change a greedy reply, held-out accuracy cannot rise
    above its first evaluation: patience 1 ends the run after the second, and best/ holds the
    first evaluated weights."""
    cfg = _config(tmp_path, tiny_llama)
    args = ["optim.lr=1e-30", "train.max_steps=6", "train.eval_every=1"]
    assert main(["train", str(cfg), *args, "train.early_stopping_patience=1"]) == 0
    run = tmp_path / "runs" / "run"
    rows = _rows(run)
    assert [r["step"] for r in rows if r["split"] == "train"] == [1, 2]
    evals = [r for r in rows if r["split"] == "eval"]
    assert [e["step"] for e in evals] == [0, 1, 2]
    assert len({e["accuracy"] for e in evals}) == 1  # the premise: nothing could improve
    assert (run / "best" / "adapter_model.safetensors").is_file()
    assert (run / "final" / "adapter_model.safetensors").is_file()
