"""Plain-text rendering of estimates, the best fitting configuration and advice."""

from __future__ import annotations

from tunesmith.plan.advisor import Advice
from tunesmith.plan.datafacts import DataFacts
from tunesmith.plan.memory import Estimate, GiB, TrainSetup
from tunesmith.plan.search import Candidate

ITEM_NOTES = {
    "weights": "base weights (sharded under FSDP, + 2 gathered layers)",
    "gradients": "gradients of trained base weights",
    "optimizer": "optimizer state (+ fp32 master copy in mixed precision)",
    "adapter": "adapter weights + grads + optimizer state (fp32)",
    "activations": "saved for backward (checkpointed: layer inputs only)",
    "logits": "one 1024-row chunk of the loss (never the full logits)",
    "overhead": "CUDA context 0.75 GiB + 10% allocator fragmentation",
}


def _gib(n: float) -> str:
    return f"{n / GiB:8.2f} GiB"


def describe_setup(s: TrainSetup) -> str:
    ckpt = "with" if s.checkpointing else "without"
    method = f"{s.method} (r={s.lora_rank})" if s.method != "full" else "full"
    return (
        f"{method}, {ckpt} gradient checkpointing, seq {s.seq_len} x micro-batch "
        f"{s.micro_batch}, {s.optimizer}, {s.precision}, {s.devices} device(s), {s.attention}"
    )


def render_estimate(e: Estimate, device_gib: float) -> str:
    lines = [describe_setup(e.setup)]
    lines.append(f"  parameters {e.total_params:,}; trainable {e.trainable_params:,}")
    for name, value in e.items.items():
        lines.append(f"  {name:<12}{_gib(value)}   {ITEM_NOTES[name]}")
    lines.append(f"  {'peak':<12}{_gib(e.peak)}   weights + state + max(forward, step) phases")
    verdict = "fits" if e.fits(device_gib) else "does NOT fit"
    lines.append(f"  {'total':<12}{_gib(e.total)}   {verdict} in {device_gib:g} GiB")
    lines += [f"  note: {n}" for n in e.notes]
    return "\n".join(lines)


def render_best(best: Candidate | None, device_gib: float) -> str:
    if best is None:
        return (
            f"nothing fits in {device_gib:g} GiB at micro-batch 1: shorten the sequence, "
            "add devices (FSDP) or use a smaller model"
        )
    e = best.estimate
    return (
        f"best fitting configuration in {device_gib:g} GiB: {describe_setup(e.setup)}, "
        f"grad_accum {best.grad_accum}\n  total {e.total / GiB:.2f} GiB, relative time per "
        f"token {best.relative_time:.2f} (1.00 = full fine-tuning, saturated device)\n"
        "  order: AdamW before SGD; the requested method before a lighter one; then the "
        "fastest; then the smallest"
    )


def render_data(f: DataFacts) -> str:
    return (
        f"data {f.path}: {f.examples} examples; tokens p50 {f.tokens_p50}, p95 "
        f"{f.tokens_p95}, max {f.tokens_max} ({f.counted_with}) -> seq len {f.seq_len}; "
        f"JSON replies {100 * f.json_replies:.0f}%; duplicates "
        f"{100 * f.duplicate_fraction:.1f}%"
    )


def render_advice(a: Advice) -> str:
    lines = [f"recommendation: {a.recommendation}"]
    for rule in a.rules:
        votes = ", ".join(f"+{v} {k}" for k, v in rule.votes.items()) or "prerequisite"
        lines.append(f"  [{rule.name}] {rule.reason} ({votes})")
    return "\n".join(lines)
