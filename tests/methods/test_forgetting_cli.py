"""Forgetting through the real CLI on a tiny model: the probe before/after, the budget guard
(stop and rollback) and the EWC / L2 penalties."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
import torch
from safetensors.torch import load_file
from transformers import AutoModelForCausalLM, AutoTokenizer

from tests.helpers.runs import train, write_chat_data, write_config
from tunesmith.eval.perplexity import evaluate_loss
from tunesmith.forgetting.probe import text_chunks

# General text with none of the training replies' tokens ("It is 7."): fine-tuning a random
# model on the replies moves probability toward them and away from these words, so the probe's
# perplexity rises from the first steps on (what the guard tests need).
PROSE = (
    "quick brown foxes jump over lazy dogs while happy children sing songs near green hills "
    "under bright summer skies and old farmers walk slowly along narrow country roads\n"
)


def _probe_files(tmp_path: Path) -> tuple[Path, Path]:
    text = tmp_path / "general.txt"
    text.write_text(PROSE * 3)
    tasks = tmp_path / "tasks.jsonl"
    rows = [
        {"prompt": "What is the capital of France?", "answer": "Paris"},
        {"prompt": "Say hello.", "answer": "Hello"},
        {"prompt": "Pick the animal.", "choices": ["fox", "stone"], "answer": "fox"},
        {"prompt": "Pick the colour.", "choices": ["brown", "quick"], "answer": "brown"},
    ]
    tasks.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return text, tasks


def _setup(tmp_path: Path, model: Path, **sections: dict[str, Any]) -> Path:
    data = write_chat_data(tmp_path / "d.jsonl", n=32)
    text, tasks = _probe_files(tmp_path)
    probe = {"text": str(text), "tasks": str(tasks), "chunk_tokens": 32, "max_chunks": 4}
    probe.update(sections.pop("forgetting", {}))
    sections.setdefault("adapter", {"type": "full"})
    sections.setdefault("optim", {"lr": 3e-3})
    return write_config(tmp_path, model, data, forgetting=probe, **sections)


def _rows(run: Path, split: str) -> list[dict[str, Any]]:
    lines = (run / "metrics.jsonl").read_text().splitlines()
    return [r for r in map(json.loads, lines) if r.get("split") == split]


def _text_ppl(model_dir: Path, text: Path) -> float:
    tok = AutoTokenizer.from_pretrained(model_dir)
    model = AutoModelForCausalLM.from_pretrained(model_dir, dtype=torch.float32)
    chunks = text_chunks(str(text), tok, 32)[:4]
    return evaluate_loss(model, chunks, tok.pad_token_id, torch.device("cpu"), "fp32", 4)[
        "perplexity"
    ]


def test_probe_before_and_after_match_the_base_and_final_models(
    tmp_path: Path, tiny_llama: Path
) -> None:
    cfg = _setup(tmp_path, tiny_llama, forgetting={"every": 2})
    run = train(cfg)
    report = json.loads((run / "forgetting.json").read_text())
    text = tmp_path / "general.txt"
    assert report["before"]["text_ppl"] == pytest.approx(_text_ppl(tiny_llama, text), rel=1e-5)
    assert report["after"]["text_ppl"] == pytest.approx(_text_ppl(run / "final", text), rel=1e-5)
    pct = 100 * (report["after"]["text_ppl"] / report["before"]["text_ppl"] - 1)
    assert report["delta"]["probe_ppl_pct"] == pytest.approx(pct)
    acc = 100 * (report["after"]["task_acc"] - report["before"]["task_acc"])
    assert report["delta"]["probe_acc_points"] == pytest.approx(acc)
    assert len(report["before"]["task_correct"]) == 4
    assert report["target_gain"] == pytest.approx(report["target_val"] - report["target_val_after"])
    rows = _rows(run, "forgetting")
    assert [r["step"] for r in rows] == [2, 4]  # the base probe is in forgetting.json
    assert rows[-1]["probe_ppl"] == pytest.approx(report["after"]["text_ppl"])


def test_a_zero_budget_stops_at_the_first_check(tmp_path: Path, tiny_llama: Path) -> None:
    budget = {"max_ppl_increase_pct": 0.0}
    cfg = _setup(tmp_path, tiny_llama, forgetting={"every": 2, "budget": budget})
    run = train(cfg, "train.max_steps=8", "optim.lr=0.1")  # large steps: quick forgetting
    report = json.loads((run / "forgetting.json").read_text())
    assert report["guard"]["step"] == 2 and report["guard"]["action"] == "stop"
    assert report["delta"]["probe_ppl_pct"] > 0.0
    assert len(_rows(run, "train")) == 2  # no step after the trip
    assert _rows(run, "forgetting")[0]["within_budget"] is False


def test_rollback_restores_the_latest_checkpoint_within_budget_exactly(
    tmp_path: Path, tiny_llama: Path
) -> None:
    train_cfg = {"save_every": 1, "keep_last": 10, "max_steps": 6}
    cfg = _setup(tmp_path, tiny_llama, forgetting={"every": 1}, train=train_cfg)
    free_run = train(cfg, "train.run_name=free", "optim.lr=0.1")
    free = [r["probe_ppl_pct"] for r in _rows(free_run, "forgetting")]
    # A budget just above step 1's increase: some later step must exceed it for the test to bite.
    limit = free[0] + 1e-6
    trip = next(i for i, x in enumerate(free) if x > limit) + 1  # 1-based step
    assert 1 < trip <= 6
    run = train(
        cfg,
        "train.run_name=guarded",
        "optim.lr=0.1",
        f"forgetting.budget.max_ppl_increase_pct={limit}",
        "forgetting.on_exceed=rollback",
    )
    report = json.loads((run / "forgetting.json").read_text())
    assert report["guard"]["step"] == trip and report["guard"]["rolled_back_to"] == trip - 1
    final = load_file(str(run / "final/model.safetensors"))
    kept = load_file(str(run / f"checkpoints/step-{trip - 1}/model.safetensors"))
    assert final.keys() == kept.keys()
    assert all(torch.equal(final[k], kept[k]) for k in final)
    assert not (run / f"checkpoints/step-{trip}").exists()
    assert report["after"]["text_ppl"] == pytest.approx(
        _text_ppl(run / "final", tmp_path / "general.txt"), rel=1e-5
    )
    saved = json.loads((run / f"checkpoints/step-{trip - 1}/forgetting.json").read_text())
    assert saved["check"]["within_budget"] is True


@torch.no_grad()
def _distance(a: Path, b: Path) -> float:
    wa = AutoModelForCausalLM.from_pretrained(a, dtype=torch.float32)
    wb = AutoModelForCausalLM.from_pretrained(b, dtype=torch.float32)
    return sum(
        float(((p - q) ** 2).sum()) for p, q in zip(wa.parameters(), wb.parameters(), strict=True)
    )


def test_l2_penalty_value_and_pull_toward_the_start(tmp_path: Path, tiny_llama: Path) -> None:
    cfg = _setup(tmp_path, tiny_llama, train={"save_every": 1, "keep_last": 10})
    plain = train(cfg, "train.run_name=plain")
    lam = 5.0
    l2 = train(cfg, "train.run_name=l2", "regularization.type=l2", f"regularization.lambda={lam}")
    penalties = [r["reg_penalty"] for r in _rows(l2, "train")]
    assert penalties[0] == 0.0  # theta = theta* before the first step
    # step 3's penalty is lambda * ||theta_2 - theta_0||^2, theta_2 the step-2 checkpoint
    expect = lam * _distance(l2 / "checkpoints/step-2", tiny_llama)
    assert penalties[2] == pytest.approx(expect, rel=1e-4)
    assert _distance(l2 / "final", tiny_llama) < _distance(plain / "final", tiny_llama)
    assert "reg_penalty" not in _rows(plain, "train")[0]


@pytest.mark.parametrize("adapter", ["full", "lora"])
def test_ewc_pulls_full_and_lora_training_toward_the_start(
    tmp_path: Path, tiny_llama: Path, adapter: str
) -> None:
    cfg = _setup(tmp_path, tiny_llama, adapter={"type": adapter})
    plain = train(cfg, "train.run_name=plain")
    ewc = train(
        cfg,
        "train.run_name=ewc",
        "regularization.type=ewc",
        "regularization.lambda=1e6",
        "regularization.fisher_batches=2",
    )
    penalties = [r["reg_penalty"] for r in _rows(ewc, "train")]
    assert penalties[0] == 0.0 and penalties[-1] > 0.0
    # the first step starts at theta*: no pull yet, the same data loss as without EWC
    assert _rows(ewc, "train")[0]["loss"] == pytest.approx(_rows(plain, "train")[0]["loss"])
    if adapter == "full":
        assert _distance(ewc / "final", tiny_llama) < _distance(plain / "final", tiny_llama)
    else:  # LoRA's B starts at 0: its norm is the distance the adapter moved (A is anchored too)
        assert _lora_b_norm(ewc / "final") < _lora_b_norm(plain / "final")


def _lora_b_norm(run_final: Path) -> float:
    weights = load_file(str(run_final / "adapter_model.safetensors"))
    return sum(float((w**2).sum()) for k, w in weights.items() if "lora_B" in k)
