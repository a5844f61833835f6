"""Training throughput estimate: tokens/s for a model, method, accelerator type and count.

A roofline with a stated efficiency. One optimizer step of ``n`` tokens per device (micro batch
x sequence length) takes the longer of

    compute:  n x F / (peak x MFU)          F = training FLOPs per token (below)
    memory:   B_step / bandwidth            B_step = bytes the step must read and write

and the estimate is ``devices x n / step_time``, devices scaling linearly (data parallel; no
communication cost is modelled). ``MFU`` (model FLOPs utilisation: the share of the
accelerator's dense bf16 peak that useful model FLOPs reach) is an assumption, 0.40 unless
given: large-model training reports 0.35-0.55 on A100/H100 with fused attention and packed
rows, and the published figures in ``docs/plan.md`` imply 0.4-0.6 for LoRA at sequence 2048.

FLOPs per token (2 per multiply-add; ``N`` = the weights of every linear layer, output head
included; ``L`` layers, ``h`` hidden, ``s`` sequence length, causal so the average query
sees ``s / 2`` keys; Kaplan et al. 2020, Narayanan et al. 2021):

    forward linears      2 N
    forward attention    2 L s h          (Q K^T and P V, 2 x 2 x (s / 2) x h per layer)
    full fine-tuning     3 x (2 N + 2 L s h)             forward + input grads + weight grads
    LoRA / QLoRA         2 x 2 N + 3 x 2 L s h + 6 r (d_in + d_out) per adapted linear
                         (no weight gradients for the frozen base: 2/3 of a full step's
                         linear FLOPs; the adapters' own forward, input and weight grads)
    checkpointing        + one more forward (2 N + 2 L s h)

The head is counted on every token (tunesmith applies it only to trained positions, so the
real count is lower when prompts are long). QLoRA's dequantisation is not counted.

Bytes per step (the memory-bound floor, which matters for small batches): the weights are
read in the forward and again in the backward (three times with checkpointing); full
fine-tuning also writes the gradients and reads and writes AdamW's state (fp32 parameter,
gradient, m, v: 16 bytes read, 12 written per parameter).
"""

from __future__ import annotations

from dataclasses import dataclass

from tunesmith.plan.memory import NF4_BYTES, TrainSetup, lora_params
from tunesmith.plan.shapes import ModelShape, PlanError

DEFAULT_MFU = 0.40
ADAMW_STEP_BYTES = 28  # fp32 param + grad + m + v read (16), param + m + v written (12)


@dataclass(frozen=True)
class Accelerator:
    """Dense (no sparsity) peak TFLOP/s in bf16 tensor-core math and plain fp32, and memory
    bandwidth in GB/s, from the vendor's datasheet."""

    name: str
    bf16_tflops: float
    fp32_tflops: float
    bandwidth_gbs: float

    def peak(self, precision: str) -> float:
        """FLOP/s the matmuls can reach at ``precision`` (bf16 autocast or pure bf16: bf16)."""
        return 1e12 * (self.fp32_tflops if precision == "fp32" else self.bf16_tflops)


# NVIDIA datasheets (dense bf16 with fp32 accumulation; fp32 = non-tensor-core FP32).
ACCELERATORS: dict[str, Accelerator] = {
    "h100-sxm": Accelerator("H100 SXM 80GB", 989.4, 66.9, 3350),
    "h100-pcie": Accelerator("H100 PCIe 80GB", 756.5, 51.2, 2000),
    "h200": Accelerator("H200 SXM 141GB", 989.4, 66.9, 4800),
    "a100-80gb": Accelerator("A100 SXM 80GB", 312.0, 19.5, 2039),
    "a100-40gb": Accelerator("A100 SXM 40GB", 312.0, 19.5, 1555),
    "l40s": Accelerator("L40S 48GB", 362.1, 91.6, 864),
    "l4": Accelerator("L4 24GB", 121.0, 30.3, 300),
    "a6000": Accelerator("RTX A6000 48GB", 154.8, 38.7, 768),
    "rtx4090": Accelerator("GeForce RTX 4090 24GB", 165.2, 82.6, 1008),
    "rtx3090": Accelerator("GeForce RTX 3090 24GB", 71.0, 35.6, 936),
}


@dataclass(frozen=True)
class Throughput:
    """The estimate and the numbers behind it."""

    tokens_per_s: float
    flops_per_token: float
    step_seconds: float
    compute_seconds: float
    memory_seconds: float
    bound: str  # "compute" or "memory"
    mfu: float
    devices: int
    accelerator: str

    def as_dict(self) -> dict[str, float | int | str]:
        return {k: getattr(self, k) for k in self.__dataclass_fields__}


def attention_flops(shape: ModelShape, seq_len: int) -> float:
    """Forward attention FLOPs per token: ``2 L s h`` (causal: on average ``s / 2`` keys)."""
    return 2.0 * shape.layers * seq_len * shape.hidden


def linear_weights(shape: ModelShape) -> int:
    """``N``: weights of every linear layer, the output head included (tied or not, the head
    matmul runs)."""
    return shape.layers * shape.layer_linear_params + shape.vocab * shape.hidden


