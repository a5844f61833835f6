"""Reward-model training on preference pairs (Bradley-Terry), LoRA or full.

The algorithm, top to bottom:
  1. set up: a scalar head over the backbone (a causal LM, or an encoder such as
     all-MiniLM-L6-v2), LoRA with the head trained in full (peft ``modules_to_save``) or every
     weight; preference pairs read and encoded as ``prompt + chosen`` / ``prompt + rejected``;
  2. loop: each optimizer step scores ``grad_accum`` micro-batches of pairs (both sides in one
     forward), takes the pairwise loss -log sigmoid(r_c - r_r - m), backprops, clips, steps;
  3. every ``eval_every`` steps (and before the first and after the last): held-out pairwise
     accuracy (chance = 50%) and loss;
  4. save ``final/``: weights, tokenizer and ``tunesmith_reward.json``, which
     :func:`tunesmith.models.reward_head.load_reward_model` reloads.
"""

from __future__ import annotations

import math
import random
import shutil
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from tqdm.auto import tqdm

from tunesmith.config import LoraSection
from tunesmith.config.reward import RewardConfig
from tunesmith.data.dataset import data_files, step_batches, write_jsonl
from tunesmith.data.preference import PreferencePair, load_preference_pairs
from tunesmith.engine import checkpoint as ckpt
from tunesmith.engine.metrics_log import MetricsLog
from tunesmith.engine.optim import build_optimizer, build_scheduler
from tunesmith.engine.precision import autocast, resolve_precision
from tunesmith.engine.rundir import new_run_dir, write_run_files
from tunesmith.engine.tracking import open_metrics_log
from tunesmith.engine.trainable import total_steps
from tunesmith.errors import UserError
from tunesmith.losses.bradley_terry import bradley_terry_loss, pairwise_accuracy
from tunesmith.models.adapters import check_rank, lora_targets, match_targets, parameter_counts
from tunesmith.models.load import load_dtype, pick_device
from tunesmith.models.reward_head import (
    RewardModel,
    backbone_kind,
    load_head_model,
    load_tokenizer_for,
    pad_batch,
    resolve_backbone,
)

HEADS = ("score", "classifier")  # the scalar heads: trained in full, never LoRA-adapted


@dataclass
class RewardResult:
    run_dir: Path
    final_dir: Path
    steps: int
    last_train_loss: float | None
    initial_val_accuracy: float | None
    val_accuracy: float | None
    val_loss: float | None
    stats: dict[str, Any] = field(default_factory=dict)


@dataclass
class Pairs:
    """Encoded sides of preference pairs: chosen[i] and rejected[i] belong to pairs[i]."""

    pairs: list[PreferencePair]
    chosen: list[dict[str, list[int]]]
    rejected: list[dict[str, list[int]]]


# ----------------------------------------------------------------------------- set up


def attach_reward_lora(net: Any, cfg: LoraSection, kind: str) -> Any:
    """LoRA on the backbone (peft task SEQ_CLS), the scalar head trained in full."""
    from peft import LoraConfig, get_peft_model

    targets = lora_targets(cfg.target_modules)
    matched = match_targets(net, targets, "lora.target_modules")
    check_rank({n: m for n, m in matched.items() if n.rsplit(".", 1)[-1] not in HEADS}, cfg.r)
    config = LoraConfig(
        r=cfg.r,
        lora_alpha=cfg.alpha,
        lora_dropout=cfg.dropout,
        target_modules=targets,
        use_rslora=cfg.use_rslora or kind == "rslora",
        use_dora=kind == "dora",
        task_type="SEQ_CLS",  # peft adds the head (score / classifier) to modules_to_save
    )
    return get_peft_model(net, config)


def build_reward_model(cfg: RewardConfig, device: torch.device) -> RewardModel:
    path = resolve_backbone(cfg.model.name_or_path)
    tokenizer = load_tokenizer_for(path)
    torch.manual_seed(cfg.train.seed)  # the head and LoRA's A matrices are drawn here
    net = load_head_model(path, tokenizer.pad_token_id, load_dtype(cfg.model.dtype, device))
    if cfg.adapter.type != "full":
        net = attach_reward_lora(net, cfg.lora, cfg.adapter.type)
    net = net.to(device)
    net.train()
    return RewardModel(
        net=net,
        tokenizer=tokenizer,
        kind=backbone_kind(path),
        template=cfg.data.template,
        max_length=cfg.data.max_length,
        base_model=cfg.model.name_or_path,
    )


