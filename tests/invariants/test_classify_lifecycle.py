"""Classify on the run lifecycle: a killed run resumes on the same trajectory, resume refuses
what it cannot continue exactly, and torchrun (DDP, FSDP2 over the encoder layers) follows the
single-process trajectory at the same global batch."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
import torch
import yaml
from safetensors.torch import load_file

from tests.helpers.runs import step_losses, train_subprocess
from tests.methods.test_classify import make_tiny_bert, write_rows
from tunesmith.cli import main
from tunesmith.engine.run import CRASH_ENV


@pytest.fixture(scope="module")
def tiny_bert(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Dropout 0.1: a resumed run must restore the RNG to draw the same masks."""
    return make_tiny_bert(tmp_path_factory.mktemp("bert") / "tiny-bert", dropout=0.1)


@pytest.fixture(scope="module")
def tiny_bert_no_dropout(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """No dropout: one process and two draw different masks, so they could not match."""
    return make_tiny_bert(tmp_path_factory.mktemp("bert") / "tiny-bert-0", dropout=0.0)


def write_config(tmp_path: Path, model: Path, **sections: dict[str, Any]) -> Path:
    cfg: dict[str, Any] = {
        "method": "classify",
        "model": {"name_or_path": str(model), "dtype": "float32"},
        "data": {
            "train": str(write_rows(tmp_path / "train.jsonl", 20)),
            "validation": str(write_rows(tmp_path / "test.jsonl", 6)),
            "max_length": 32,
        },
        "classify": {"mode": "full", "text_field": "body", "label_field": "topic"},
        "train": {
            "output_dir": str(tmp_path / "runs"),
            "run_name": "run",
            "max_steps": 4,
            "micro_batch_size": 4,
            "precision": "fp32",  # compared to 1e-6
            "seed": 5,
        },
        "optim": {"lr": 1e-3},
        "lora": {"r": 4, "dropout": 0.0, "target_modules": "all-linear"},
    }
    for name, values in sections.items():
        cfg.setdefault(name, {}).update(values)
    path = tmp_path / "cfg.yaml"
    path.write_text("# tunesmith train cfg.yaml\n" + yaml.safe_dump(cfg))
    return path


def records(run_dir: Path, split: str) -> list[dict[str, Any]]:
    rows = [json.loads(x) for x in (run_dir / "metrics.jsonl").read_text().splitlines()]
    return [{k: v for k, v in r.items() if k != "time"} for r in rows if r["split"] == split]


def val_records(run_dir: Path) -> list[dict[str, Any]]:
    return records(run_dir, "val")


def train_records(run_dir: Path) -> list[dict[str, Any]]:
    return records(run_dir, "train")


def assert_same_weights(a: Path, b: Path, name: str, atol: float) -> None:
    wa, wb = load_file(str(a / name)), load_file(str(b / name))
    assert wa.keys() == wb.keys()
    for key in wa:
        assert torch.allclose(wa[key], wb[key], atol=atol, rtol=0), key


def test_killed_classifier_resumes_on_the_same_trajectory(
    tmp_path: Path, tiny_bert: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    cfg = write_config(
        tmp_path,
        tiny_bert,  # 20 rows, 4 a step: the 10 steps cover two reshuffles
        train={"max_steps": 10, "save_every": 4, "eval_every": 3},
        optim={"warmup_steps": 2},
    )
    runs = tmp_path / "runs"
    assert train_subprocess(cfg, "train.run_name=whole").returncode == 0
    # SIGKILL right after step 6: the last checkpoint is step 4, so steps 5-6 are redone.
    assert train_subprocess(cfg, "train.run_name=crashed", env={CRASH_ENV: "6"}).returncode == -9
    crashed = runs / "crashed"
    assert len(step_losses(crashed)) == 6 and not (crashed / "final").exists()

    assert main(["train", str(cfg), "train.run_name=crashed", "optim.lr=0.01", "--resume"]) == 2
    assert "optim.lr: 0.001 -> 0.01" in capsys.readouterr().err

    resumed = train_subprocess(cfg, "train.run_name=crashed", "--resume")
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    whole = step_losses(runs / "whole")
    again = step_losses(crashed)
    assert len(whole) == len(again) == 10
    for a, b in zip(whole, again, strict=True):
        assert abs(a - b) < 1e-6
    assert val_records(runs / "whole") == val_records(crashed)  # steps 3, 6, 9, 10
    for out in ("final", "best"):
        assert_same_weights(runs / "whole" / out, crashed / out, "model.safetensors", 1e-6)
    assert (crashed / "final" / "labels.json").is_file()

    # A longer run continues from the last checkpoint (step 10).
    assert (
        main(["train", str(cfg), "train.run_name=crashed", "train.max_steps=12", "--resume"]) == 0
    )
    assert step_losses(crashed)[:10] == again and len(step_losses(crashed)) == 12


def test_resume_without_a_checkpoint_is_refused(
    tmp_path: Path, tiny_bert: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    cfg = write_config(tmp_path, tiny_bert, train={"max_steps": 2})  # no save_every
    assert main(["train", str(cfg)]) == 0
    assert main(["train", str(cfg), "--resume"]) == 2
    assert "holds no checkpoint to continue from" in capsys.readouterr().err


@pytest.mark.parametrize(
    ("parallel", "mode", "accum"),
    [("ddp", "lora", 2), ("fsdp", "full", 1), ("ddp", "top_k", 1)],  # top_k: on cached states
)
def test_two_processes_match_one_with_the_same_global_batch(
    tmp_path: Path, tiny_bert_no_dropout: Path, parallel: str, mode: str, accum: int
) -> None:
    cfg = write_config(
        tmp_path,
        tiny_bert_no_dropout,
        classify={"mode": mode},
        train={"eval_every": 2, "grad_accum": accum, "parallel": parallel},
        optim={"lr": 1e-2 if mode == "lora" else 1e-3},
    )
    one = train_subprocess(cfg, "train.micro_batch_size=4", "train.run_name=one")
    assert one.returncode == 0, one.stderr[-2000:]
    two = train_subprocess(cfg, "train.micro_batch_size=2", "train.run_name=two", nproc=2)
    assert two.returncode == 0, two.stderr[-3000:]
    cached = "classify top_k: frozen features of"
    assert (cached in one.stdout and cached in two.stdout) == (mode == "top_k")
    runs = tmp_path / "runs"
    a, b = train_records(runs / "one"), train_records(runs / "two")
    assert len(a) == len(b) == 4
    for ra, rb in zip(a, b, strict=True):
        assert abs(ra["loss"] - rb["loss"]) < 1e-4
        # AdamW hides a constant factor on the gradient; its norm shows it.
        assert abs(ra["grad_norm"] - rb["grad_norm"]) < 1e-4 * ra["grad_norm"]
        assert ra["examples"] == rb["examples"] == 4 * accum
    va, vb = val_records(runs / "one"), val_records(runs / "two")
    assert [v["confusion_matrix"] for v in va] == [v["confusion_matrix"] for v in vb]
    name = "adapter_model.safetensors" if mode == "lora" else "model.safetensors"
    assert_same_weights(runs / "one" / "final", runs / "two" / "final", name, 1e-4)
    assert (runs / "two" / "final" / "labels.json").is_file()
