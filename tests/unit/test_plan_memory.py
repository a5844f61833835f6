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
    loss_phase_bytes,
    optimizer_bytes_per_param,
    optimizer_impl,
    with_changes,
)
from tunesmith.plan.search import best_fit, relative_time
from tunesmith.plan.shapes import NAMED_SHAPES, ModelShape, resolve_shape

L7 = NAMED_SHAPES["7B"]
# SmolLM2-135M: h 576, i 1536, 9 heads, 3 kv heads, V 49152, tied head
SMOL = ModelShape("SmolLM2-135M", 30, 576, 1536, 9, 3, 49152, True)
CPU32 = {"precision": "fp32", "device_type": "cpu", "seq_len": 512, "micro_batch": 2}


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


def test_lora_activations_drop_frozen_norm_outputs_and_add_adapter_outputs() -> None:
    # fp32, no dropout: 8h + p (4h + 3i) + 4a = 4608 + 4 (2304 + 4608) + 36 = 32,292; lora_A
    # outputs p r n = 4 x 16 x 7 = 448; linear inputs read by the adapters, one per distinct
    # tensor: p (h + h + i) = 4 x 2688 = 10,752
    s = TrainSetup(method="lora", lora_dropout=0.0, **CPU32)  # type: ignore[arg-type]
    assert activation_bytes_per_token_layer(SMOL, s) == 32_292 + 448 + 10_752 == 43_492
    # full fine-tuning keeps the normalised outputs: 8h + p (8h + 4i) + 4a
    full = TrainSetup(method="full", **CPU32)  # type: ignore[arg-type]
    assert activation_bytes_per_token_layer(SMOL, full) == 4608 + 4 * (4608 + 6144) + 36
    # q_proj, v_proj only: one shared q/k/v input p h, no MLP inputs; 2 lora_A outputs
    att = TrainSetup(method="lora", lora_dropout=0.0, lora_targets=("q_proj", "v_proj"), **CPU32)  # type: ignore[arg-type]
    assert activation_bytes_per_token_layer(SMOL, att) == 32_292 + 128 + 2304


def test_lora_dropout_saves_a_dropped_copy_and_a_mask_per_adapted_linear() -> None:
    # inputs of the adapted linears: 6 x 576 (q, k, v, o, gate, up) + 1536 (down) = 4992
    # CPU: dropped copy 4 + float noise 4 per element; CUDA: dropped copy 4 + bool mask 1
    cpu = TrainSetup(method="lora", lora_dropout=0.05, **CPU32)  # type: ignore[arg-type]
    assert activation_bytes_per_token_layer(SMOL, cpu) == 32_292 + 448 + 4992 * 8 == 72_676
    cuda = with_changes(cpu, device_type="cuda")
    assert activation_bytes_per_token_layer(SMOL, cuda) == 32_292 + 448 + 4992 * 5
    # bf16 (autocast): each adapter saves its own bf16 copy of its input even without dropout
    bf16 = TrainSetup(method="lora", lora_dropout=0.0, precision="bf16")
    frozen = 8 * 4096 + 2 * (4 * 4096 + 3 * 11008) + 4 * 32
    inputs = 6 * 4096 + 11008
    assert activation_bytes_per_token_layer(L7, bf16) == frozen + 2 * 16 * 7 + 2 * inputs
    bf16_drop = with_changes(bf16, lora_dropout=0.1)
    assert activation_bytes_per_token_layer(L7, bf16_drop) == frozen + 224 + 3 * inputs
    # checkpointed: only the recomputed layer holds them
    ck = with_changes(cpu, checkpointing=True)
    assert (
        estimate(SMOL, ck).items["activations"]
        == estimate(SMOL, with_changes(ck, lora_dropout=0.0)).items["activations"]
    )


