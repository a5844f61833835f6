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

import math
import os
import shutil
import signal
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import torch
from tqdm.auto import tqdm

from tunesmith.checks.preflight import PreflightError, preflight_failures
from tunesmith.config import SFTConfig
from tunesmith.data.dataset import (
    PreparedData,
    collate_rows,
    data_files,
    make_rows,
    prepare_data,
    step_batches,
    write_jsonl,
)
from tunesmith.data.templates import template_string
from tunesmith.engine import checkpoint as ckpt
from tunesmith.engine.compile import compile_layers
from tunesmith.engine.distributed import (
    DistInfo,
    all_reduce_sum,
    barrier,
    broadcast_object,
    full_state_dict,
    gather_objects,
    grad_sync,
    init_distributed,
    is_fsdp,
    load_sharded,
    rank_device,
    save_sharded,
    shard,
    shutdown,
    wrap_for_training,
)
from tunesmith.engine.forward import forward_loss
from tunesmith.engine.metrics_log import MetricsLog, read_metrics
from tunesmith.engine.optim import build_optimizer, build_scheduler
from tunesmith.engine.precision import autocast, resolve_precision
from tunesmith.engine.rundir import new_run_dir, write_run_files
from tunesmith.engine.tracking import open_metrics_log
from tunesmith.engine.trainable import build_trainable_model, due, total_steps
from tunesmith.eval.perplexity import evaluate_loss, evaluate_split
from tunesmith.forgetting.monitor import Forgetting
from tunesmith.losses.sft import IGNORE_INDEX
from tunesmith.models.adapters import parameter_counts
from tunesmith.models.load import load_tokenizer, pick_device, resolve_model
from tunesmith.models.quantization import base_weight_bytes, quantization_config

CRASH_ENV = "TUNESMITH_CRASH_AFTER_STEP"  # tests: SIGKILL the process after this step


@dataclass
class TrainState:
    """Everything about progress that a checkpoint must restore besides weights and RNG."""

    step: int = 0
    tokens: int = 0
    best_val_loss: float = math.inf
    best_step: int | None = None
    evals_without_improvement: int = 0


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
class Setup:
    cfg: SFTConfig
    run_dir: Path
    device: torch.device
    precision: str
    model: Any
    tokenizer: Any
    data: PreparedData
    rows: list[tuple[int, ...]]  # training items: example indices (several when packed)
    total_steps: int
    dist: DistInfo = field(default_factory=DistInfo)
    step_module: Any = None  # what the step calls: the loss module, DDP-wrapped across ranks
    last_val: tuple[int, float] | None = None  # (step, held-out loss) of the latest evaluation


class LossModule(torch.nn.Module):
    """``batch -> (summed loss, trained tokens)`` as a module, so that DDP sees the forward."""

    def __init__(self, model: Any):
        super().__init__()
        self.model = model

    def forward(self, batch: dict[str, torch.Tensor]) -> tuple[torch.Tensor, torch.Tensor]:
        return forward_loss(self.model, batch)


def _step_module(
    model: Any, info: DistInfo, device: torch.device, parallel: str = "ddp", compile: bool = False
) -> Any:
    if compile:
        compile_layers(model)
    return wrap_for_training(LossModule(model), model, info, device, parallel)


# ----------------------------------------------------------------------------- set up


def setup(cfg: SFTConfig, skip_preflight: bool = False) -> Setup:
    info = init_distributed(cfg.train.device)
    device = pick_device(rank_device(info, cfg.train.device))
    quantization_config(cfg.model.quantization, torch.float32)  # backend missing: fail first
    run_dir = new_run_dir(cfg) if info.is_main else None
    run_dir = broadcast_object(run_dir, info)
    try:
        model_path, tokenizer, data, rows, model = _prepare(cfg, info, device, skip_preflight)
    except BaseException:
        if info.is_main and not cfg.train.resume and not any(run_dir.iterdir()):
            run_dir.rmdir()  # a refused or failed start leaves no empty run dir behind
        raise
    if info.is_main:
        write_jsonl(run_dir / "rejects.jsonl", data.rejects)
        write_jsonl(run_dir / "data" / "val.jsonl", [e.to_json() for e in data.val.examples])
    trainable, total = parameter_counts(model)
    files = data_files(cfg.data)
    if info.is_main:
        weights = base_weight_bytes(model)
        _announce(run_dir, cfg, files, model_path, data.stats, trainable, total, info, weights)
    barrier(info)
    return Setup(
        cfg=cfg,
        run_dir=run_dir,
        device=device,
        precision=resolve_precision(cfg.train.precision, device),
        model=model,
        tokenizer=tokenizer,
        data=data,
        rows=rows,
        total_steps=total_steps(cfg.train, len(rows), info.world),
        dist=info,
        step_module=_step_module(model, info, device, cfg.train.parallel, cfg.train.compile),
    )


