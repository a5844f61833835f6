"""The GPU path checked on CPU: fp32 master weights under ``model.dtype: auto`` on CUDA, the
pure-bf16 option, fp16 refused, NF4's CUDA settings, and packing flattened for flash attention."""

from __future__ import annotations

from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest
import torch
from transformers import AutoModelForCausalLM

import tunesmith.engine.trainable as trainable
from tunesmith.config.load import ConfigError, load_config
from tunesmith.data.packing import (
    block_causal_mask,
    collate_packed,
    flatten_rows,
    seq_ids_from_positions,
)
from tunesmith.data.templates import Encoded
from tunesmith.engine.forward import forward_logits, forward_loss, model_inputs, restore_rows
from tunesmith.engine.optim import build_optimizer
from tunesmith.engine.precision import weight_dtype
from tunesmith.models.load import load_causal_lm

CUDA = torch.device("cuda")


def _cfg(model_dir: Path, **model: Any) -> Any:
    base = {
        "model": {"name_or_path": str(model_dir), **model},
        "data": {"train": "unused.jsonl"},
        "train": {"seed": 0},
    }
    return base


def test_auto_keeps_every_trained_weight_fp32_on_cuda() -> None:
    assert weight_dtype("auto", CUDA, base_trains=True) == torch.float32
    assert weight_dtype("auto", torch.device("cpu"), base_trains=True) == torch.float32
    # Only adapters train: the frozen base may be bf16 on CUDA (peft keeps adapters fp32).
    assert weight_dtype("auto", CUDA, base_trains=False) == torch.bfloat16
    assert weight_dtype("auto", torch.device("cpu"), base_trains=False) == torch.float32
    assert weight_dtype("bfloat16", CUDA, base_trains=True) == torch.bfloat16


def _build_on_fake_cuda(monkeypatch: pytest.MonkeyPatch, cfg: Any, model_dir: Path) -> Any:
    """``build_trainable_model`` told its device is CUDA; the weights land on CPU in the dtype
    it chose for CUDA."""
    seen: dict[str, Any] = {}

    def load_on_cpu(path: Any, **kwargs: Any) -> Any:
        seen.update(kwargs)
        return load_causal_lm(path, **{**kwargs, "device": torch.device("cpu")})

    monkeypatch.setattr(trainable, "load_causal_lm", load_on_cpu)
    model = trainable.build_trainable_model(cfg, model_dir, CUDA)
    assert seen["device"] == CUDA
    return model


def _one_adamw_step(model: Any, cfg: Any) -> torch.optim.AdamW:
    opt = build_optimizer(model, cfg.optim)
    ids = torch.tensor([[1, 5, 6, 7, 8, 9]])
    model(input_ids=ids, labels=ids).loss.backward()
    opt.step()
    return opt


@pytest.mark.parametrize("top_layers", [None, 1])
def test_full_fine_tuning_on_cuda_trains_fp32_weights_and_state(
    monkeypatch: pytest.MonkeyPatch, tiny_llama: Path, top_layers: int | None
) -> None:
    data = _cfg(tiny_llama)
    data["adapter"] = {"type": "full"}
    data["train"]["trainable_top_layers"] = top_layers
    cfg = load_config(None, base=data)
    model = _build_on_fake_cuda(monkeypatch, cfg, tiny_llama)
    trained = [p for p in model.parameters() if p.requires_grad]
    assert trained and all(p.dtype == torch.float32 for p in trained)
    opt = _one_adamw_step(model, cfg)
    states = [s for s in opt.state.values() if s]
    assert len(states) == len(trained)
    for state in states:
        assert state["exp_avg"].dtype == torch.float32
        assert state["exp_avg_sq"].dtype == torch.float32


def test_lora_on_cuda_keeps_a_bf16_frozen_base_and_fp32_adapters(
    monkeypatch: pytest.MonkeyPatch, tiny_llama: Path
) -> None:
    cfg = load_config(None, base=_cfg(tiny_llama))
    assert cfg.adapter.type == "lora"
    model = _build_on_fake_cuda(monkeypatch, cfg, tiny_llama)
    frozen = {p.dtype for p in model.parameters() if not p.requires_grad}
    trained = {p.dtype for p in model.parameters() if p.requires_grad}
    assert frozen == {torch.bfloat16}
    assert trained == {torch.float32}


def test_explicit_bfloat16_is_pure_bf16_training(
    monkeypatch: pytest.MonkeyPatch, tiny_llama: Path
) -> None:
    data = _cfg(tiny_llama, dtype="bfloat16")
    data["adapter"] = {"type": "full"}
    cfg = load_config(None, base=data)
    model = _build_on_fake_cuda(monkeypatch, cfg, tiny_llama)
    assert {p.dtype for p in model.parameters()} == {torch.bfloat16}
    opt = _one_adamw_step(model, cfg)
    assert {s["exp_avg"].dtype for s in opt.state.values() if s} == {torch.bfloat16}


def test_float16_training_is_refused_at_config_load(tiny_llama: Path) -> None:
    with pytest.raises(ConfigError, match=r"model\.dtype=float16 is not supported for training"):
        load_config(None, base=_cfg(tiny_llama, dtype="float16"))


# ----------------------------------------------------------------------------- NF4 on CUDA


