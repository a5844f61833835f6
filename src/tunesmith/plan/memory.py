"""Training-memory estimate for a Llama-family decoder, component by component.

Bytes per parameter (``P`` = parameters, ``T`` = trainable parameters):

==============  =========  ========  ===============================================
precision       weights    grads     AdamW state (per trainable parameter)
==============  =========  ========  ===============================================
fp32            4          4         m + v in fp32: 8
bf16 (mixed)    2          2         fp32 master copy 4 + m 4 + v 4 = 12
bf16-pure       2          2         m + v in bf16: 4 (torch AdamW keeps the state in
                                     the parameter dtype; tunesmith's CUDA default:
                                     weights loaded in bf16, bf16 autocast)
==============  =========  ========  ===============================================

so full fine-tuning with AdamW in mixed precision is the classic 2 + 2 + 12 = 16 bytes/param
(Rajbhandari et al. 2020, ZeRO, sec. 3.1), 112 GB for 7B before activations. 8-bit AdamW
(Dettmers et al. 2022, blockwise quantisation, blocks of 2048) keeps m and v in 1 byte each
plus one fp32 absmax per block: 2 + 8/2048 bytes. SGD keeps one momentum buffer. During
``step()`` foreach AdamW allocates one temporary of the state's size (``_foreach_sqrt`` of v),
for-loop AdamW one of the largest trainable tensor's size, fused AdamW none. tunesmith's
``optim.implementation: auto`` takes the fused kernel unless the parameters are FSDP2 shards
(DTensors, ``devices > 1``), which take foreach (``tunesmith.engine.optim.kernel_options``).

LoRA (Hu et al. 2021) freezes the base (no grads, no optimizer state) and adds, for every
targeted linear ``in x out``, ``r (in + out)`` parameters; peft keeps them in fp32 whatever the
base dtype, so each costs 4 (weight) + 4 (grad) + optimizer state. QLoRA (Dettmers et al. 2023)
stores the decoder's linear weights in NF4 with double-quantised block scales:
4 + 8/64 + 32/(64 x 256) = 4.127 bits = 0.516 bytes per weight; embeddings, head and norms stay
in 16-bit.

Activations saved for the backward pass, per token per decoder layer (``h`` hidden, ``i``
intermediate, ``a`` heads, ``p`` bytes per activation: 2 under bf16, 4 in fp32), for the HF
Llama block with SDPA (flash / memory-efficient) attention and no dropout, counted tensor by
tensor the way Korthikanti et al. 2022 ("Reducing Activation Recomputation in Large
Transformer Models", sec. 4.1, 34 sbh + 5 a s^2 b for a GPT block) count theirs:

    2 RMSNorms: fp32 input 4h + normalised output p h, each           8h + 2p h
    linear inputs: q/k/v input p h, MLP input p h                          2p h
    attention: q, k, v after RoPE (k, v repeated to h by repeat_kv
        when a padding mask is given: counted as h each), output       4p h
    SwiGLU: gate out, silu out, up out, down input                         4p i
    SDPA log-sum-exp, fp32 per head                                       4a
    ----------------------------------------------------------------------------
    A = 8h + p (8h + 4i) + 4a      (bf16 7B: 186,496 bytes per token per layer)

LoRA and QLoRA freeze the norms and the base linears, so neither the normalised outputs (the
RMSNorm weight needs them for its gradient only) nor the base linears' inputs are saved for
the base; the adapters save what their own gradients need. Per token per layer:

    A_frozen = 8h + p (4h + 3i) + 4a          (norm inputs, attention, gate/silu/up outputs)
    A_lora   = p r n                           (each adapted linear's lora_A output, n of them)
             + p (h [q,k or v adapted] + h [gate or up adapted] + i [down adapted])
                                               (fp32, no dropout: lora_A reads the base's
                                               input tensor; o_proj's input is the attention
                                               output, already counted)
       or    + sum over adapted linears of in (p + m)
                                               (dropout > 0, or 16-bit activations: every
                                               adapter saves its own copy of its input)

With ``lora.dropout`` > 0 (tunesmith's default 0.05) peft applies a separate ``nn.Dropout`` to
each adapted linear's input before lora_A: lora_A saves the dropped copy (``p in``) and dropout
saves its mask, ``m`` bytes per element: on CUDA the fused kernel's bool mask (m = 1); on CPU
``input * noise`` keeps the float noise in the input's dtype (m = 4, the adapters' fp32).
Under 16-bit activations peft casts each adapter's input to the adapter's fp32 and autocast
casts it back for lora_A's matmul, so every adapter saves its own ``p in`` copy even without
dropout (m = 0 then; read from peft's and torch's source, not measured: no GPU here).
SmolLM2-135M, fp32, CPU, all linears (saved_tensors_hooks, unique storages per token per
layer): 40,437 bytes at dropout 0, 69,390 at 0.05. The formula's difference is 4 x (6 x 576 +
1536) x 2 for the dropped copies and masks minus 4 x (2 x 576 + 1536) for the inputs no longer
saved = 29,184; measured 28,953: the rest is the first layer, whose input needs no gradient, so
its q/k/v masks are not kept.

Eager attention also keeps the softmax probabilities, fp32 then cast: + a s (4 + p) per token
(the 5 a s^2 b term of Korthikanti et al.). With gradient checkpointing (one checkpoint per
decoder layer, as ``gradient_checkpointing_enable`` does) only each layer's input is kept,
``p_w h`` per token per layer (``p_w`` = weight dtype bytes), and one layer's full ``A`` is
alive again while it is recomputed.

Logits: tunesmith's loss never materialises the [tokens, vocab] logits; the trained positions go
through the head 1024 rows at a time under checkpointing, so only one chunk is alive:
``min(tokens, 1024) x V x (p + 4 + 8)`` bytes under bf16 (head output, fp32 copy, log-softmax,
its grad), ``x 12`` in fp32. (Without chunking the full logits would cost tokens x V x that.)

Peak: the weights and optimizer state stay; the rest comes in two phases, the forward and early
backward (activations with the loss chunk's backward or, checkpointed, one recomputed layer)
and the end of backward and optimizer step (all gradients with the step's temporary or the
tied embedding's extra gradients). The peak is their maximum:

    peak = W + S + max(A_saved + max(loss, A_recomputed + G_head), G + max(temp, G_tied))
    loss = max(logits, min(tokens, 1024) x V x p + G_head)   (one chunk)
         = logits + G_head                                    (more than one chunk)

In full fine-tuning the loss chunk's backward makes the head's weight gradient ``G_head = V h
x grad bytes`` from the gradient of the head output (``p`` per logit) after the chunk's other
logit-sized tensors are freed, so with one chunk it does not add to them; with more, the first
chunk's head gradient is alive while the next chunk runs. With a tied head, the end of the
backward pass holds the head's gradient (counted in ``G``), the embedding's dense gradient and
their sum: ``G_tied = 2 V h x grad bytes``. Neither exists under LoRA.

With N-way FSDP every parameter, gradient and optimizer state is sharded (divided by N); each
device gathers one layer at a time (two with prefetch) and keeps its own activations.

CUDA overhead: the context and cuBLAS/cuDNN workspaces take about 0.75 GiB before any tensor,
and the caching allocator's fragmentation adds about 10% on top of the peak. On CPU neither
applies.
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace
from typing import Literal

from tunesmith.plan.shapes import ModelShape, PlanError

GiB = 1024**3
Method = Literal["full", "lora", "qlora"]
Optimizer = Literal["adamw", "adamw8bit", "sgd"]
OptimizerImpl = Literal["auto", "fused", "foreach", "for-loop"]
Precision = Literal["fp32", "bf16", "bf16-pure"]

NF4_BYTES = (4 + 8 / 64 + 32 / (64 * 256)) / 8  # 0.516 bytes per weight (QLoRA, sec. 3)
CE_CHUNK = 1024  # rows of logits alive at once (tunesmith.engine.forward.forward_loss)
CUDA_CONTEXT_BYTES = int(0.75 * GiB)
FRAGMENTATION = 0.10
LORA_PRESETS = {
    "all-linear": ("q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"),
    "attention": ("q_proj", "v_proj"),
}


@dataclass(frozen=True)
class TrainSetup:
    """One training configuration to estimate."""

    method: Method = "lora"
    checkpointing: bool = False
    seq_len: int = 512
    micro_batch: int = 1
    optimizer: Optimizer = "adamw"
    optimizer_impl: OptimizerImpl = "auto"  # tunesmith's optim.implementation
    precision: Precision = "bf16"
    lora_rank: int = 16
    lora_targets: tuple[str, ...] = LORA_PRESETS["all-linear"]
    lora_dropout: float = 0.05  # tunesmith's lora.dropout default
    devices: int = 1
    attention: Literal["sdpa", "eager"] = "sdpa"
    device_type: Literal["cuda", "cpu"] = "cuda"

    @property
    def tokens(self) -> int:
        return self.seq_len * self.micro_batch


@dataclass
class Estimate:
    """Bytes per component on one device; ``peak`` is the training-step high-water mark."""

    setup: TrainSetup
    items: dict[str, int]
    peak: int
    overhead: int
    total_params: int
    trainable_params: int
    resident: int = 0  # weights + adapter weights: what is in memory before the first step
    notes: list[str] = field(default_factory=list)

    @property
    def total(self) -> int:
        return self.peak + self.overhead

    @property
    def step_increment(self) -> int:
        """What training steps add on top of the loaded (and adapter-wrapped) model: what a
        measurement of the peak minus the post-load baseline sees."""
        return self.peak - self.resident

    def fits(self, device_gib: float) -> bool:
        return self.total <= device_gib * GiB


def _act_bytes(precision: Precision) -> int:
    return 4 if precision == "fp32" else 2


def _weight_bytes(precision: Precision) -> int:
    return 4 if precision == "fp32" else 2


def optimizer_bytes_per_param(optimizer: Optimizer, precision: Precision) -> float:
    """Optimizer state per trainable base parameter (the fp32 master copy included in mixed
    precision)."""
    state = 2 if precision == "bf16-pure" else 4
    master = 4 if precision == "bf16" else 0
    if optimizer == "adamw":
        return master + 2 * state
    if optimizer == "adamw8bit":
        return master + 2 + 8 / 2048
    return master + state  # SGD with momentum


def _adapter_opt_bytes(optimizer: Optimizer) -> float:
    """Optimizer state per fp32 adapter parameter."""
    return {"adamw": 8.0, "adamw8bit": 2 + 8 / 2048, "sgd": 4.0}[optimizer]


def lora_params(shape: ModelShape, rank: int, targets: tuple[str, ...]) -> int:
    linears = shape.linear_shapes()
    unknown = [t for t in targets if t not in linears]
    if unknown:
        raise PlanError(f"LoRA targets {unknown} unknown; choose from {sorted(linears)}")
    return shape.layers * sum(rank * (linears[t][0] + linears[t][1]) for t in targets)


def lora_saved_bytes_per_token_layer(shape: ModelShape, s: TrainSetup) -> int:
    """``A_lora`` of the module docstring: what a LoRA layer saves for its linear layers (the
    frozen base linears save none of their inputs; the adapters do)."""
    linears = shape.linear_shapes()
    h, i, p, r = shape.hidden, shape.intermediate, _act_bytes(s.precision), s.lora_rank
    targets = s.lora_targets
    per = p * r * len(targets)  # lora_A outputs, saved by lora_B
    if s.lora_dropout == 0 and p == 4:
        # lora_A reads the base linear's own input: one saved tensor per distinct input
        # (o_proj's input is the attention output, already counted).
        qkv = any(t in targets for t in ("q_proj", "k_proj", "v_proj"))
        mlp = any(t in targets for t in ("gate_proj", "up_proj"))
        return per + p * (h * qkv + h * mlp + i * ("down_proj" in targets))
    # Every adapted linear saves its own copy of its input: the dropped copy, or the copy cast
    # to the adapter's dtype and back by autocast; with dropout also the dropout mask.
    mask = 0 if s.lora_dropout == 0 else (1 if s.device_type == "cuda" else 4)
    return per + sum(linears[t][0] for t in targets) * (p + mask)


def activation_bytes_per_token_layer(shape: ModelShape, s: TrainSetup) -> int:
    """``A`` of the module docstring (no checkpointing); LoRA and QLoRA: ``A_frozen + A_lora``."""
    h, i, a, p = shape.hidden, shape.intermediate, shape.heads, _act_bytes(s.precision)
    if s.method == "full":
        per = 8 * h + p * (8 * h + 4 * i) + 4 * a
    else:
        per = 8 * h + p * (4 * h + 3 * i) + 4 * a + lora_saved_bytes_per_token_layer(shape, s)
    if s.attention == "eager":
        per += a * s.seq_len * (4 + p)
    return per


def activation_bytes(shape: ModelShape, s: TrainSetup) -> int:
    """Activations alive at the end of the forward pass for one micro-batch: every layer's
    ``A`` (or, checkpointed, every layer's input), plus the final norm and the hidden rows of
    the loss (``4h + 3p h`` per token)."""
    tail = 4 * shape.hidden + 3 * _act_bytes(s.precision) * shape.hidden
    if s.checkpointing:
        kept = shape.layers * _weight_bytes(s.precision) * shape.hidden
        return s.tokens * (kept + tail)
    return s.tokens * (shape.layers * activation_bytes_per_token_layer(shape, s) + tail)


def recompute_bytes(shape: ModelShape, s: TrainSetup) -> int:
    """Checkpointing: one layer's activations, alive again while its backward runs."""
    return s.tokens * activation_bytes_per_token_layer(shape, s) if s.checkpointing else 0


def logits_bytes(shape: ModelShape, s: TrainSetup) -> int:
    """One chunk of the loss: head output (p), its fp32 copy (none when p = 4), log-softmax
    (4) and its gradient (4) per logit."""
    p = _act_bytes(s.precision)
    per_logit = p + (4 if p < 4 else 0) + 8
    return min(s.tokens, CE_CHUNK) * shape.vocab * per_logit


def _base_weight_bytes(shape: ModelShape, s: TrainSetup) -> float:
    if s.method == "qlora":
        linear = shape.layers * shape.layer_linear_params
        return linear * NF4_BYTES + (shape.params - linear) * 2
    return shape.params * _weight_bytes(s.precision)


def _sharded(value: float, s: TrainSetup) -> int:
    return int(value / s.devices)


def _fsdp_gather(shape: ModelShape, s: TrainSetup) -> int:
    """Two layers gathered in full (current + prefetched) under FSDP."""
    return 0 if s.devices == 1 else int(2 * shape.layer_params * _weight_bytes(s.precision))


def optimizer_impl(s: TrainSetup) -> str:
    """The AdamW kernel ``optim.implementation`` resolves to: ``auto`` takes the fused kernel
    unless the parameters are FSDP2 DTensor shards (``devices > 1``), which take foreach
    (tunesmith.engine.optim.kernel_options)."""
    if s.optimizer_impl != "auto":
        return s.optimizer_impl
    return "foreach" if s.devices > 1 else "fused"


def step_temp_bytes(shape: ModelShape, s: TrainSetup, trainable: int) -> int:
    """AdamW's temporary ``sqrt(v)`` during ``step()``, in the state's dtype: none for the fused
    kernel; the whole state's size for foreach; the largest trainable tensor's for for-loop."""
    if s.optimizer != "adamw":
        return 0
    impl = optimizer_impl(s)
    state_b = 2 if s.method == "full" and s.precision == "bf16-pure" else 4
    if impl == "fused":
        return 0
    if impl == "foreach":
        return _sharded(trainable * state_b, s)
    if s.method == "full":
        largest = shape.hidden * max(shape.vocab, shape.intermediate)
    else:
        largest = s.lora_rank * max(max(io) for io in shape.linear_shapes().values())
    return _sharded(largest * state_b, s)


def head_grad_bytes(shape: ModelShape, s: TrainSetup) -> int:
    """Full fine-tuning: the output head's weight gradient, made by the loss's backward."""
    if s.method != "full":
        return 0
    return _sharded(shape.vocab * shape.hidden * _weight_bytes(s.precision), s)


def loss_phase_bytes(shape: ModelShape, s: TrainSetup) -> int:
    """The loss chunk's backward: the chunk's logit tensors, or, once all but the gradient of the
    head output (``p`` per logit) are freed, that gradient and the head's weight gradient. With
    more than one chunk the head gradient made by the first stays while the next runs."""
    logits, head = logits_bytes(shape, s), head_grad_bytes(shape, s)
    if s.micro_batch * (s.seq_len - 1) > CE_CHUNK:
        return logits + head
    rows = min(s.tokens, CE_CHUNK)
    return max(logits, rows * shape.vocab * _act_bytes(s.precision) + head)


def tied_embedding_grad_bytes(shape: ModelShape, s: TrainSetup) -> int:
    """Full fine-tuning with a tied head, end of backward: the embedding's dense gradient and
    its sum with the head's, on top of the head's gradient (which ``G`` counts)."""
    if s.method != "full" or not shape.tied:
        return 0
    return 2 * head_grad_bytes(shape, s)


def _items(shape: ModelShape, s: TrainSetup) -> tuple[dict[str, int], int]:
    full = s.method == "full"
    trainable = shape.params if full else lora_params(shape, s.lora_rank, s.lora_targets)
    grad_b = _weight_bytes(s.precision)
    opt_b = optimizer_bytes_per_param(s.optimizer, s.precision)
    adapter = 0 if full else trainable * (4 + 4 + _adapter_opt_bytes(s.optimizer))
    items = {
        "weights": _sharded(_base_weight_bytes(shape, s), s) + _fsdp_gather(shape, s),
        "gradients": _sharded(shape.params * grad_b, s) if full else 0,
        "optimizer": _sharded(shape.params * opt_b, s) if full else 0,
        "adapter": _sharded(adapter, s),
        "activations": activation_bytes(shape, s),
        "logits": logits_bytes(shape, s),
    }
    return items, trainable


def estimate(shape: ModelShape, s: TrainSetup) -> Estimate:
    """Itemised per-device memory of one training step of ``shape`` under ``s``."""
    if s.devices < 1 or s.seq_len < 1 or s.micro_batch < 1:
        raise PlanError("devices, seq_len and micro_batch must be >= 1")
    if not 0 <= s.lora_dropout < 1:
        raise PlanError(f"lora_dropout (--lora-dropout) must be in [0, 1), got {s.lora_dropout}")
    items, trainable = _items(shape, s)
    lora_w = 0 if s.method == "full" else _sharded(trainable * 4, s)
    lora_g = lora_w
    lora_state = items["adapter"] - lora_w - lora_g
    persistent = items["weights"] + items["optimizer"] + lora_w + lora_state
    # The loss chunks run at the start of the backward pass, before any layer is recomputed.
    recompute = recompute_bytes(shape, s) + head_grad_bytes(shape, s)
    forward = items["activations"] + max(loss_phase_bytes(shape, s), recompute)
    end = max(step_temp_bytes(shape, s, trainable), tied_embedding_grad_bytes(shape, s))
    step = items["gradients"] + lora_g + end
    peak = persistent + max(forward, step)
    overhead = 0
    if s.device_type == "cuda":
        overhead = CUDA_CONTEXT_BYTES + int(FRAGMENTATION * peak)
    items["overhead"] = overhead
    notes = _notes(s)
    resident = items["weights"] + lora_w
    return Estimate(s, items, peak, overhead, shape.params, trainable, resident, notes)


def _notes(s: TrainSetup) -> list[str]:
    notes = []
    if s.method == "qlora" and s.devices > 1:
        notes.append("FSDP with 4-bit weights needs bnb_4bit_quant_storage set; check support")
    if s.attention == "eager":
        notes.append("eager attention keeps the [heads, seq, seq] probabilities per layer")
    if s.devices > 1:
        notes.append(f"weights/grads/optimizer sharded {s.devices} ways (FSDP); activations not")
    return notes


def with_changes(s: TrainSetup, **changes: object) -> TrainSetup:
    return replace(s, **changes)  # type: ignore[arg-type]
