"""The shipped recipes train all-MiniLM-L6-v2 (offline, from its PyPI package) into a
support-ticket classifier that beats the majority-class baseline on held-out templates."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from tunesmith.config import load_config
from tunesmith.methods.classify import run

pytestmark = pytest.mark.integration
ROOT = Path(__file__).resolve().parents[2]


@pytest.mark.parametrize(("recipe", "margin"), [("classify_lora", 0.3), ("classify_head", 0.3)])
def test_minilm_beats_majority_baseline(tmp_path: Path, recipe: str, margin: float) -> None:
    path = ROOT / "configs" / "all-minilm-l6-v2" / f"{recipe}.yaml"
    overrides = [
        f"data.train={ROOT / 'data/classify/train.jsonl'}",
        f"data.validation={ROOT / 'data/classify/test.jsonl'}",
        f"train.output_dir={tmp_path}",
    ]
    result = run(load_config(path, overrides))
    e = result.eval
    print(f"{recipe}: {json.dumps(e)}")
    assert e["majority_accuracy"] < 0.45  # billing is 39% of the held-out set
    assert e["accuracy"] > e["majority_accuracy"] + margin
    assert e["macro_f1"] > e["majority_macro_f1"] + margin
    report = json.loads((result.run_dir / "eval.json").read_text())
    assert report["held_out"]["labels"] == ["account", "billing", "shipping", "technical"]