def test_nf4_on_cuda_computes_in_bf16_and_places_by_device_map(
    monkeypatch: pytest.MonkeyPatch, tiny_llama: Path
) -> None:
    quant = pytest.importorskip("tunesmith.models.quantization")
    if not quant.bnb_available():
        pytest.skip("bitsandbytes is not installed")
    import tunesmith.models.load as load

    monkeypatch.setattr(torch.cuda, "is_bf16_supported", lambda *a, **k: True)
    qc = quant.quantization_config("nf4", torch.float32, torch.device("cuda:1"))
    assert qc.bnb_4bit_compute_dtype == torch.bfloat16
    assert qc.bnb_4bit_quant_type == "nf4" and qc.load_in_4bit
    cpu = quant.quantization_config("nf4", torch.float32, torch.device("cpu"))
    assert cpu.bnb_4bit_compute_dtype == torch.float32
    assert quant.quantized_device_map(torch.device("cuda:1")) == {"": 1}
    assert quant.quantized_device_map(torch.device("cpu")) == {"": "cpu"}

    seen: dict[str, Any] = {}

    def fake_from_pretrained(path: str, **kwargs: Any) -> str:
        seen.update(kwargs)
        return "model"

    monkeypatch.setattr(load.AutoModelForCausalLM, "from_pretrained", fake_from_pretrained)
    out = load.load_causal_lm(
        tiny_llama, dtype=torch.bfloat16, device=torch.device("cuda:1"), quantization="nf4"
    )
    assert out == "model"
    assert seen["device_map"] == {"": 1}
    assert seen["quantization_config"].bnb_4bit_compute_dtype == torch.bfloat16


# ----------------------------------------------------------------------------- flash packing


def _rows() -> list[list[Encoded]]:
    def enc(ids: list[int]) -> Encoded:
        return Encoded(input_ids=ids, labels=list(ids), n_trained=len(ids) - 1, truncated=False)

    return [
        [enc([1, 5, 9, 13]), enc([1, 7, 8])],
        [enc([1, 20, 21, 22, 23, 24])],
        [enc([1, 30]), enc([1, 31, 32]), enc([1, 33])],
    ]


def test_flattened_layout_and_restarting_positions() -> None:
    packed = collate_packed(_rows(), pad_id=0, width=7)  # unbucketed: the longest row
    b, t = packed["input_ids"].shape
    assert (b, t) == (3, 7)
    flat = flatten_rows(packed["input_ids"], packed["position_ids"])
    assert flat["input_ids"].shape == (1, b * t)
    assert flat["input_ids"][0].tolist() == packed["input_ids"].flatten().tolist()
    assert flat["position_ids"][0].tolist() == [
        *[0, 1, 2, 3, 0, 1, 2],
        *[0, 1, 2, 3, 4, 5, 0],  # the padding token is an example of its own
        *[0, 1, 0, 1, 2, 0, 1],
    ]
    seq = seq_ids_from_positions(flat["position_ids"])[0].tolist()
    assert seq == [0, 0, 0, 0, 1, 1, 1, 2, 2, 2, 2, 2, 2, 3, 4, 4, 5, 5, 5, 6, 6]
    flash = SimpleNamespace(config=SimpleNamespace(_attn_implementation="flash_attention_2"))
    kwargs = model_inputs(flash, packed)
    assert set(kwargs) == {"input_ids", "position_ids"}  # no mask: varlen from positions
    assert kwargs["position_ids"].shape == (1, b * t)
    logits = torch.randn(1, b * t, 11)
    assert torch.equal(restore_rows(logits, packed), logits.view(b, t, 11))


class VarlenEmulator(torch.nn.Module):
    """What flash attention's varlen path computes, on CPU: it takes ONE row and no mask, and
    separates the examples where the position ids restart (as transformers does)."""

    def __init__(self, model: Any) -> None:
        super().__init__()
        self.model = model
        self.config = SimpleNamespace(_attn_implementation="flash_attention_2", model_type="x")

    def forward(self, input_ids: torch.Tensor, position_ids: torch.Tensor, **kw: Any) -> Any:
        assert input_ids.size(0) == 1 and "attention_mask" not in kw
        mask = block_causal_mask(seq_ids_from_positions(position_ids))
        return self.model(input_ids=input_ids, position_ids=position_ids, attention_mask=mask)


def test_flattened_flash_batch_matches_the_4d_mask_path(tiny_llama: Path) -> None:
    def load(attn: str) -> Any:
        return AutoModelForCausalLM.from_pretrained(
            str(tiny_llama), dtype=torch.float32, attn_implementation=attn
        ).eval()

    packed = collate_packed(_rows(), pad_id=0)
    with torch.no_grad():
        for ref_model in (load("eager"), load("sdpa")):  # the 4-D-mask path, both kernels
            ref_logits = forward_logits(ref_model, packed)
            alone = ref_model(input_ids=torch.tensor([[1, 5, 9, 13]])).logits
            torch.testing.assert_close(ref_logits[:1, :4], alone, atol=1e-5, rtol=1e-5)
        ref_loss, ref_n = forward_loss(ref_model, packed)
        flash = VarlenEmulator(load("sdpa"))
        logits = forward_logits(flash, packed)
        loss, n = forward_loss(flash, packed)
    real = packed["seq_ids"] >= 0
    assert logits.shape == ref_logits.shape
    torch.testing.assert_close(logits[real], ref_logits[real], atol=1e-5, rtol=1e-5)
    assert int(n) == int(ref_n) > 0
    torch.testing.assert_close(loss, ref_loss, atol=1e-5, rtol=1e-5)
