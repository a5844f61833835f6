"""Checks that run the model: packed-row isolation (7) and the timed training step.

The model is built exactly as training builds it (:func:`engine.trainable.build_trainable_model`:
same loader, dtype, adapters, seed) and the step is the lifecycle's own
(:func:`tunesmith.engine.lm_step.lm_step`), on the run's first real micro-batches; no run
directory is created.
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from tunesmith.checks.checks import Check
from tunesmith.config import SFTConfig
from tunesmith.data.dataset import PreparedData, collate, collate_rows, step_batches
from tunesmith.data.packing import collate_packed
from tunesmith.data.templates import Encoded
from tunesmith.engine.distributed import DistInfo
from tunesmith.engine.forward import forward_logits
from tunesmith.engine.lm_step import build_step_module, lm_step
from tunesmith.engine.optim import build_optimizer, build_scheduler
from tunesmith.engine.precision import autocast
from tunesmith.engine.trainable import build_trainable_model, total_steps

EXACT_RTOL = 1e-4
"""Packed vs alone logit tolerance in float32, as a share of the largest logit (at least 1e-4
absolute): summation order differs with the row length, and real models' logits reach ~30."""

LOW_PRECISION_RTOL = 2e-2
"""In bf16/fp16 the tolerance is this share of the largest logit (kernels round differently)."""


def build_model(cfg: SFTConfig, model_path: Path, device: torch.device) -> Any:
    """The model as training builds it (base, dtype, LoRA or frozen layers, seed)."""
    return build_trainable_model(cfg, model_path, device)


def _mask_isolated(packed: dict[str, torch.Tensor], at: int) -> bool:
    """No query of the second example sees a key of the first; its positions restart at 0."""
    mask = packed["attention_mask"][0, 0]  # [T, T]
    return not bool(mask[at:, :at].any()) and int(packed["position_ids"][0, at]) == 0


@torch.no_grad()
def check_packing_isolation(
    model: Any, encoded: Sequence[Encoded], pad_id: int, device: torch.device, precision: str
) -> Check:
    """7. Pack the two shortest examples into one row: the second example's logits must equal
    its logits run alone (and the mask must not cross the boundary).

    With float32 weights the comparison runs without autocast, so the tolerance can be tight
    (:data:`EXACT_RTOL`); autocast changes the kernels' rounding, not the masking. With bf16/fp16
    weights it runs as training does, with the loose :data:`LOW_PRECISION_RTOL`.
    """
    if len(encoded) < 2:
        return Check("packing", "SKIP", "fewer than two training examples")
    a, b = sorted(encoded, key=lambda e: len(e.input_ids))[:2]
    packed = collate_packed([[a, b]], pad_id)
    at, n = len(a.input_ids), len(b.input_ids)
    if not _mask_isolated(packed, at):
        return Check("packing", "FAIL", "the packed attention mask lets examples see each other")
    exact = next(model.parameters()).dtype == torch.float32
    run_as = "fp32" if exact else precision
    was_training = model.training
    model.eval()  # LoRA dropout off
    try:
        with autocast(run_as, device):
            inside = forward_logits(model, {k: v.to(device) for k, v in packed.items()})
            alone = forward_logits(
                model, {k: v.to(device) for k, v in collate([b], pad_id).items()}
            )
    finally:
        model.train(was_training)
    inside, alone = inside[0, at : at + n].float(), alone[0].float()
    diff = float((inside - alone).abs().max())
    tol = (EXACT_RTOL if exact else LOW_PRECISION_RTOL) * max(1.0, float(alone.abs().max()))
    detail = (
        f"a {n}-token example packed after a {at}-token one: max |logit diff| vs alone "
        f"{diff:.2e} (tolerance {tol:.1e}, {run_as})"
    )
    return Check("packing", "PASS" if diff <= tol else "FAIL", detail)


@dataclass(frozen=True)
class StepTiming:
    """Wall-clock seconds of real training steps and their token counts."""

    first_s: float  # includes one-time costs (kernel selection, allocator warm-up)
    step_s: float  # the faster of two steps: the least noisy estimate of a steady step
    real_tokens: int
    trained_tokens: int
    total_steps: int
    peak_memory_gib: float | None  # measured on CUDA, None elsewhere

    def summary(self) -> str:
        line = (
            f"one training step: {self.step_s:.3f} s ({self.real_tokens / self.step_s:,.0f} "
            f"tokens/s, {self.trained_tokens / self.step_s:,.0f} trained tokens/s); first step "
            f"{self.first_s:.3f} s incl. warm-up; ~{duration(self.step_s * self.total_steps)} "
            f"for the run's {self.total_steps} steps"
        )
        if self.peak_memory_gib is not None:
            line += f"; peak GPU memory {self.peak_memory_gib:.2f} GiB (measured)"
        return line


def duration(seconds: float) -> str:
    """``0.42 s``, ``3.5 min``, ``2.1 h``."""
    if seconds < 120:
        return f"{seconds:.2g} s" if seconds < 10 else f"{seconds:.0f} s"
    return f"{seconds / 60:.1f} min" if seconds < 7200 else f"{seconds / 3600:.1f} h"


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def time_train_step(
    cfg: SFTConfig,
    model: Any,
    tokenizer: Any,
    data: PreparedData,
    rows: list[tuple[int, ...]],
    device: torch.device,
    precision: str,
) -> StepTiming:
    """Two real optimizer steps (forward, backward, clip, AdamW, schedule) on the run's first
    micro-batches, through the training step itself. The weights change: use a throw-away model."""
    total = total_steps(cfg.train, len(rows))
    step_module = build_step_module(model, DistInfo(), device)  # one process, as training
    optimizer = build_optimizer(model, cfg.optim)
    scheduler = build_scheduler(optimizer, cfg.optim, total)
    batches = step_batches(
        len(rows), cfg.train.seed, cfg.train.micro_batch_size, cfg.train.grad_accum
    )
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)
    steps: list[tuple[float, dict[str, float]]] = []
    for _ in range(2):
        micro = [
            collate_rows(
                [rows[i] for i in mb], data.train.encoded, tokenizer.pad_token_id, cfg.data.packing
            )
            for mb in next(batches)
        ]
        _sync(device)
        t0 = time.perf_counter()
        metrics = lm_step(
            step_module,
            model,
            micro,
            optimizer,
            scheduler,
            cfg.optim.max_grad_norm,
            DistInfo(),
            device,
            precision,
        )
        _sync(device)
        steps.append((time.perf_counter() - t0, metrics))
    peak = torch.cuda.max_memory_allocated(device) / 2**30 if device.type == "cuda" else None
    seconds, metrics = min(steps, key=lambda st: st[0])
    return StepTiming(
        first_s=steps[0][0],
        step_s=max(seconds, 1e-9),
        real_tokens=int(metrics["real_tokens"]),
        trained_tokens=int(metrics["trained_tokens"]),
        total_steps=total,
        peak_memory_gib=peak,
    )
