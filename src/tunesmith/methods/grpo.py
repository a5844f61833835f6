"""GRPO with verifiable rewards (Shao et al. 2024, DeepSeekMath), LoRA on one process.

The algorithm, top to bottom:
  1. set up: the base model with a LoRA adapter (the reference policy is the same model with the
     adapter switched off: no second copy), the prompt records and the reward functions;
  2. held-out accuracy of the untrained policy (greedy replies scored by the first reward);
  3. loop, one round per step:
     a. take ``prompts_per_step`` prompts and sample ``num_generations`` completions of each with
        the current policy, all in one batch;
     b. score every completion with every reward; sum with weights; group-relative advantages
        A = (r - mean_group) / (std_group + eps) (no division with ``scale_rewards: false``);
     c. per-token log-probs of the sampling policy (pi_old) and of the reference, once;
     d. ``inner_steps`` optimizer updates of the clipped surrogate + beta * KL (losses/grpo.py),
        each over micro-batches normalised by the whole round's token (or completion) count;
     e. metrics.jsonl and the progress bar: reward mean/std per function, zero-variance groups,
        completion length, KL, clip fraction;
  4. ``final/`` (adapter + tokenizer) and held-out accuracy after training.
"""

from __future__ import annotations

import math
import os
import random
import shutil
import statistics
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from tqdm.auto import tqdm

from tunesmith.config.grpo import GRPOConfig
from tunesmith.data.prompts import PromptRecord, read_prompts, reward_fields
from tunesmith.data.templates import template_string
from tunesmith.engine import checkpoint as ckpt
from tunesmith.engine.metrics_log import MetricsLog
from tunesmith.engine.optim import build_optimizer, build_scheduler
from tunesmith.engine.precision import autocast, resolve_precision
from tunesmith.engine.rundir import new_run_dir, write_run_files
from tunesmith.engine.token_logps import collate_completions, token_logps
from tunesmith.engine.tracking import open_metrics_log
from tunesmith.errors import UserError
from tunesmith.eval.verifiable import VerifiableEval, evaluate_rewards
from tunesmith.generation import Completion, SamplingParams, sample
from tunesmith.losses.grpo import group_advantages, grpo_loss, zero_variance_fraction
from tunesmith.models.adapters import attach_adapter, parameter_counts
from tunesmith.models.load import (
    load_causal_lm,
    load_dtype,
    load_tokenizer,
    pick_device,
    resolve_model,
)
from tunesmith.rewards.registry import Reward, resolve_reward, score_all

__all__ = ["GRPOConfig", "GRPOResult", "run"]


@dataclass
class GRPOResult:
    run_dir: Path
    final_dir: Path
    steps: int
    accuracy_before: float | None
    accuracy_after: float | None
    zero_variance_first: float | None  # mean over the first quarter of the rounds
    zero_variance_last: float | None  # mean over the last quarter
    stats: dict[str, Any] = field(default_factory=dict)  # "history": every round's metrics


@dataclass
class Setup:
    cfg: GRPOConfig
    run_dir: Path
    device: torch.device
    precision: str
    model: Any
    tokenizer: Any
    train: list[PromptRecord]
    val: list[PromptRecord]
    rewards: list[Reward]


@dataclass
class Rollout:
    """One round's samples, scores and the tensors the updates need."""

    completions: list[Completion]
    rewards: torch.Tensor  # [N * G] weighted sum
    by_reward: dict[str, list[float]]
    advantages: torch.Tensor  # [N * G]
    batch: dict[str, torch.Tensor]  # collate_completions, [N * G, T]
    old_logps: torch.Tensor | None  # [N * G, T - 1]; None: equal to the current (inner_steps 1)
    ref_logps: torch.Tensor | None  # None when beta = 0
    gen_seconds: float


# ----------------------------------------------------------------------------- set up


def _build_model(cfg: GRPOConfig, path: Path, device: torch.device) -> Any:
    torch.manual_seed(cfg.train.seed)
    model = load_causal_lm(
        path,
        dtype=load_dtype(cfg.model.dtype, device),
        device=device,
        attn_implementation=cfg.model.attn_implementation,
    )
    if cfg.train.gradient_checkpointing:
        model.gradient_checkpointing_enable(gradient_checkpointing_kwargs={"use_reentrant": False})
    model = attach_adapter(model, cfg, str(path))  # type: ignore[arg-type]
    model.train()
    return model


