"""``train.qat`` (torchao fake quantization during SFT, real quantized model at the end)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from transformers import AutoModelForCausalLM

from tests.helpers.runs import step_losses, train, write_chat_data, write_config
from tunesmith.cli import main
from tunesmith.config.qat import QATSection

pytest.importorskip("torchao")


def _fake_quant_model(model_dir: Path, weights: str) -> torch.nn.Module:
    from tunesmith.compress.qat import prepare_qat

    model = AutoModelForCausalLM.from_pretrained(model_dir, dtype=torch.float32)
    return prepare_qat(model, QATSection(weights=weights)).eval()


@pytest.mark.parametrize(("weights", "levels"), [("int4", 16), ("int8", 256)])
def test_forward_sees_quantized_weights(tiny_llama: Path, weights: str, levels: int) -> None:
    from torchao.quantization.qat import FakeQuantizedLinear

    model = _fake_quant_model(tiny_llama, weights)
    q_proj = model.model.layers[0].self_attn.q_proj
    assert isinstance(q_proj, FakeQuantizedLinear)
    assert not isinstance(model.lm_head, FakeQuantizedLinear)  # tied head stays float
    seen = q_proj.weight_fake_quantizer(q_proj.weight)  # what the forward multiplies by
    assert not torch.equal(seen, q_proj.weight)
    groups = seen.reshape(-1, 32) if weights == "int4" else seen  # one scale per group / row
    distinct = max(len(torch.unique(g)) for g in groups)
    assert 2 < distinct <= levels
    # The forward really goes through the quantized weight and int8 activations:
    x = torch.randn(3, q_proj.in_features)
    fq_x = q_proj.activation_fake_quantizer(x)
    assert torch.allclose(q_proj(x), torch.nn.functional.linear(fq_x, seen), atol=1e-6)
    assert not torch.allclose(q_proj(x), torch.nn.functional.linear(x, q_proj.weight), atol=1e-4)


def test_qat_sft_run_converts_to_quantized_model(tiny_llama: Path, tmp_path: Path) -> None:
    data = write_chat_data(tmp_path / "d.jsonl", n=32)
    cfg = write_config(
        tmp_path,
        tiny_llama,
        data,
        adapter={"type": "full"},
        train={"max_steps": 12, "qat": {"weights": "int4", "group_size": 32}},
        optim={"lr": 3e-3},
    )
    run = train(cfg)
    losses = step_losses(run)
    assert all(torch.isfinite(torch.tensor(losses)))
    assert sum(losses[-3:]) / 3 < sum(losses[:3]) / 3  # it learns through the fake quantizers
    final = run / "final"
    plain = AutoModelForCausalLM.from_pretrained(final, dtype=torch.float32).eval()
    quantized = AutoModelForCausalLM.from_pretrained(final / "quantized").eval()
    weight = quantized.model.layers[0].mlp.down_proj.weight
    assert "Intx" in type(weight).__name__ and weight.qdata.dtype == torch.int8
    assert json.loads((final / "quantized" / "config.json").read_text())["quantization_config"]
    ids = torch.tensor([[3, 17, 45, 99, 120, 7, 8, 200]])
    with torch.no_grad():
        real = quantized(ids).logits
        simulated = _fake_quant_model(final, "int4")(ids).logits
        float_logits = plain(ids).logits
    # The real quantized model computes what training simulated, not the float model.
    assert torch.allclose(real, simulated, atol=1e-5)
    assert not torch.allclose(real, float_logits, atol=1e-4)


def test_qat_refused_with_lora_and_other_methods(
    tiny_llama: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    data = write_chat_data(tmp_path / "d.jsonl", n=8)
    cfg = write_config(tmp_path, tiny_llama, data, train={"qat": {"weights": "int8"}})
    assert main(["train", str(cfg)]) == 2
    assert "train.qat" in capsys.readouterr().err
    text = cfg.read_text().replace("# tunesmith train cfg.yaml\n", "method: dpo\n")
    cfg.write_text(text)
    assert main(["validate", str(cfg)]) == 2
    assert "qat" in capsys.readouterr().err