def test_loss_chunk_frees_logit_tensors_before_the_head_gradient() -> None:
    # one chunk (2 x 511 trained rows): logits 1024 x 49152 x 12 = 603,979,776; the head's
    # gradient 49152 x 576 x 4 = 113,246,208 comes with the head output's gradient
    # (1024 x 49152 x 4 = 201,326,592) only, so the logits are the larger
    full = TrainSetup(method="full", **CPU32)  # type: ignore[arg-type]
    assert loss_phase_bytes(SMOL, full) == 603_979_776
    # two chunks (2 x 1023 rows): the first chunk's head gradient stays for the second
    two = with_changes(full, seq_len=1024)
    assert loss_phase_bytes(SMOL, two) == 603_979_776 + 113_246_208


def test_full_finetune_checkpointed_peaks_at_end_of_backward_with_tied_embedding() -> None:
    # P = 30 x 3,540,096 + 49152 x 576 + 576 = 134,515,008; fp32: S = 8P, G = 4P; the tied
    # embedding's dense gradient and its sum with the head's: 2 x 113,246,208
    p = 30 * 3_540_096 + 49152 * 576 + 576
    assert SMOL.params == p == 134_515_008
    full = TrainSetup(method="full", checkpointing=True, **CPU32)  # type: ignore[arg-type]
    assert optimizer_impl(full) == "fused"
    assert estimate(SMOL, full).step_increment == 8 * p + 4 * p + 2 * 113_246_208
    # foreach AdamW's sqrt(v) temporary (4P) is larger than the tied gradients
    foreach = with_changes(full, optimizer_impl="foreach")
    assert estimate(SMOL, foreach).step_increment == 8 * p + 4 * p + 4 * p
    # FSDP shards are DTensors: auto takes foreach
    assert optimizer_impl(with_changes(full, devices=2)) == "foreach"


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


def _tiny_llama(root: Path, kv_heads: int = 4) -> Path:
    """Big enough that tensors (~300 MB) dominate RSS noise: h 256, 4 layers, V 8192."""
    out = root / f"plan-llama{'' if kv_heads == 4 else f'-kv{kv_heads}'}"
    cfg = LlamaConfig(
        vocab_size=8192,
        hidden_size=256,
        intermediate_size=688,
        num_hidden_layers=4,
        num_attention_heads=8,
        num_key_value_heads=kv_heads,
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
    from tunesmith.models.load import load_causal_lm

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


@pytest.mark.parametrize("dropout", [0.0, 0.05])
def test_lora_saved_tensors_match_the_formula(tmp_path: Path, dropout: float) -> None:
    """The tensors a LoRA decoder's forward saves for backward (unique storages, weights
    excluded), against ``A`` x layers x tokens. Full-width k/v (kv heads = heads), so SDPA's
    inputs are what the formula counts; the rest is RMSNorm's rsqrt and RoPE's cos/sin, and
    with dropout the first layer's q/k/v masks, which are not kept because that layer's input
    needs no gradient."""
    from tunesmith.config import LoraSection
    from tunesmith.models.adapters import attach_lora
    from tunesmith.models.load import load_causal_lm

    path = _tiny_llama(tmp_path, kv_heads=8)
    model = load_causal_lm(path, dtype=torch.float32, device=torch.device("cpu"))
    model = attach_lora(model, LoraSection(r=16, dropout=dropout))
    model.train()
    decoder = model.get_base_model().get_decoder()
    weights = {p.untyped_storage().data_ptr() for p in model.parameters()}
    saved: dict[int, int] = {}

    def pack(t: torch.Tensor) -> torch.Tensor:
        key = t.untyped_storage().data_ptr()
        if key not in weights:
            saved[key] = t.untyped_storage().nbytes()
        return t

    ids = torch.randint(0, 8192, (2, 128))
    with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
        decoder(input_ids=ids, attention_mask=torch.ones_like(ids))
    setup = TrainSetup(method="lora", lora_dropout=dropout, **CPU32)  # type: ignore[arg-type]
    predicted = activation_bytes_per_token_layer(resolve_shape(str(path)), setup) * 4 * 256
    if dropout:
        predicted -= 3 * 4 * 256 * 256  # layer 0's q/k/v float masks: 4 bytes x h x tokens
    assert sum(saved.values()) == pytest.approx(predicted, rel=0.01)