def _read(paths: list[str], cfg: RewardConfig, rejects: list[dict[str, Any]]) -> list[Any]:
    out: list[PreferencePair] = []
    for path in paths:
        pairs, bad = load_preference_pairs(path, split=cfg.data.split, on_error=cfg.data.on_error)
        out.extend(pairs)
        rejects.extend(bad)
    return out


def read_pairs(
    cfg: RewardConfig,
) -> tuple[list[PreferencePair], list[PreferencePair], list[dict[str, Any]]]:
    """(train, held-out, rejects): ``data.validation`` or a fixed-seed ``val_fraction``."""
    rejects: list[dict[str, Any]] = []
    train_paths = [p for spec in cfg.data.train for p in _paths(spec.path)]
    train = _read(train_paths, cfg, rejects)
    if cfg.data.validation is not None:
        val = _read(_paths(cfg.data.validation), cfg, rejects)
    else:
        order = list(range(len(train)))
        random.Random(cfg.data.seed).shuffle(order)
        n_val = round(cfg.data.val_fraction * len(train)) if len(train) > 1 else 0
        if cfg.data.max_val_examples is not None:
            n_val = min(n_val, cfg.data.max_val_examples)
        held = set(order[:n_val])
        val = [p for i, p in enumerate(train) if i in held]
        train = [p for i, p in enumerate(train) if i not in held]
    if not train:
        raise UserError(f"{', '.join(train_paths)}: no usable preference pairs to train on")
    return train, val, rejects


def _paths(value: str | list[str]) -> list[str]:
    return [value] if isinstance(value, str) else list(value)


def encode_pairs(rm: RewardModel, pairs: list[PreferencePair]) -> Pairs:
    chosen = [rm.encode(p.prompt, p.chosen) for p in pairs]
    rejected = [rm.encode(p.prompt, p.rejected) for p in pairs]
    return Pairs(pairs, chosen, rejected)


# ----------------------------------------------------------------------------- steps


def pair_rewards(rm: RewardModel, data: Pairs, idx: list[int]) -> tuple[torch.Tensor, torch.Tensor]:
    """Rewards of the chosen and rejected sides of pairs ``idx``, both in one forward: [k], [k]."""
    items = [data.chosen[i] for i in idx] + [data.rejected[i] for i in idx]
    rewards = rm.rewards(pad_batch(items, rm.tokenizer.pad_token_id))
    return rewards[: len(idx)], rewards[len(idx) :]


def train_step(
    rm: RewardModel,
    data: Pairs,
    micro: list[list[int]],
    opt: torch.optim.Optimizer,
    sched: Any,
    cfg: RewardConfig,
    precision: str,
) -> dict[str, float]:
    """One optimizer step: the pair-mean loss over all micro-batches of the step."""
    n_step = sum(len(mb) for mb in micro)
    total, correct, margin = 0.0, 0.0, 0.0
    for mb in micro:
        with autocast(precision, rm.device):
            r_c, r_r = pair_rewards(rm, data, mb)
        loss = bradley_terry_loss(r_c, r_r, cfg.reward.margin)
        (loss * len(mb) / n_step).backward()
        total += float(loss.detach()) * len(mb)
        correct += pairwise_accuracy(r_c.detach(), r_r.detach()) * len(mb)
        margin += float((r_c - r_r).detach().sum())
    params = [p for p in rm.net.parameters() if p.requires_grad]
    norm = torch.nn.utils.clip_grad_norm_(params, cfg.optim.max_grad_norm or math.inf)
    lr = sched.get_last_lr()[0]
    opt.step()
    sched.step()
    opt.zero_grad(set_to_none=True)
    return {
        "loss": total / n_step,
        "accuracy": correct / n_step,
        "reward_margin": margin / n_step,
        "grad_norm": float(norm),
        "lr": lr,
    }