def _rewards(cfg: GRPOConfig) -> list[Reward]:
    return [Reward(r.key, resolve_reward(r.name, r.args), r.weight) for r in cfg.rewards]


def setup(cfg: GRPOConfig) -> Setup:
    if int(os.environ.get("WORLD_SIZE", "1")) > 1:
        raise UserError("grpo runs on one process (no torchrun)")
    if cfg.train.resume:
        raise UserError("grpo: train.resume is not supported; start a new run")
    rewards = _rewards(cfg)  # a bad reward name fails before anything is loaded
    device = pick_device(cfg.train.device)
    model_path = resolve_model(cfg.model.name_or_path)
    tokenizer = load_tokenizer(model_path)
    d = cfg.data

    def load(paths: list[str]) -> list[PromptRecord]:
        return read_prompts(
            paths, tokenizer, d.template, d.system_prompt, max_prompt_length=d.max_prompt_length
        )

    train = load(list(d.train))
    val = load(list(d.validation))[: d.max_val_examples] if d.validation else []
    run_dir = new_run_dir(cfg)
    model = _build_model(cfg, model_path, device)
    trainable, total = parameter_counts(model)
    files = list(d.train) + list(d.validation or [])
    stats = {"train_prompts": len(train), "val_prompts": len(val)}
    write_run_files(
        run_dir,
        cfg,
        files,
        {"base_model": str(model_path), "data": stats, "trainable_params": trainable},
    )
    print(
        f"[tunesmith] run dir {run_dir}\n[tunesmith] grpo: {len(train)} prompts, "
        f"{len(val)} held out; trainable params {trainable:,} / {total:,}",
        flush=True,
    )
    precision = resolve_precision(cfg.train.precision, device)
    return Setup(cfg, run_dir, device, precision, model, tokenizer, train, val, rewards)


def _prompt_batches(n: int, per_step: int, seed: int) -> Iterator[list[int]]:
    """Record indices, ``per_step`` at a time, reshuffled every epoch."""
    rng = random.Random(seed)
    order: list[int] = []
    while True:
        batch = []
        while len(batch) < per_step:
            if not order:
                order = list(range(n))
                rng.shuffle(order)
            batch.append(order.pop())
        yield batch


# ----------------------------------------------------------------------------- one round


def _logps_no_grad(s: Setup, batch: dict[str, torch.Tensor], reference: bool) -> torch.Tensor:
    """Per-token log-probs of the whole round, micro-batch by micro-batch, without gradients;
    ``reference`` switches the adapter off (the base model is the reference policy)."""
    out = []
    mb = s.cfg.train.micro_batch_size
    with torch.no_grad(), autocast(s.precision, s.device):
        for start in range(0, batch["input_ids"].size(0), mb):
            part = {k: v[start : start + mb].to(s.device) for k, v in batch.items()}
            if reference:
                with s.model.disable_adapter():
                    out.append(token_logps(s.model, part)[0])
            else:
                out.append(token_logps(s.model, part)[0])
    width = batch["input_ids"].size(1) - 1
    return torch.cat([torch.nn.functional.pad(o, (0, width - o.size(1))) for o in out])