def _prepare(
    cfg: SFTConfig, info: DistInfo, device: torch.device, skip_preflight: bool
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
    return model_path, tokenizer, data, rows, build_trainable_model(cfg, model_path, device)


def _announce(
    run_dir: Path,
    cfg: SFTConfig,
    files: list[str],
    model_path: Path,
    stats: dict[str, Any],
    trainable: int,
    total: int,
    info: DistInfo,
    weight_bytes: int = 0,
) -> None:
    """Write config.yaml and env.json, and say what will be trained (rank 0 only)."""
    write_run_files(
        run_dir,
        cfg,
        files,
        {
            "base_model": str(model_path),
            "data": stats,
            "trainable_params": trainable,
            "total_params": total,
            "base_weight_bytes": weight_bytes,
            "quantization": cfg.model.quantization,
            "world_size": info.world,
        },
    )
    print(
        f"[tunesmith] run dir {run_dir}\n[tunesmith] trainable params {trainable:,} / {total:,}"
        f" ({100 * trainable / total:.3f}%); base weights {weight_bytes:,} bytes"
        f" (quantization {cfg.model.quantization}); processes {info.world}; data {stats}",
        flush=True,
    )


# ----------------------------------------------------------------------------- one step


def train_step(
    s: Setup,
    optimizer: torch.optim.Optimizer,
    scheduler: Any,
    micro_batches: list[dict[str, torch.Tensor]],
    regularize: Any = None,
) -> dict[str, float]:
    """One optimizer step over ``grad_accum`` micro-batches.

    Each micro-batch's summed loss is divided by the trained-token count N of the whole step, so
    the gradient is that of the token-mean loss over the step, however it is split.
    ``regularize(s)``, when given, adds a penalty's gradient (EWC / L2, once per step, not per
    token) before clipping and returns its value; the logged ``loss`` stays the data loss.
    """
    info = s.dist
    n_step = all_reduce_sum(
        sum(float((mb["labels"][:, 1:] != IGNORE_INDEX).sum()) for mb in micro_batches),
        info,
        s.device,
    )
    # DDP averages gradients over ranks; scaling by the world size makes the result the gradient
    # of (sum of every rank's token losses) / (every rank's trained tokens).
    scale = info.world / max(n_step, 1.0)
    total = 0.0
    for i, mb in enumerate(micro_batches):
        mb = {k: v.to(s.device) for k, v in mb.items()}
        with grad_sync(s.step_module, on=i == len(micro_batches) - 1):
            with autocast(s.precision, s.device):
                loss_sum, _ = s.step_module(mb)
            (loss_sum * scale).backward()
        total += loss_sum.item()
    penalty = regularize(s) if regularize is not None else None
    params = [p for p in s.model.parameters() if p.requires_grad]
    max_norm = s.cfg.optim.max_grad_norm or math.inf
    norm = torch.nn.utils.clip_grad_norm_(params, max_norm)
    grad_norm = float(norm.full_tensor() if hasattr(norm, "full_tensor") else norm)
    lr = scheduler.get_last_lr()[0]
    optimizer.step()
    scheduler.step()
    optimizer.zero_grad(set_to_none=True)
    counts = {
        "loss_sum": total,
        "real_tokens": float(sum(_real_tokens(mb) for mb in micro_batches)),
        "slots": float(sum(mb["input_ids"].numel() for mb in micro_batches)),
        "rows": float(sum(mb["input_ids"].size(0) for mb in micro_batches)),
    }
    counts = {k: all_reduce_sum(v, info, s.device) for k, v in counts.items()}
    extra = {"reg_penalty": penalty} if penalty is not None else {}
    return {
        "loss": counts.pop("loss_sum") / max(n_step, 1.0),
        "grad_norm": grad_norm,
        "lr": lr,
        "trained_tokens": n_step,
        **counts,
        **extra,
    }


def _real_tokens(batch: dict[str, torch.Tensor]) -> int:
    """Non-padding positions of a padded or packed batch."""
    if "seq_ids" in batch:
        return int((batch["seq_ids"] >= 0).sum())
    return int(batch["attention_mask"].sum())


# ----------------------------------------------------------------------------- bookkeeping


def _restore(s: Setup, optimizer: torch.optim.Optimizer, scheduler: Any) -> TrainState:
    found = ckpt.list_checkpoints(s.run_dir)
    if not found:
        print(f"[tunesmith] no checkpoint in {s.run_dir}; starting from step 0", flush=True)
        return TrainState()
    step, path = found[-1]
    saved = ckpt.load_state(path)
    if is_fsdp(s.step_module):
        load_sharded(s.step_module, optimizer, path / "sharded")
    else:
        ckpt.load_trainable(s.model, path)
        optimizer.load_state_dict(saved["optimizer"])
    scheduler.load_state_dict(saved["scheduler"])
    rngs = saved["rng"]
    if len(rngs) != s.dist.world:
        raise ValueError(f"{path} was written by {len(rngs)} process(es); resume it with as many")
    ckpt.set_rng_state(rngs[s.dist.rank])
    state = TrainState(**saved["train"])
    metrics_path = s.run_dir / "metrics.jsonl"
    if (
        s.dist.is_main and metrics_path.is_file()
    ):  # drop lines written after the checkpoint by the crashed run
        kept = [r for r in read_metrics(metrics_path) if r.get("step", 0) <= step]
        write_jsonl(metrics_path, kept)
    print(f"[tunesmith] resumed from {path} (step {step})", flush=True)
    return state


def _evaluate(s: Setup, state: TrainState, log: MetricsLog) -> bool:
    """Held-out loss; keeps the best weights; returns True when early stopping triggers."""
    if not s.data.val.encoded:
        return False
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
        "step": state.step,
        "split": "val",
        "val_loss": result["loss"],
        "val_perplexity": result["perplexity"],
    }
    if len(result["by_tag"]) > 1:
        record["val_loss_by_tag"] = result["by_tag"]
    log.write(record)
    s.last_val = (state.step, result["loss"])
    if result["loss"] < state.best_val_loss:
        state.best_val_loss, state.best_step = result["loss"], state.step
        state.evals_without_improvement = 0
        _save_export(s, s.run_dir / "best")
    else:
        state.evals_without_improvement += 1
    patience = s.cfg.train.early_stopping_patience
    return patience is not None and state.evals_without_improvement >= patience


