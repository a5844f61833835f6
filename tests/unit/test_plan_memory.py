"""The memory planner against hand-worked figures, published figures and a measured step."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from transformers import AutoModelForCausalLM, LlamaConfig

from tests.helpers.measure_step import _page_in, _status_bytes, measure
from tunesmith.plan.memory import (
    NF4_BYTES,
    TrainSetup,
    activation_bytes_per_token_layer,
    estimate,
    lora_params,
    optimizer_bytes_per_param,
)
from tunesmith.plan.search import best_fit, relative_time
from tunesmith.plan.shapes import NAMED_SHAPES, resolve_shape

L7 = NAMED_SHAPES["7B"]


def test_llama2_7b_parameter_count() -> None:
    # per layer: q,k,v,o 4 x 4096^2 = 67,108,864; MLP 3 x 4096 x 11008 = 135,266,304; norms 8192
    per_layer = 67_108_864 + 135_266_304 + 8192
    assert L7.layer_params == per_layer
    # 32 layers + embedding and untied head 2 x 32000 x 4096 + final norm 4096
    assert L7.params == 32 * per_layer + 262_144_000 + 4096 == 6_738_415_616


def test_lora_parameter_count_matches_peft_figure() -> None:
    # r=16 on all 7 linears: r (in + out) each; attention 4 x 16 x 8192 = 524,288,
    # MLP 3 x 16 x (4096 + 11008) = 724,992 -> 1,249,280 per layer x 32 = 39,976,960
    targets = ("q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj")
    assert lora_params(L7, 16, targets) == 39_976_960


def test_bytes_per_parameter_table() -> None:
    assert optimizer_bytes_per_param("adamw", "bf16") == 12  # master 4 + m 4 + v 4
    assert optimizer_bytes_per_param("adamw", "fp32") == 8
    assert optimizer_bytes_per_param("adamw", "bf16-pure") == 4
    assert optimizer_bytes_per_param("sgd", "fp32") == 4
    assert optimizer_bytes_per_param("adamw8bit", "fp32") == pytest.approx(2.0039, abs=1e-4)
    assert pytest.approx(0.5158, abs=1e-4) == NF4_BYTES  # (4 + 0.125 + 0.00195) / 8


def test_activation_formula_7b_bf16() -> None:
    # 8h + p (8h + 4i) + 4a = 32768 + 2 (32768 + 44032) + 128
    s = TrainSetup(method="full", precision="bf16")
    assert activation_bytes_per_token_layer(L7, s) == 186_496
    eager = TrainSetup(method="full", precision="bf16", attention="eager", seq_len=512)
    # + a s (4 + p) = 32 x 512 x 6
    assert activation_bytes_per_token_layer(L7, eager) == 186_496 + 98_304


def test_7b_full_finetune_is_16_bytes_per_param_and_needs_more_than_80gb() -> None:
    e = estimate(L7, TrainSetup(method="full", precision="bf16", seq_len=512, micro_batch=1))
    states = e.items["weights"] + e.items["gradients"] + e.items["optimizer"]
    assert states == pytest.approx(16 * L7.params, rel=1e-6)
    assert states > 107e9  # the published "~112 GB" is 16 x 7e9
    assert not e.fits(80)


def test_fsdp_divides_weights_grads_and_optimizer() -> None:
    one = estimate(L7, TrainSetup(method="full", seq_len=512))
    eight = estimate(L7, TrainSetup(method="full", seq_len=512, devices=8))
    assert eight.items["optimizer"] == one.items["optimizer"] // 8
    assert eight.items["gradients"] == one.items["gradients"] // 8
    gathered = 2 * L7.layer_params * 2  # two bf16 layers in full
    assert eight.items["weights"] == one.items["weights"] // 8 + gathered
    assert eight.items["activations"] == one.items["activations"]
    assert eight.fits(80) and not one.fits(80)


def test_qlora_fits_65b_on_a_48gb_card() -> None:
    """Dettmers et al. 2023: QLoRA fine-tunes a 65B model on one 48 GB GPU."""
    setup = TrainSetup(method="qlora", checkpointing=True, seq_len=512, micro_batch=1)
    e = estimate(NAMED_SHAPES["65B"], setup)
    assert e.fits(48)
    assert not estimate(NAMED_SHAPES["65B"], TrainSetup(method="lora", seq_len=512)).fits(48)


def test_lora_7b_bf16_fits_24gb_with_checkpointing() -> None:
    setup = TrainSetup(method="lora", checkpointing=True, seq_len=512, micro_batch=1)
    e = estimate(L7, setup)
    assert e.fits(24)
    assert not estimate(L7, TrainSetup(method="full", checkpointing=True, seq_len=512)).fits(24)


def test_checkpointing_cuts_activations_by_more_than_half() -> None:
    off = estimate(L7, TrainSetup(method="lora", seq_len=2048, micro_batch=4))
    on = estimate(L7, TrainSetup(method="lora", seq_len=2048, micro_batch=4, checkpointing=True))
    assert on.items["activations"] < off.items["activations"] / 10
    assert relative_time(on.setup) > relative_time(off.setup)


def test_best_fit_prefers_requested_method_with_8bit_adam_then_lighter_method() -> None:
    base = TrainSetup(method="full", seq_len=512, micro_batch=4)
    best = best_fit(L7, base, 80, grad_accum=2)
    assert best is not None
    s = best.estimate.setup
    assert (s.method, s.optimizer) == ("full", "adamw8bit")  # AdamW-32 does not fit 80 GiB
    assert best.estimate.fits(80)
    assert best.grad_accum * s.micro_batch == 8  # the effective batch is kept
    small = best_fit(L7, base, 24)
    assert small is not None and small.estimate.setup.method == "lora"
    assert best_fit(NAMED_SHAPES["70B"], base, 8) is None


# ----------------------------------------------------------------------------- measured


def _tiny_llama(root: Path) -> Path:
    """Big enough that tensors (~300 MB) dominate RSS noise: h 256, 4 layers, V 8192."""
    out = root / "plan-llama"
    cfg = LlamaConfig(
        vocab_size=8192,
        hidden_size=256,
        intermediate_size=688,
        num_hidden_layers=4,
        num_attention_heads=8,
        num_key_value_heads=4,
        max_position_embeddings=1024,
        tie_word_embeddings=True,
    )
    torch.manual_seed(0)
    AutoModelForCausalLM.from_config(cfg).save_pretrained(out)
    return out


@pytest.mark.skipif(not Path("/proc/self/status").exists(), reason="needs Linux /proc")
def test_measurement_baseline_holds_the_weights(tmp_path: Path) -> None:
    """Loaded on CPU, a safetensors file of the requested dtype is memory-mapped, not copied:
    its weights join RSS only when read. The measurement reads them before its baseline, so the
    first step does not charge them (538 MB for SmolLM2-135M in fp32) to the step."""
    from tunesmith.models import load_causal_lm

    model = load_causal_lm(_tiny_llama(tmp_path), dtype=torch.float32, device=torch.device("cpu"))
    weights = sum(t.numel() * t.element_size() for t in model.parameters())  # ~20 MB
    _page_in(model)
    before = _status_bytes("VmRSS")
    with torch.no_grad():
        for p in model.parameters():
            p.sum()
    assert _status_bytes("VmRSS") - before < 0.1 * weights


@pytest.mark.skipif(not Path("/proc/self/clear_refs").exists(), reason="needs Linux /proc")
@pytest.mark.parametrize(("method", "checkpointing"), [("full", False), ("full", True)])
def test_estimate_matches_measured_step_on_tiny_llama(
    tmp_path: Path, method: str, checkpointing: bool
) -> None:
    model = _tiny_llama(tmp_path)
    setup = TrainSetup(
        method=method,  # type: ignore[arg-type]
        checkpointing=checkpointing,
        seq_len=512,
        micro_batch=4,
        precision="fp32",
        device_type="cpu",
    )
    predicted = estimate(resolve_shape(str(model)), setup).step_increment
    measured = measure(model, method, 512, 4, checkpointing)
    print(
        f"tiny llama {method} ckpt={checkpointing}: predicted {predicted:,} measured {measured:,}"
    )
    assert predicted == pytest.approx(measured, rel=0.25), (predicted, measured)
