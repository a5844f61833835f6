"""GRPO with verifiable rewards (Shao et al. 2024, DeepSeekMath) on a LoRA adapter (QLoRA too).

The algorithm, top to bottom:
  1. set up: the base model (quantized when ``model.quantization`` asks) with a LoRA adapter (the
     reference policy is the same model with the adapter switched off: no second copy), the
     prompt records (held-out prompts by ``data/split.py``'s rule) and the reward functions;
  2. held-out accuracy of the untrained policy (greedy replies scored by the first reward);
  3. loop, one round per step (round s takes the prompts ``step_batches`` gives step s, so the
     data position is the step itself; under torchrun each process takes an equal share):
     a. sample ``num_generations`` completions of each prompt with the current policy; prompt k
        of round s draws from its own seed ``derive_seed(train.seed, s, k)``, so a round's
        samples do not depend on the number of processes, nor on a resume;
     b. score every completion with every reward; sum with weights; group-relative advantages
        A = (r - mean_group) / (std_group + eps) (no division with ``scale_rewards: false``);
     c. per-token log-probs of the sampling policy (pi_old) and of the reference, once;
     d. ``inner_steps`` optimizer updates of the clipped surrogate + beta * KL (losses/grpo.py),
        each over micro-batches normalised by the whole round's token (or completion) count,
        summed over every process;
     e. metrics.jsonl (every process's rollouts gathered): reward mean/std per function, every
        reward, a hash of the completions, zero-variance groups, completion length, KL, clipping;
     f. every ``train.eval_every`` rounds held-out accuracy (best/, early stopping); every
        ``train.save_every`` rounds a checkpoint (adapter, optimizer, scheduler, RNGs, state);
  4. ``final/`` (adapter + tokenizer) and held-out accuracy after training.
"""

from __future__ import annotations

import hashlib
import json
import math
import statistics
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from transformers import AutoConfig

from tunesmith.checks import PreflightError, failures, model_context_length, preflight_prompts
from tunesmith.config.grpo import GRPOConfig
from tunesmith.data.completion_batches import collate_completions
from tunesmith.data.dataset import step_batches, write_jsonl
from tunesmith.data.prompts import PromptRecord, read_prompt_section, reward_fields
from tunesmith.data.split import held_out_note
from tunesmith.data.templates import template_string
from tunesmith.engine.distributed import (
    all_reduce_sum,
    barrier,
    gather_objects,
    grad_sync,
    shard,
    wrap_for_training,
)
from tunesmith.engine.precision import autocast
from tunesmith.engine.run import OnRun, Run
from tunesmith.engine.token_logps import token_logps
from tunesmith.engine.trainable import build_trainable_model, due
from tunesmith.errors import UserError
from tunesmith.eval.verifiable import VerifiableEval, evaluate_rewards, merge_evals
from tunesmith.generation import Completion, SamplingParams, derive_seed, sample
from tunesmith.losses.grpo import group_advantages, grpo_loss, zero_variance_fraction
from tunesmith.losses.sft import IGNORE_INDEX
from tunesmith.models.adapters import parameter_counts
from tunesmith.models.load import load_tokenizer, resolve_model
from tunesmith.models.quantization import base_weight_bytes, quantization_config
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
    stopped_early: bool = False
    stats: dict[str, Any] = field(default_factory=dict)


class PolicyLogps(torch.nn.Module):
    """``batch -> (per-token log-probs [B, T-1], mask)`` as a module, so that DDP sees the
    forward (and averages the adapter's gradients across processes)."""

    def __init__(self, model: Any):
        super().__init__()
        self.model = model

    def forward(self, batch: dict[str, torch.Tensor]) -> tuple[torch.Tensor, torch.Tensor]:
        return token_logps(self.model, batch)


@dataclass
class Setup(OnRun):
    cfg: GRPOConfig
    run: Run
    model: Any  # the peft model: sampling, reference and no-grad passes call it directly
    policy: Any  # PolicyLogps around it, DDP-wrapped across processes: the updates call it
    tokenizer: Any
    train: list[PromptRecord]
    val: list[PromptRecord]
    rewards: list[Reward]
    total_steps: int


@dataclass
class Rollout:
    """One round's samples, scores and the tensors the updates need (this process's share), and
    what every process sampled (``everyone``: rewards, per-reward scores, lengths, texts)."""

    completions: list[Completion]
    advantages: torch.Tensor  # [n * G]
    batch: dict[str, torch.Tensor]  # collate_completions, [n * G, T]
    old_logps: torch.Tensor | None  # [n * G, T - 1]; None: equal to the current (inner_steps 1)
    ref_logps: torch.Tensor | None  # None when beta = 0
    gen_seconds: float
    everyone: dict[str, Any]