def _save_export(s: Setup, out: Path) -> None:
    """A directory that loads with plain transformers / peft, tokenizer and template included.
    Every rank calls it (FSDP gathers the weights); rank 0 writes."""
    weights = full_state_dict(s.step_module)
    if not s.dist.is_main:
        return
    s.tokenizer.chat_template = template_string(s.cfg.data.template, s.tokenizer)
    tmp = ckpt.atomic_dir(out)
    try:
        ckpt.export_model(s.model, tmp, s.tokenizer, state_dict=weights)
        (tmp / "tunesmith_config.yaml").write_text((s.run_dir / "config.yaml").read_text())
        ckpt.commit_dir(tmp, out)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


def _checkpoint(
    s: Setup, state: TrainState, optimizer: torch.optim.Optimizer, scheduler: Any
) -> None:
    """``checkpoints/step-N``, atomically. FSDP: every rank adds its shard of the weights and
    optimizer state under ``sharded/`` and rank 0 the gathered weights for plain loading."""
    info, fsdp = s.dist, is_fsdp(s.step_module)
    rngs = gather_objects(ckpt.rng_state(), info)
    weights = full_state_dict(s.step_module)
    final = s.run_dir / "checkpoints" / f"step-{state.step}"
    staging = broadcast_object(ckpt.atomic_dir(final) if info.is_main else None, info)
    if fsdp:
        save_sharded(s.step_module, optimizer, staging / "sharded")
    barrier(info)
    if info.is_main:
        ckpt.save_checkpoint(
            s.run_dir,
            state.step,
            s.model,
            None if fsdp else optimizer,
            scheduler,
            asdict(state),
            s.cfg.train.keep_last,
            rng=rngs,
            state_dict=weights,
            staging=staging,
        )
    barrier(info)