def rollout(s: Setup, records: list[PromptRecord], seed: int) -> Rollout:
    """Steps a-c: sample G completions per prompt, score them, advantages, old/ref log-probs."""
    g = s.cfg.grpo
    params = SamplingParams(
        max_new_tokens=g.max_new_tokens,
        temperature=g.temperature,
        top_p=g.top_p,
        top_k=g.top_k,
        seed=seed,
        stop=tuple(g.stop),
    )
    t0 = time.perf_counter()
    prompts = [r.prompt_ids for r in records]
    comps = sample(
        s.model, s.tokenizer, prompts, params, g.num_generations, g.generation_batch_size
    )
    gen_seconds = time.perf_counter() - t0
    texts = [c.text for c in comps]
    prompt_texts = [r.text for r in records for _ in range(g.num_generations)]
    scores = score_all(s.rewards, prompt_texts, texts, reward_fields(records, g.num_generations))
    rewards = torch.tensor(scores.total, dtype=torch.float32)
    advantages = group_advantages(rewards, g.num_generations, scale=g.scale_rewards)
    batch = collate_completions(
        [prompts[c.prompt_index] for c in comps],
        [c.token_ids for c in comps],
        s.tokenizer.pad_token_id,
    )
    old = _logps_no_grad(s, batch, reference=False) if g.inner_steps > 1 else None
    ref = _logps_no_grad(s, batch, reference=True) if g.beta > 0 else None
    return Rollout(comps, rewards, scores.by_reward, advantages, batch, old, ref, gen_seconds)


def update(
    s: Setup, r: Rollout, optimizer: torch.optim.Optimizer, scheduler: Any
) -> dict[str, float]:
    """Step d, once: one optimizer update over the whole round, in micro-batches."""
    g, mb = s.cfg.grpo, s.cfg.train.micro_batch_size
    rows = r.batch["input_ids"].size(0)
    n_tokens = float((r.batch["labels"][:, 1:] != -100).sum())
    num_items = n_tokens if g.loss_norm == "token" else float(rows)
    sums = {"loss": 0.0, "kl": 0.0, "clip_fraction": 0.0}
    for start in range(0, rows, mb):
        part = {k: v[start : start + mb].to(s.device) for k, v in r.batch.items()}
        with autocast(s.precision, s.device):
            logps, mask = token_logps(s.model, part)
        width = logps.size(1)
        old = logps.detach() if r.old_logps is None else r.old_logps[start : start + mb, :width]
        ref = None if r.ref_logps is None else r.ref_logps[start : start + mb, :width]
        out = grpo_loss(
            logps,
            old.to(s.device),
            r.advantages[start : start + mb].to(s.device),
            mask,
            None if ref is None else ref.to(s.device),
            g.beta,
            g.epsilon,
            g.epsilon_high,
            g.loss_norm,
            num_items,
        )
        out.loss.backward()
        share = float(mask.sum()) / max(n_tokens, 1.0)  # token-weighted means over the round
        sums["loss"] += out.loss.item()
        sums["kl"] += out.kl.item() * share
        sums["clip_fraction"] += out.clip_fraction.item() * share
    params = [p for p in s.model.parameters() if p.requires_grad]
    norm = torch.nn.utils.clip_grad_norm_(params, s.cfg.optim.max_grad_norm or math.inf)
    sums["lr"] = scheduler.get_last_lr()[0]
    optimizer.step()
    scheduler.step()
    optimizer.zero_grad(set_to_none=True)
    return {**sums, "grad_norm": float(norm)}


def round_metrics(s: Setup, r: Rollout, updates: list[dict[str, float]]) -> dict[str, float]:
    """Step e: what one round did (the last inner update's loss, KL and clipping)."""
    g = s.cfg.grpo
    lengths = [len(c.token_ids) for c in r.completions]
    gen_tokens = sum(lengths)
    m: dict[str, float] = {
        "reward_mean": float(r.rewards.mean()),
        "reward_std": float(r.rewards.std()) if r.rewards.numel() > 1 else 0.0,
        "zero_variance_groups": zero_variance_fraction(r.rewards, g.num_generations),
        "completion_length": statistics.fmean(lengths),
        "completion_length_max": float(max(lengths)),
        "stopped_fraction": sum(c.finish_reason == "stop" for c in r.completions) / len(lengths),
        "gen_seconds": r.gen_seconds,
        "gen_tokens_per_s": gen_tokens / max(r.gen_seconds, 1e-9),
        **updates[-1],
    }
    for name, values in r.by_reward.items():
        m[f"reward/{name}_mean"] = statistics.fmean(values)
        m[f"reward/{name}_std"] = statistics.stdev(values) if len(values) > 1 else 0.0
    return m


# ----------------------------------------------------------------------------- eval and save