# ----------------------------------------------------------------------------- set up


def _rewards(cfg: GRPOConfig) -> list[Reward]:
    return [Reward(r.key, resolve_reward(r.name, r.args), r.weight) for r in cfg.rewards]


def _read_prompts(
    cfg: GRPOConfig, tokenizer: Any, rejects: list[dict[str, Any]]
) -> tuple[list[PromptRecord], list[PromptRecord]]:
    """Training and held-out prompts: the validation files, else ``val_fraction`` of train."""
    return read_prompt_section(cfg.data, tokenizer, rejects)


def setup(cfg: GRPOConfig, skip_preflight: bool = False) -> Setup:
    quantization_config(cfg.model.quantization, torch.float32)  # backend missing: fail first
    rewards = _rewards(cfg)  # a bad reward name fails before anything is made
    run = Run.start(cfg)
    info, rejects = run.dist, []
    with run.preparing():
        if cfg.grpo.prompts_per_step % info.world:
            raise UserError(
                f"grpo.prompts_per_step={cfg.grpo.prompts_per_step} does not split evenly over "
                f"{info.world} processes: make it a multiple of the process count"
            )
        if info.is_main:  # a GGUF is converted once, by rank 0, before the others read it
            resolve_model(cfg.model.name_or_path)
        barrier(info)
        model_path = resolve_model(cfg.model.name_or_path)
        tokenizer = load_tokenizer(model_path)
        train, val = _read_prompts(cfg, tokenizer, rejects)
        context = model_context_length(AutoConfig.from_pretrained(str(model_path)))
        checks = preflight_prompts(train, tokenizer, cfg, rewards=rewards, context_length=context)
        if not skip_preflight and (bad := failures(checks)):
            raise PreflightError(bad)  # `tunesmith doctor` explains; --skip-preflight overrides
        model = build_trainable_model(cfg, model_path, run.device)  # type: ignore[arg-type]
    if info.is_main:
        write_jsonl(run.run_dir / "rejects.jsonl", rejects)
        if note := held_out_note(len(val), "prompts"):
            print(note, flush=True)
    trainable, total = parameter_counts(model)
    stats = {"train_prompts": len(train), "val_prompts": len(val), "rejected": len(rejects)}
    run.announce(
        list(cfg.data.train) + list(cfg.data.validation or []),
        {
            "base_model": str(model_path),
            "data": stats,
            "trainable_params": trainable,
            "total_params": total,
            "base_weight_bytes": base_weight_bytes(model),
            "quantization": cfg.model.quantization,
        },
        f"grpo: {len(train)} prompts, {len(val)} held out; trainable params {trainable:,} / "
        f"{total:,} (quantization {cfg.model.quantization}); processes {info.world}",
    )
    policy = wrap_for_training(PolicyLogps(model), model, info, run.device, "ddp")
    per_round = cfg.grpo.prompts_per_step
    steps = cfg.train.max_steps or max(1, math.ceil(cfg.train.epochs * len(train) / per_round))
    return Setup(cfg, run, model, policy, tokenizer, train, val, rewards, steps)


# ----------------------------------------------------------------------------- one round