def _epoch_summary(
    s: Setup, step: int, per_step: int, m: dict[str, float], fill: dict[str, float], log: MetricsLog
) -> None:
    """Once an epoch (or the run) is complete, log its padding waste (padding share of the
    positions computed) and packing efficiency (real tokens / (rows x max_length))."""
    for key in fill:
        fill[key] += m[key]
    n = len(s.rows)
    epoch_done = (step * per_step) // n > ((step - 1) * per_step) // n
    if not (epoch_done or step == s.total_steps):
        return
    log.write(
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
    s: Setup,
    step: int,
    per_step: int,
    m: dict[str, float],
    fill: dict[str, float],
    log: MetricsLog,
    bar: Any,
) -> None:
    """metrics.jsonl, the per-epoch packing summary and the progress bar for one step."""
    rate = m["trained_tokens"] / max(m["step_seconds"], 1e-9)
    m["padding_waste"] = 1.0 - m["real_tokens"] / m["slots"]
    if step % s.cfg.train.log_every == 0 or step == s.total_steps:
        log.write({"step": step, "split": "train", **m, "tokens_per_s": rate})
    _epoch_summary(s, step, per_step, m, fill, log)
    bar.set_postfix(loss=f"{m['loss']:.4f}", lr=f"{m['lr']:.2e}", tok_s=f"{rate:.0f}")
    bar.update(1)


def _final_val_loss(s: Setup, step: int) -> float | None:
    """The held-out loss of the final weights (reused when the last step was just evaluated)."""
    if not s.data.val.encoded:
        return None
    if s.last_val is not None and s.last_val[0] == step:
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
    optimizer = build_optimizer(s.model, cfg.optim)
    scheduler = build_scheduler(optimizer, cfg.optim, s.total_steps)
    fg = Forgetting.build(s)
    fg.before(s)  # base weights: general probe, target loss, EWC/L2 anchors
    state = _restore(s, optimizer, scheduler) if cfg.train.resume else TrainState()
    fg.resumed(s, state.step)
    encoded, pad_id = s.data.train.encoded, s.tokenizer.pad_token_id
    info = s.dist
    per_step = cfg.train.micro_batch_size * cfg.train.grad_accum * info.world
    # One step = grad_accum rounds of (micro_batch_size x world) items; each rank takes its share.
    batches = step_batches(
        len(s.rows),
        cfg.train.seed,
        cfg.train.micro_batch_size * info.world,
        cfg.train.grad_accum,
        start_step=state.step,
    )
    crash_after = int(os.environ.get(CRASH_ENV, "0"))
    log = open_metrics_log(s.run_dir, cfg, info.is_main)
    bar = tqdm(
        total=s.total_steps,
        initial=state.step,
        desc="sft",
        unit="step",
        dynamic_ncols=True,
        disable=not info.is_main,
    )
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
        _report_step(s, state.step, per_step, m, fill, log, bar)
        if due(state.step, cfg.train.eval_every, s.total_steps):
            stopped_early = _evaluate(s, state, log)
        if fg.due(state.step, s.total_steps, cfg.train.save_every) and fg.check(s, state.step, log):
            stopped_early = True  # over the forgetting budget: no checkpoint of these weights
            break
        if due(state.step, cfg.train.save_every, s.total_steps):
            _checkpoint(s, state, optimizer, scheduler)
            fg.checkpointed(s, state.step)
        if crash_after and state.step == crash_after:
            os.kill(os.getpid(), signal.SIGKILL)
    bar.close()
    final = s.run_dir / "final"
    if fg.roll_back(s) is not None:
        s.last_val = None  # the weights changed: evaluate again
    _save_export(s, final)
    val = _final_val_loss(s, state.step)
    log.write({"step": state.step, "split": "final", "val_loss": val})
    fg.finish(s, state.step, log, val)
    log.close()
    barrier(info)
    shutdown(info)
    return RunResult(
        run_dir=s.run_dir,
        final_dir=final,
        steps=state.step,
        last_train_loss=last_loss,
        val_loss=val,
        best_val_loss=state.best_val_loss if state.best_step else None,
        stopped_early=stopped_early,
        stats=s.data.stats,
    )
