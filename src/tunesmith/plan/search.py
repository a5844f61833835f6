"""The cheapest configuration that fits: search method x checkpointing x micro-batch x optimizer.

Among the configurations whose estimate fits the device, the best is the first in this order:

1. optimizer: AdamW, 32- or 8-bit (8-bit AdamW matches 32-bit quality, Dettmers et al. 2022),
   before SGD with momentum, which fine-tunes transformers markedly worse: LoRA with AdamW is
   preferred to full fine-tuning with SGD;
2. method: the requested one before a lighter one (full > lora > qlora: each step down trains
   fewer or lower-precision weights);
3. throughput: the lowest relative time per trained token (below);
4. memory: the smallest estimate, leaving the most headroom.

Relative time per token is a documented heuristic, not a measurement: 1.0 for a full
fine-tuning step; LoRA/QLoRA skip the frozen weights' gradient matmuls (backward ~1x forward
instead of 2x: 2/3 of the work); QLoRA dequantises every weight on use (x 1.3, Dettmers et al.
2023 report slower steps); gradient checkpointing recomputes the forward (x 4/3); 8-bit AdamW
costs a little (x 1.02); and a small micro-batch underuses the device: efficiency
``tokens / (tokens + 1024)`` per micro-batch, so 512 tokens run at 1/3 of the saturated rate.
Micro-batches run from the effective batch (micro-batch x grad_accum) down by halves to 1;
gradient accumulation makes up the rest, so the effective batch is kept.
"""

from __future__ import annotations

import itertools
import math
from dataclasses import dataclass

from tunesmith.plan.memory import Estimate, TrainSetup, estimate, with_changes
from tunesmith.plan.shapes import ModelShape

METHOD_ORDER = ("full", "lora", "qlora")
OPTIMIZER_TIER = {"adamw": 0, "adamw8bit": 0, "sgd": 1}


@dataclass(frozen=True)
class Candidate:
    estimate: Estimate
    relative_time: float  # per trained token; 1.0 = full fine-tuning, saturated device
    grad_accum: int  # keeps the requested effective batch


def relative_time(s: TrainSetup) -> float:
    t = 1.0 if s.method == "full" else 2 / 3
    t *= 1.3 if s.method == "qlora" else 1.0
    t *= 4 / 3 if s.checkpointing else 1.0
    t *= 1.02 if s.optimizer == "adamw8bit" else 1.0
    return t * (s.tokens + 1024) / s.tokens


def _micro_batches(requested: int) -> list[int]:
    out, mb = [], requested
    while mb >= 1:
        out.append(mb)
        mb //= 2
    return out if out[-1] == 1 else [*out, 1]


def candidates(shape: ModelShape, base: TrainSetup, grad_accum: int = 1) -> list[Candidate]:
    """Every configuration at or below the requested method, estimated."""
    methods = METHOD_ORDER[METHOD_ORDER.index(base.method) :]
    out = []
    effective = base.micro_batch * grad_accum
    combos = itertools.product(methods, (False, True), _micro_batches(effective), OPTIMIZER_TIER)
    for method, ckpt, mb, opt in combos:
        s = with_changes(base, method=method, checkpointing=ckpt, micro_batch=mb, optimizer=opt)
        accum = math.ceil(effective / mb)
        out.append(Candidate(estimate(shape, s), relative_time(s), accum))
    return out


def _rank(c: Candidate, requested: str) -> tuple[int, int, float, int]:
    s = c.estimate.setup
    method_step = METHOD_ORDER.index(s.method) - METHOD_ORDER.index(requested)
    return (OPTIMIZER_TIER[s.optimizer], method_step, c.relative_time, c.estimate.total)


def best_fit(
    shape: ModelShape, base: TrainSetup, device_gib: float, grad_accum: int = 1
) -> Candidate | None:
    """The first fitting candidate in the order of the module docstring, or None."""
    fitting = [c for c in candidates(shape, base, grad_accum) if c.estimate.fits(device_gib)]
    if not fitting:
        return None
    return min(fitting, key=lambda c: _rank(c, base.method))