def _logps_no_grad(s: Setup, batch: dict[str, torch.Tensor], reference: bool) -> torch.Tensor:
    """Per-token log-probs of the whole share, micro-batch by micro-batch, without gradients;
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


def rollout(s: Setup, indices: list[int], round_no: int) -> Rollout:
    """Steps a-c for this process's share of the round's prompts ``indices``."""
    g = s.cfg.grpo
    params = SamplingParams(g.max_new_tokens, g.temperature, g.top_p, g.top_k, stop=tuple(g.stop))
    mine = shard(list(enumerate(indices)), s.dist)  # (position in the round, record index)
    records = [s.train[i] for _, i in mine]
    prompts = [r.prompt_ids for r in records]
    seeds = [derive_seed(s.cfg.train.seed, round_no, k) for k, _ in mine]
    t0 = time.perf_counter()
    comps = sample(
        s.model, s.tokenizer, prompts, params, g.num_generations, g.generation_batch_size, seeds
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
    share = {
        "rewards": scores.total,
        "by_reward": scores.by_reward,
        "lengths": [len(c.token_ids) for c in comps],
        "stopped": [c.finish_reason == "stop" for c in comps],
        "texts": texts,
        "token_ids": [c.token_ids for c in comps],
    }
    parts = gather_objects(share, s.dist)  # rank order = round order (contiguous shares)
    everyone = {
        k: [x for p in parts for x in p[k]] for k in ("rewards", "lengths", "stopped", "texts")
    }
    everyone["by_reward"] = {
        k: [x for p in parts for x in p["by_reward"][k]] for k in share["by_reward"]
    }
    everyone["hash"] = hashlib.sha256(
        json.dumps([[x for p in parts for x in p["token_ids"]], everyone["texts"]]).encode()
    ).hexdigest()
    return Rollout(comps, advantages, batch, old, ref, gen_seconds, everyone)


def update(
    s: Setup, r: Rollout, optimizer: torch.optim.Optimizer, scheduler: Any
) -> dict[str, float]:
    """Step d, once: one optimizer update over the whole round, in micro-batches. Every
    micro-batch loss is divided by the round's token (or completion) count over all processes;
    DDP averages the gradients over processes, so each loss is scaled by the process count."""
    g, mb, info, device = s.cfg.grpo, s.cfg.train.micro_batch_size, s.dist, s.device
    rows = r.batch["input_ids"].size(0)
    n_tokens = all_reduce_sum(float((r.batch["labels"][:, 1:] != IGNORE_INDEX).sum()), info, device)
    num_items = n_tokens if g.loss_norm == "token" else float(rows * info.world)
    sums = {"loss": 0.0, "kl": 0.0, "clip_fraction": 0.0}
    starts = list(range(0, rows, mb))
    for i, start in enumerate(starts):
        part = {k: v[start : start + mb].to(device) for k, v in r.batch.items()}
        with grad_sync(s.policy, on=i == len(starts) - 1):
            with autocast(s.precision, device):
                logps, mask = s.policy(part)
            width = logps.size(1)
            old = logps.detach() if r.old_logps is None else r.old_logps[start : start + mb, :width]
            ref = None if r.ref_logps is None else r.ref_logps[start : start + mb, :width]
            out = grpo_loss(
                logps,
                old.to(device),
                r.advantages[start : start + mb].to(device),
                mask,
                None if ref is None else ref.to(device),
                g.beta,
                g.epsilon,
                g.epsilon_high,
                g.loss_norm,
                num_items,
            )
            (out.loss * info.world).backward()
        tokens = float(mask.sum())  # token-weighted means over the round
        sums["loss"] += out.loss.item()
        sums["kl"] += out.kl.item() * tokens
        sums["clip_fraction"] += out.clip_fraction.item() * tokens
    params = [p for p in s.model.parameters() if p.requires_grad]
    tail = s.run.optimizer_step(params, optimizer, scheduler)
    sums = {k: all_reduce_sum(v, info, device) for k, v in sums.items()}
    sums["kl"] /= max(n_tokens, 1.0)
    sums["clip_fraction"] /= max(n_tokens, 1.0)
    return {**sums, **tail}


def round_metrics(s: Setup, r: Rollout, updates: list[dict[str, float]]) -> dict[str, Any]:
    """Step e: what one round did over every process (the last inner update's loss, KL and
    clipping), with every reward and a hash of every completion (prompt-major, round order)."""
    e = r.everyone
    rewards = torch.tensor(e["rewards"], dtype=torch.float32)
    lengths = e["lengths"]
    m: dict[str, Any] = {
        "reward_mean": float(rewards.mean()),
        "reward_std": float(rewards.std()) if rewards.numel() > 1 else 0.0,
        "zero_variance_groups": zero_variance_fraction(rewards, s.cfg.grpo.num_generations),
        "completion_length": statistics.fmean(lengths),
        "completion_length_max": float(max(lengths)),
        "stopped_fraction": sum(e["stopped"]) / len(lengths),
        "gen_seconds": r.gen_seconds,
        "gen_tokens_per_s": sum(lengths) / max(r.gen_seconds, 1e-9),  # all processes
        **updates[-1],
    }
    for name, values in e["by_reward"].items():
        m[f"reward/{name}_mean"] = statistics.fmean(values)
        m[f"reward/{name}_std"] = statistics.stdev(values) if len(values) > 1 else 0.0
    m["rewards"] = e["rewards"]
    m["completions_sha256"] = e["hash"]
    return m


# ----------------------------------------------------------------------------- eval and save


def _save_export(s: Setup, out: Path) -> Path:
    """A peft adapter directory with the tokenizer and chat template; every rank calls it."""
    s.tokenizer.chat_template = template_string(s.cfg.data.template, s.tokenizer)
    return s.run.export_model(out, s.model, s.tokenizer, s.policy)


def _evaluate(s: Setup) -> VerifiableEval | None:
    """Held-out accuracy: each process greedily answers its share, the shares are joined."""
    if not s.val:
        return None
    g, info, n = s.cfg.grpo, s.dist, len(s.val)
    part = evaluate_rewards(
        s.model,
        s.tokenizer,
        s.val[info.rank * n // info.world : (info.rank + 1) * n // info.world],
        s.rewards,
        max_new_tokens=g.eval_max_new_tokens or g.max_new_tokens,
        batch_size=g.generation_batch_size,
    )
    result = merge_evals(gather_objects(part, info))
    step = s.run.state.step
    means = {f"reward/{k}_mean": v for k, v in result.mean_by_reward.items()}
    s.run.write(
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
    if info.is_main:
        print(f"[tunesmith] step {step}: held-out accuracy {result.accuracy:.3f} ({result.n})")
    return result


def _quarter_mean(values: list[float], last: bool) -> float | None:
    if not values:
        return None
    k = max(1, len(values) // 4)
    return statistics.fmean(values[-k:] if last else values[:k])


def _report(s: Setup, m: dict[str, Any], bar: Any) -> None:
    step = s.run.state.step
    s.run.state.method.setdefault("zero_variance", []).append(m["zero_variance_groups"])
    if step % s.cfg.train.log_every == 0 or step == s.total_steps:
        s.run.write({"step": step, "split": "train", **m})
    bar.set_postfix(
        reward=f"{m['reward_mean']:.3f}", kl=f"{m['kl']:.4f}", zv=f"{m['zero_variance_groups']:.2f}"
    )
    bar.update(1)


# ----------------------------------------------------------------------------- the loop


def run(cfg: GRPOConfig, skip_preflight: bool = False) -> GRPOResult:
    """Train; ``skip_preflight`` is the CLI's ``--skip-preflight`` (the prompt/reward checks)."""
    s = setup(cfg, skip_preflight)
    run, g = s.run, cfg.grpo
    optimizer, scheduler = run.optimizer(s.model, s.total_steps * g.inner_steps, s.policy)
    state = run.state
    run.open_log()
    if state.step == 0 and g.eval_before and (before := _evaluate(s)) is not None:
        state.method["accuracy_before"] = before.accuracy
    # The data position is the step: round s takes step_batches' s-th batch of prompt indices.
    batches = step_batches(len(s.train), cfg.data.seed, g.prompts_per_step, 1, state.step)
    bar = run.progress(s.total_steps, "grpo", "round")
    stopped_early, last_eval = False, None
    while state.step < s.total_steps and not stopped_early:
        t0 = time.perf_counter()
        (indices,) = next(batches)
        r = rollout(s, indices, round_no=state.step + 1)
        updates = [update(s, r, optimizer, scheduler) for _ in range(g.inner_steps)]
        state.step += 1
        m = round_metrics(s, r, updates)
        m["step_seconds"] = time.perf_counter() - t0
        _report(s, m, bar)
        if due(state.step, cfg.train.eval_every, s.total_steps) and s.val:
            last_eval = (state.step, _evaluate(s))
            stopped_early = run.evaluated(
                last_eval[1].accuracy if last_eval[1] else None,
                lambda out: _save_export(s, out),
                higher_is_better=True,
            )
        if due(state.step, cfg.train.save_every, s.total_steps):
            run.checkpoint(s.model, optimizer, scheduler, s.policy)
        run.crash_point()
    bar.close()
    final = _save_export(s, run.run_dir / "final")
    after = last_eval[1] if last_eval and last_eval[0] == state.step else _evaluate(s)
    zero_var = state.method.get("zero_variance", [])
    result = GRPOResult(
        run_dir=run.run_dir,
        final_dir=final,
        steps=state.step,
        accuracy_before=state.method.get("accuracy_before"),
        accuracy_after=after.accuracy if after else None,
        zero_variance_first=_quarter_mean(zero_var, last=False),
        zero_variance_last=_quarter_mean(zero_var, last=True),
        stopped_early=stopped_early,
        stats={"train_prompts": len(s.train), "val_prompts": len(s.val)},
    )
    run.write({"step": state.step, "split": "final", **_summary(result)})
    run.finish()
    return result


def _summary(r: GRPOResult) -> dict[str, Any]:
    return {
        "accuracy_before": r.accuracy_before,
        "accuracy_after": r.accuracy_after,
        "zero_variance_first_quarter": r.zero_variance_first,
        "zero_variance_last_quarter": r.zero_variance_last,
    }