def train_flops_per_token(shape: ModelShape, s: TrainSetup) -> float:
    """Training FLOPs per token of one step (module docstring)."""
    fwd_linear = 2.0 * linear_weights(shape)
    fwd_attn = attention_flops(shape, s.seq_len)
    if s.method == "full":
        flops = 3 * (fwd_linear + fwd_attn)
    else:
        adapters = 6.0 * lora_params(shape, s.lora_rank, s.lora_targets)
        flops = 2 * fwd_linear + 3 * fwd_attn + adapters
    if s.checkpointing:
        flops += fwd_linear + fwd_attn
    return flops


def step_bytes(shape: ModelShape, s: TrainSetup) -> float:
    """Bytes one step must move through device memory at least (module docstring)."""
    params = shape.params
    per_weight = {"fp32": 4.0, "bf16": 2.0, "bf16-pure": 2.0}[s.precision]
    if s.method == "full":
        per_weight = 4.0 if s.precision != "bf16-pure" else 2.0
    weights = params * per_weight
    if s.method == "qlora":
        linear = shape.layers * shape.layer_linear_params
        weights = linear * NF4_BYTES + (params - linear) * 2.0
    reads = 3 if s.checkpointing else 2
    total = reads * weights
    if s.method == "full":
        total += params * ADAMW_STEP_BYTES
    return total


def estimate_throughput(
    shape: ModelShape,
    s: TrainSetup,
    accelerator: Accelerator,
    devices: int = 1,
    mfu: float = DEFAULT_MFU,
) -> Throughput:
    """Tokens/s of ``devices`` accelerators training ``shape`` with setup ``s`` at ``mfu``."""
    if not 0.0 < mfu <= 1.0:
        raise PlanError(f"--mfu must be in (0, 1], got {mfu}")
    if devices < 1:
        raise PlanError(f"--gpus must be at least 1, got {devices}")
    flops = train_flops_per_token(shape, s)
    compute = s.tokens * flops / (accelerator.peak(s.precision) * mfu)
    memory = step_bytes(shape, s) / (accelerator.bandwidth_gbs * 1e9)
    step = max(compute, memory)
    return Throughput(
        tokens_per_s=devices * s.tokens / step,
        flops_per_token=flops,
        step_seconds=step,
        compute_seconds=compute,
        memory_seconds=memory,
        bound="compute" if compute >= memory else "memory",
        mfu=mfu,
        devices=devices,
        accelerator=accelerator.name,
    )


def implied_mfu(
    shape: ModelShape, s: TrainSetup, accelerator: Accelerator, tokens_per_s: float, devices: int
) -> float:
    """The MFU a measured ``tokens_per_s`` on ``devices`` accelerators corresponds to."""
    per_device = tokens_per_s / devices
    return per_device * train_flops_per_token(shape, s) / accelerator.peak(s.precision)


def accelerator(name: str) -> Accelerator:
    """A known accelerator by key (``h100-sxm``, ``a100-80gb``, ...)."""
    try:
        return ACCELERATORS[name.lower()]
    except KeyError:
        raise PlanError(
            f"--gpu {name!r} unknown; choose from {', '.join(ACCELERATORS)} "
            "(or give --peak-tflops and --bandwidth-gbs for another device, a CPU included)"
        ) from None


def render_throughput(t: Throughput, s: TrainSetup) -> str:
    """Two lines of text for ``tunesmith plan``."""
    return (
        f"throughput: ~{t.tokens_per_s:,.0f} tokens/s on {t.devices} x {t.accelerator} "
        f"({s.method}, seq {s.seq_len} x micro-batch {s.micro_batch}, {s.precision}), "
        f"{t.bound}-bound\n"
        f"  assumes MFU {t.mfu:.2f} of the dense peak, {t.flops_per_token / 1e9:.2f} GFLOP per "
        f"trained token, linear scaling over devices (formulas: tunesmith.plan.throughput)"
    )


def _targets(spec: str) -> tuple[str, ...]:
    from tunesmith.plan.memory import LORA_PRESETS

    return LORA_PRESETS.get(spec) or tuple(t.strip() for t in spec.split(",") if t.strip())


def plan_throughput(
    model: str,
    *,
    gpu: str | None,
    gpus: int = 1,
    mfu: float = DEFAULT_MFU,
    peak_tflops: float | None = None,
    bandwidth_gbs: float | None = None,
    **setup: object,
) -> tuple[Throughput, TrainSetup]:
    """``tunesmith plan MODEL --gpu G``: the estimate for a model spec (named size, model dir,
    run dir or alias) and the ``TrainSetup`` fields in ``setup`` (``lora_targets`` as the CLI
    spells it). ``peak_tflops`` / ``bandwidth_gbs`` override the accelerator's datasheet values
    or, without ``gpu``, describe another device (a CPU's measured matmul peak)."""
    from tunesmith.plan.shapes import resolve_shape

    if gpu is None and peak_tflops is None:
        raise PlanError("the throughput estimate needs --gpu TYPE or --peak-tflops")
    base = accelerator(gpu) if gpu else Accelerator("custom device", 0.0, 0.0, float("inf"))
    peak = peak_tflops if peak_tflops is not None else None
    acc = Accelerator(
        base.name,
        peak if peak is not None else base.bf16_tflops,
        peak if peak is not None else base.fp32_tflops,
        bandwidth_gbs if bandwidth_gbs is not None else base.bandwidth_gbs,
    )
    if isinstance(setup.get("lora_targets"), str):
        setup["lora_targets"] = _targets(str(setup["lora_targets"]))
    s = TrainSetup(**setup)  # type: ignore[arg-type]
    return estimate_throughput(resolve_shape(model), s, acc, gpus, mfu), s
