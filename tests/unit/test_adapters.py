"""Adapter construction: targets, ranks, parameter counts, and the loss of prompt-learning
models (virtual tokens in front of the sequence) against peft's own loss."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import torch
from transformers import AutoModelForCausalLM

from tunesmith.config import ConfigError, SFTConfig, load_config
from tunesmith.engine.forward import forward_loss
from tunesmith.losses.sft import IGNORE_INDEX
from tunesmith.models.adapters import (
    AdapterError,
    attach_adapter,
    check_rank,
    lora_targets,
    match_targets,
    parameter_counts,
)
from tunesmith.models.quantization import QuantizationError, base_weight_bytes, quantization_config


def _cfg(**sections: Any) -> SFTConfig:
    base: dict[str, Any] = {"data": {"train": "x.jsonl"}, "lora": {"dropout": 0.0}}
    for name, values in sections.items():
        base.setdefault(name, {}).update(values)
    cfg = load_config(None, base=base)
    assert isinstance(cfg, SFTConfig)
    return cfg


def _model(path: Path) -> Any:
    torch.manual_seed(0)
    return AutoModelForCausalLM.from_pretrained(str(path))


def test_lora_targets_presets_names_and_regexes() -> None:
    assert lora_targets("attention") == ["q_proj", "v_proj"]
    assert lora_targets("all-linear") == "all-linear"
    assert lora_targets("q_proj") == ["q_proj"]  # a plain name stays a name
    assert lora_targets(r".*\.(q|v)_proj") == r".*\.(q|v)_proj"  # else a regex, as in peft
    assert lora_targets(["q_proj", "o_proj"]) == ["q_proj", "o_proj"]


def test_match_targets_like_peft(tiny_llama: Path) -> None:
    model = _model(tiny_llama)
    found = match_targets(model, r"model\.layers\.0\.self_attn\.(q|v)_proj", "f")
    assert sorted(found) == ["model.layers.0.self_attn.q_proj", "model.layers.0.self_attn.v_proj"]
    assert len(match_targets(model, ["down_proj"], "f")) == 2
    assert len(match_targets(model, "all-linear", "f")) == 2 * 7  # lm_head left out
    with pytest.raises(AdapterError, match="gate_proj, k_proj"):
        match_targets(model, ["nope"], "lora.target_modules")
    with pytest.raises(AdapterError, match=r"lora\.r <= 16"):
        check_rank(match_targets(model, "all-linear", "f"), 17)


def test_lora_parameter_count_is_r_times_d_in_plus_d_out(tiny_llama: Path) -> None:
    model = _model(tiny_llama)
    _, total_before = parameter_counts(model)
    targets = match_targets(model, "all-linear", "f")
    r = 4
    expected = sum(r * (m.in_features + m.out_features) for m in targets.values())
    peft_model = attach_adapter(model, _cfg(lora={"r": r}), str(tiny_llama))
    trainable, total = parameter_counts(peft_model)
    assert trainable == expected
    assert total == total_before + expected


def test_dora_adds_a_magnitude_per_output(tiny_llama: Path) -> None:
    model = _model(tiny_llama)
    targets = match_targets(model, ["q_proj", "v_proj"], "f")
    cfg = _cfg(adapter={"type": "dora"}, lora={"r": 2, "target_modules": "attention"})
    trainable, _ = parameter_counts(attach_adapter(model, cfg, str(tiny_llama)))
    lora = sum(2 * (m.in_features + m.out_features) for m in targets.values())
    assert trainable == lora + sum(m.out_features for m in targets.values())


def _batch() -> dict[str, torch.Tensor]:
    torch.manual_seed(1)
    ids = torch.randint(3, 60, (2, 9))
    mask = torch.ones_like(ids)
    mask[1, 6:] = 0  # right padding
    labels = ids.clone()
    labels[:, :3] = IGNORE_INDEX  # a prompt that carries no loss
    labels[mask == 0] = IGNORE_INDEX
    return {"input_ids": ids, "attention_mask": mask, "labels": labels}


@pytest.mark.parametrize("kind", ["prompt", "prefix"])
def test_prompt_learning_loss_equals_peft_loss(tiny_llama: Path, kind: str) -> None:
    """forward_loss (sum, count) over the trained positions equals peft's own mean loss,
    which pads the labels for the virtual tokens itself."""
    cfg = _cfg(adapter={"type": kind}, **{kind: {"num_virtual_tokens": 5}})
    model = attach_adapter(_model(tiny_llama), cfg, str(tiny_llama))
    batch = _batch()
    total, count = forward_loss(model, batch)
    reference = model(**batch).loss
    assert int(count) == int((batch["labels"][:, 1:] != IGNORE_INDEX).sum())
    torch.testing.assert_close(total / count, reference, rtol=1e-5, atol=1e-6)
    total.backward()
    grads = [p.grad for p in model.parameters() if p.requires_grad]
    assert grads and all(g is not None and g.abs().sum() > 0 for g in grads)


def test_ia3_feedforward_must_be_in_targets(tiny_llama: Path) -> None:
    cfg = _cfg(
        adapter={"type": "ia3"},
        ia3={"target_modules": ["k_proj", "v_proj"], "feedforward_modules": ["down_proj"]},
    )
    with pytest.raises(AdapterError, match=r"adapter\.type=ia3"):
        attach_adapter(_model(tiny_llama), cfg, str(tiny_llama))


def test_config_combinations() -> None:
    with pytest.raises(ConfigError, match=r"data\.packing=false"):
        _cfg(adapter={"type": "prompt"}, data={"train": "x.jsonl", "packing": True})
    with pytest.raises(ConfigError, match=r"use adapter\.type lora, rslora or dora"):
        _cfg(adapter={"type": "full"}, model={"quantization": "nf4"})
    with pytest.raises(ConfigError, match="valid keys here"):
        _cfg(prompt={"virtual_tokens": 3})
    assert _cfg(adapter={"type": "rslora"}).adapter.type == "rslora"


def test_quantization_without_backend_lists_choices(monkeypatch: pytest.MonkeyPatch) -> None:
    import tunesmith.models.quantization as q

    monkeypatch.setattr(q, "bnb_available", lambda: False)
    with pytest.raises(QuantizationError, match=r"tunesmith\[quant\].*none, nf4, int8"):
        quantization_config("nf4", torch.float32)
    assert quantization_config("none", torch.float32) is None


def test_base_weight_bytes_matches_memory_footprint(tiny_llama: Path) -> None:
    model = _model(tiny_llama)
    before = model.get_memory_footprint()
    assert base_weight_bytes(model) == before
    wrapped = attach_adapter(model, _cfg(), str(tiny_llama))
    assert base_weight_bytes(wrapped) == before  # the adapters are not base weights