@torch.no_grad()
def evaluate(rm: RewardModel, data: Pairs, cfg: RewardConfig) -> dict[str, float]:
    """Held-out pairwise accuracy (chance 0.5), loss and mean reward margin."""
    r_c = torch.tensor(rm.score_encoded(data.chosen, cfg.reward.eval_batch_size))
    r_r = torch.tensor(rm.score_encoded(data.rejected, cfg.reward.eval_batch_size))
    return {
        "val_accuracy": pairwise_accuracy(r_c, r_r),
        "val_loss": float(bradley_terry_loss(r_c, r_r, cfg.reward.margin)),
        "val_reward_margin": float((r_c - r_r).mean()),
        "val_pairs": float(len(data.pairs)),
    }


def save_final(rm: RewardModel, run_dir: Path) -> Path:
    final = run_dir / "final"
    tmp = ckpt.atomic_dir(final)
    try:
        rm.save(tmp)
        (tmp / "tunesmith_config.yaml").write_text((run_dir / "config.yaml").read_text())
        ckpt.commit_dir(tmp, final)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return final


# ----------------------------------------------------------------------------- the loop


def _setup(cfg: RewardConfig) -> tuple[Path, RewardModel, Pairs, Pairs, dict[str, Any]]:
    device = pick_device(cfg.train.device)
    train_pairs, val_pairs, rejects = read_pairs(cfg)
    rm = build_reward_model(cfg, device)
    train, val = encode_pairs(rm, train_pairs), encode_pairs(rm, val_pairs)
    run_dir = new_run_dir(cfg)
    trainable, total = parameter_counts(rm.net)
    stats = {
        "train_pairs": len(train.pairs),
        "val_pairs": len(val.pairs),
        "rejects": len(rejects),
        "backbone": rm.kind,
    }
    write_jsonl(run_dir / "rejects.jsonl", rejects)
    write_run_files(
        run_dir,
        cfg,
        data_files(cfg.data),
        {"data": stats, "trainable_params": trainable, "total_params": total},
    )
    print(
        f"[tunesmith] run dir {run_dir}\n[tunesmith] reward model ({rm.kind} backbone): "
        f"trainable params {trainable:,} / {total:,}; data {stats}",
        flush=True,
    )
    return run_dir, rm, train, val, stats


def _maybe_eval(
    rm: RewardModel, val: Pairs, cfg: RewardConfig, step: int, log: MetricsLog
) -> dict[str, float] | None:
    if not val.pairs:
        return None
    m = evaluate(rm, val, cfg)
    log.write({"step": step, "split": "val", **m})
    return m


def run(cfg: RewardConfig, skip_preflight: bool = False) -> RewardResult:
    run_dir, rm, train, val, stats = _setup(cfg)
    steps = total_steps(cfg.train, len(train.pairs))
    opt = build_optimizer(rm.net, cfg.optim)
    sched = build_scheduler(opt, cfg.optim, steps)
    precision = resolve_precision(cfg.train.precision, rm.device)
    log = open_metrics_log(run_dir, cfg, True)
    first = _maybe_eval(rm, val, cfg, 0, log)
    last_val = first
    batches = step_batches(
        len(train.pairs), cfg.train.seed, cfg.train.micro_batch_size, cfg.train.grad_accum
    )
    bar = tqdm(total=steps, desc="reward", unit="step", dynamic_ncols=True)
    m: dict[str, float] = {}
    for step in range(1, steps + 1):
        t0 = time.perf_counter()
        m = train_step(rm, train, next(batches), opt, sched, cfg, precision)
        m["step_seconds"] = time.perf_counter() - t0
        if step % cfg.train.log_every == 0 or step == steps:
            log.write({"step": step, "split": "train", **m})
        bar.set_postfix(loss=f"{m['loss']:.4f}", acc=f"{m['accuracy']:.2f}")
        bar.update(1)
        every = cfg.train.eval_every
        if every is not None and step % every == 0 and step != steps:
            last_val = _maybe_eval(rm, val, cfg, step, log)
    bar.close()
    last_val = _maybe_eval(rm, val, cfg, steps, log)
    final = save_final(rm, run_dir)
    log.close()
    return RewardResult(
        run_dir=run_dir,
        final_dir=final,
        steps=steps,
        last_train_loss=m.get("loss"),
        initial_val_accuracy=first["val_accuracy"] if first else None,
        val_accuracy=last_val["val_accuracy"] if last_val else None,
        val_loss=last_val["val_loss"] if last_val else None,
        stats=stats,
    )
