"""Supervised fine-tuning: full, LoRA, or top-N layers, with exact resume.

The algorithm, top to bottom:
  1. set up: resolve the base model, tokenize the data (assistant-only labels), attach adapters;
  2. loop: for each optimizer step take ``grad_accum`` micro-batches, sum their token losses,
     divide by the step's trained-token count, backprop, clip, AdamW step, schedule step;
  3. every ``eval_every`` steps: held-out loss, best checkpoint, early stopping;
  4. every ``save_every`` steps: an atomic checkpoint (weights, optimizer, scheduler, RNG, step);
  5. save ``final/`` (loads with plain transformers or peft) with the chat template used.

With ``forgetting:`` a general-ability probe runs on the base weights, every ``forgetting.every``
steps (stopping or rolling back past its budget) and on the result (``forgetting.json``); with
``regularization:`` an EWC / L2 pull toward the starting weights is added to every step
(:mod:`tunesmith.forgetting`).
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

from tunesmith.checks.preflight import PreflightError, preflight_failures
from tunesmith.compress.qat import qat_export
from tunesmith.config import SFTConfig
from tunesmith.data.dataset import (
    PreparedData,
    collate_rows,
    data_files,
    make_rows,
    prepare_data,
    write_jsonl,
)
from tunesmith.data.templates import template_string
from tunesmith.engine.distributed import DistInfo, barrier, shard
from tunesmith.engine.lm_step import build_step_module, lm_step
from tunesmith.engine.optim import build_optimizer, build_scheduler
from tunesmith.engine.run import CRASH_ENV, OnRun, Run
from tunesmith.engine.trainable import build_trainable_model, due, total_steps
from tunesmith.eval.perplexity import evaluate_loss, evaluate_split
from tunesmith.forgetting.monitor import Forgetting
from tunesmith.models.adapters import parameter_counts
from tunesmith.models.load import load_tokenizer, resolve_model
from tunesmith.models.quantization import base_weight_bytes, quantization_config

__all__ = ["CRASH_ENV", "RunResult", "Setup", "run"]


@dataclass
class RunResult:
    run_dir: Path
    final_dir: Path
    steps: int
    last_train_loss: float | None
    val_loss: float | None
    best_val_loss: float | None
    stopped_early: bool
    stats: dict[str, Any] = field(default_factory=dict)


@dataclass
class Setup(OnRun):
    cfg: SFTConfig
    run: Run
    model: Any
    tokenizer: Any
    data: PreparedData
    rows: list[tuple[int, ...]]  # training items: example indices (several when packed)
    total_steps: int
    step_module: Any = None  # what the step calls: the loss module, DDP/FSDP-wrapped across ranks
    last_val: tuple[int, float] | None = None  # (step, held-out loss) of the latest evaluation


# ----------------------------------------------------------------------------- set up


def setup(cfg: SFTConfig, skip_preflight: bool = False) -> Setup:
    quantization_config(cfg.model.quantization, torch.float32)  # backend missing: fail first
    run = Run.start(cfg)
    with run.preparing():
        model_path, tokenizer, data, rows, model = _prepare(cfg, run.dist, run, skip_preflight)
    if run.dist.is_main:
        write_jsonl(run.run_dir / "rejects.jsonl", data.rejects)
        write_jsonl(run.run_dir / "data" / "val.jsonl", [e.to_json() for e in data.val.examples])
    trainable, total = parameter_counts(model)
    weights = base_weight_bytes(model)
    run.announce(
        data_files(cfg.data),
        {
            "base_model": str(model_path),
            "data": data.stats,
            "trainable_params": trainable,
            "total_params": total,
            "base_weight_bytes": weights,
            "quantization": cfg.model.quantization,
        },
        f"trainable params {trainable:,} / {total:,} ({100 * trainable / total:.3f}%); base "
        f"weights {weights:,} bytes (quantization {cfg.model.quantization}); processes "
        f"{run.dist.world}; data {data.stats}",
    )
    return Setup(
        cfg=cfg,
        run=run,
        model=model,
        tokenizer=tokenizer,
        data=data,
        rows=rows,
        total_steps=total_steps(cfg.train, len(rows), run.dist.world),
        step_module=build_step_module(
            model, run.dist, run.device, cfg.train.parallel, cfg.train.compile
        ),
    )


def _prepare(
    cfg: SFTConfig, info: DistInfo, run: Run, skip_preflight: bool
) -> tuple[Path, Any, PreparedData, list[tuple[int, ...]], Any]:
    """Base model, tokenizer, data (pre-flight checked), training rows and the model to train."""
    if info.is_main:  # a GGUF is converted once, by rank 0, before the others read the cache
        resolve_model(cfg.model.name_or_path)
    barrier(info)
    model_path = resolve_model(cfg.model.name_or_path)
    tokenizer = load_tokenizer(model_path)
    data = prepare_data(cfg.data, tokenizer)
    if not skip_preflight and (failures := preflight_failures(cfg, tokenizer, data)):
        raise PreflightError(failures)  # `tunesmith doctor` explains; --skip-preflight overrides
    rows = make_rows(data.train.encoded, cfg.data.packing, cfg.data.max_length)
    data.stats["train_rows"] = len(rows)
    return model_path, tokenizer, data, rows, build_trainable_model(cfg, model_path, run.device)


# ----------------------------------------------------------------------------- one step


def train_step(
    s: Setup,
    optimizer: torch.optim.Optimizer,
    scheduler: Any,
    micro_batches: list[dict[str, torch.Tensor]],
    regularize: Any = None,
) -> dict[str, float]:
    """One optimizer step of the token-mean loss (:func:`tunesmith.engine.lm_step.lm_step`)."""
    return lm_step(
        s.step_module,
        s.model,
        micro_batches,
        optimizer,
        scheduler,
        s.cfg.optim.max_grad_norm,
        s.dist,
        s.device,
        s.precision,
        (lambda: regularize(s)) if regularize is not None else None,
    )


# ----------------------------------------------------------------------------- bookkeeping


def _save_export(s: Setup, out: Path) -> Path:
    """A directory that loads with plain transformers / peft, tokenizer and template included.
    Every rank calls it (FSDP gathers the weights); rank 0 writes."""
    s.tokenizer.chat_template = template_string(s.cfg.data.template, s.tokenizer)
    quantized = qat_export(s.cfg.train.qat)  # train.qat: also write out/quantized/
    return s.run.export_model(out, s.model, s.tokenizer, s.step_module, extra=quantized)


def _evaluate(s: Setup) -> bool:
    """Held-out loss; keeps the best weights; returns True when early stopping triggers."""
    if not s.data.val.encoded:
        return False
    step = s.run.state.step
    result = evaluate_split(
        s.model,
        s.data.val,
        s.tokenizer.pad_token_id,
        s.device,
        s.precision,
        batch_size=s.cfg.train.micro_batch_size,
        loss_module=s.step_module,
    )
    record = {
        "step": step,
        "split": "val",
        "val_loss": result["loss"],
        "val_perplexity": result["perplexity"],
    }
    if len(result["by_tag"]) > 1:
        record["val_loss_by_tag"] = result["by_tag"]
    s.run.write(record)
    s.last_val = (step, result["loss"])
    return s.run.evaluated(result["loss"], lambda out: _save_export(s, out))


def _epoch_summary(s: Setup, per_step: int, m: dict[str, float], fill: dict[str, float]) -> None:
    """Once an epoch (or the run) is complete, log its padding waste (padding share of the
    positions computed) and packing efficiency (real tokens / (rows x max_length))."""
    step = s.run.state.step
    for key in fill:
        fill[key] += m[key]
    n = len(s.rows)
    epoch_done = (step * per_step) // n > ((step - 1) * per_step) // n
    if not (epoch_done or step == s.total_steps):
        return
    s.run.write(
        {
            "step": step,
            "split": "epoch",
            "epoch": step * per_step / n,
            "padding_waste": 1.0 - fill["real_tokens"] / fill["slots"],
            "packing_efficiency": fill["real_tokens"] / (fill["rows"] * s.cfg.data.max_length),
        }
    )
    for key in fill:
        fill[key] = 0.0


def _report_step(
    s: Setup, per_step: int, m: dict[str, float], fill: dict[str, float], bar: Any
) -> None:
    """metrics.jsonl, the per-epoch packing summary and the progress bar for one step."""
    step = s.run.state.step
    rate = m["trained_tokens"] / max(m["step_seconds"], 1e-9)
    m["padding_waste"] = 1.0 - m["real_tokens"] / m["slots"]
    if step % s.cfg.train.log_every == 0 or step == s.total_steps:
        s.run.write({"step": step, "split": "train", **m, "tokens_per_s": rate})
    _epoch_summary(s, per_step, m, fill)
    bar.set_postfix(loss=f"{m['loss']:.4f}", lr=f"{m['lr']:.2e}", tok_s=f"{rate:.0f}")
    bar.update(1)


def _final_val_loss(s: Setup) -> float | None:
    """The held-out loss of the final weights (reused when the last step was just evaluated)."""
    if not s.data.val.encoded:
        return None
    if s.last_val is not None and s.last_val[0] == s.run.state.step:
        return s.last_val[1]
    return evaluate_loss(
        s.model,
        s.data.val.encoded,
        s.tokenizer.pad_token_id,
        s.device,
        s.precision,
        s.cfg.train.micro_batch_size,
        loss_module=s.step_module,
    )["loss"]


# ----------------------------------------------------------------------------- the loop


def run(cfg: SFTConfig, skip_preflight: bool = False) -> RunResult:
    s = setup(cfg, skip_preflight)
    run, info = s.run, s.dist
    optimizer = build_optimizer(s.model, cfg.optim)
    scheduler = build_scheduler(optimizer, cfg.optim, s.total_steps)
    fg = Forgetting.build(s)
    fg.before(s)  # base weights: general probe, target loss, EWC/L2 anchors
    if cfg.train.resume:
        run.restore(s.model, optimizer, scheduler, s.step_module)
    state = run.state
    fg.resumed(s, state.step)
    encoded, pad_id = s.data.train.encoded, s.tokenizer.pad_token_id
    per_step = cfg.train.micro_batch_size * cfg.train.grad_accum * info.world
    # One step = grad_accum rounds of (micro_batch_size x world) items; each rank takes its share.
    batches = run.batches(len(s.rows))
    run.open_log()
    bar = run.progress(s.total_steps, "sft")
    fill = {"real_tokens": 0.0, "slots": 0.0, "rows": 0.0}
    stopped_early, last_loss = False, None
    while state.step < s.total_steps and not stopped_early:
        t0 = time.perf_counter()  # the step alone: evaluation and checkpoints are not counted
        micro = [
            collate_rows([s.rows[i] for i in shard(mb, info)], encoded, pad_id, cfg.data.packing)
            for mb in next(batches)
        ]
        m = train_step(s, optimizer, scheduler, micro, fg.regularize)
        state.step += 1
        state.tokens += int(m["trained_tokens"])
        last_loss = m["loss"]
        m["step_seconds"] = time.perf_counter() - t0
        _report_step(s, per_step, m, fill, bar)
        if due(state.step, cfg.train.eval_every, s.total_steps):
            stopped_early = _evaluate(s)
        if fg.due(state.step, s.total_steps, cfg.train.save_every) and fg.check(
            s, state.step, run.log
        ):
            stopped_early = True  # over the forgetting budget: no checkpoint of these weights
            break
        if due(state.step, cfg.train.save_every, s.total_steps):
            run.checkpoint(s.model, optimizer, scheduler, s.step_module)
            fg.checkpointed(s, state.step)
        run.crash_point()
    bar.close()
    if fg.roll_back(s) is not None:
        s.last_val = None  # the weights changed: evaluate again
    final = _save_export(s, s.run_dir / "final")
    val = _final_val_loss(s)
    run.write({"step": state.step, "split": "final", "val_loss": val})
    fg.finish(s, state.step, run.log, val)
    run.finish()
    best = state.best_metric if state.best_step else None
    return RunResult(
        run_dir=s.run_dir,
        final_dir=final,
        steps=state.step,
        last_train_loss=last_loss,
        val_loss=val,
        best_val_loss=best if best is None else float(best),
        stopped_early=stopped_early,
        stats=s.data.stats,
    )