def _evaluate(s: Setup, step: int, log: MetricsLog) -> VerifiableEval | None:
    if not s.val:
        return None
    g = s.cfg.grpo
    result = evaluate_rewards(
        s.model,
        s.tokenizer,
        s.val,
        s.rewards,
        max_new_tokens=g.eval_max_new_tokens or g.max_new_tokens,
        batch_size=g.generation_batch_size,
    )
    means = {f"reward/{k}_mean": v for k, v in result.mean_by_reward.items()}
    log.write(
        {
            "step": step,
            "split": "eval",
            "accuracy": result.accuracy,
            "completion_length": result.mean_length,
            "n": result.n,
            **means,
            "samples": result.samples,
        }
    )
    print(f"[tunesmith] step {step}: held-out accuracy {result.accuracy:.3f} ({result.n})")
    return result


def _save_final(s: Setup) -> Path:
    out = s.run_dir / "final"
    s.tokenizer.chat_template = template_string(s.cfg.data.template, s.tokenizer)
    tmp = ckpt.atomic_dir(out)
    try:
        ckpt.export_model(s.model, tmp, s.tokenizer)
        (tmp / "tunesmith_config.yaml").write_text((s.run_dir / "config.yaml").read_text())
        ckpt.commit_dir(tmp, out)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return out


def _quarter_mean(history: list[dict[str, float]], key: str, last: bool) -> float | None:
    if not history:
        return None
    k = max(1, len(history) // 4)
    part = history[-k:] if last else history[:k]
    return statistics.fmean(h[key] for h in part)


# ----------------------------------------------------------------------------- the loop


def run(cfg: GRPOConfig, skip_preflight: bool = False) -> GRPOResult:
    s = setup(cfg)
    g, steps = (
        cfg.grpo,
        cfg.train.max_steps
        or math.ceil(cfg.train.epochs * len(s.train) / cfg.grpo.prompts_per_step),
    )
    optimizer = build_optimizer(s.model, cfg.optim)
    scheduler = build_scheduler(optimizer, cfg.optim, steps * g.inner_steps)
    log = open_metrics_log(s.run_dir, cfg, True)
    before = _evaluate(s, 0, log) if g.eval_before else None
    batches = _prompt_batches(len(s.train), g.prompts_per_step, cfg.data.seed)
    history: list[dict[str, float]] = []
    bar = tqdm(total=steps, desc="grpo", unit="round", dynamic_ncols=True)
    for step in range(1, steps + 1):
        t0 = time.perf_counter()
        records = [s.train[i] for i in next(batches)]
        r = rollout(s, records, seed=cfg.train.seed * 100_003 + step)
        updates = [update(s, r, optimizer, scheduler) for _ in range(g.inner_steps)]
        m = round_metrics(s, r, updates)
        m["step_seconds"] = time.perf_counter() - t0
        history.append(m)
        if step % cfg.train.log_every == 0 or step == steps:
            log.write({"step": step, "split": "train", **m})
        bar.set_postfix(
            reward=f"{m['reward_mean']:.3f}",
            kl=f"{m['kl']:.4f}",
            zv=f"{m['zero_variance_groups']:.2f}",
        )
        bar.update(1)
        if g.eval_every and step % g.eval_every == 0 and step != steps:
            _evaluate(s, step, log)
    bar.close()
    final = _save_final(s)
    after = _evaluate(s, steps, log)
    result = GRPOResult(
        run_dir=s.run_dir,
        final_dir=final,
        steps=steps,
        accuracy_before=before.accuracy if before else None,
        accuracy_after=after.accuracy if after else None,
        zero_variance_first=_quarter_mean(history, "zero_variance_groups", last=False),
        zero_variance_last=_quarter_mean(history, "zero_variance_groups", last=True),
        stats={"history": history},
    )
    log.write({"step": steps, "split": "final", **_summary(result)})
    log.close()
    return result


def _summary(r: GRPOResult) -> dict[str, Any]:
    return {
        "accuracy_before": r.accuracy_before,
        "accuracy_after": r.accuracy_after,
        "zero_variance_first_quarter": r.zero_variance_first,
        "zero_variance_last_quarter": r.zero_variance_last,
    }
