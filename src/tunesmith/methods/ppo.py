"""PPO-based RLHF (Ziegler et al. 2019; Ouyang et al. 2022) against a trained reward model.

The algorithm, top to bottom, once per iteration (``train.max_steps`` iterations):
  1. rollout: sample one completion for each of ``ppo.prompts_per_iteration`` prompts from the
     policy (LoRA on the base model); score each with the reward model (``ppo.reward_model``);
  2. per token: log-probabilities under the policy and under the reference (the same model with
     its adapters disabled), values from the value head (a linear layer on the policy's last
     hidden state, sharing the LoRA backbone); rewards = -beta * (logp - ref_logp) on every
     token plus the score on the last (losses/ppo.py: kl_penalty_rewards);
  3. GAE advantages and returns (gamma, lambda) per completion; advantages whitened over the
     whole iteration;
  4. ``ppo.epochs`` passes over shuffled minibatches: clipped policy loss + vf_coef x clipped
     value loss, one AdamW step per minibatch;
  5. the adaptive KL controller moves beta towards ``ppo.kl_target`` (or beta stays fixed);
  6. every ``train.eval_every`` iterations and after the last (and once before the first, as the
     baseline): greedy replies to the held-out prompts (``data.validation``, else the shared
     held-out split of the training prompts), scored by the reward model; their mean reward
     (higher is better) picks ``best/`` and drives early stopping.
Dropout is off throughout (the model stays in eval mode), so the first minibatch's ratio is 1.

Under ``torchrun`` each rank samples, scores and runs GAE on its share of the iteration's prompts;
the shares are then gathered so every rank holds the whole rollout (whitening, metrics and the
KL controller see global values), each minibatch is split across the ranks and DDP averages the
gradients of the loss, scaled so that the average is the minibatch's token mean. Prompt k of
iteration s is sampled with its own seed ``derive_seed(train.seed, s, k)`` and the minibatch
order is seeded by ``(train.seed, s)``: two processes follow one process's trajectory, and a
resumed run its uninterrupted one. Each rank answers a contiguous share of the held-out
prompts and the scores are gathered, so every rank sees the same evaluation. ``final/`` and
``best/`` hold the policy adapter (loads with peft), the tokenizer and ``value_head.safetensors``.
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
from safetensors.torch import save_file

from tunesmith.checks.checks import failures
from tunesmith.checks.preflight import PreflightError
from tunesmith.checks.prompts import check_reward_model, model_context_length, preflight_prompts
from tunesmith.config.ppo import PPOConfig
from tunesmith.data.completion_batches import collate_prompt_response
from tunesmith.data.dataset import step_batches, write_jsonl
from tunesmith.data.prompts import PromptRecord, read_prompt_section
from tunesmith.data.split import held_out_note
from tunesmith.data.templates import encode_prompt, template_string
from tunesmith.engine.distributed import (
    all_reduce_sum,
    barrier,
    gather_objects,
    shard,
    wrap_for_training,
)
from tunesmith.engine.optim import build_optimizer, build_scheduler
from tunesmith.engine.precision import autocast
from tunesmith.engine.run import OnRun, Run
from tunesmith.engine.trainable import due
from tunesmith.errors import UserError
from tunesmith.generation import Completion, SamplingParams, derive_seed, sample
from tunesmith.losses.ppo import (
    adaptive_kl_update,
    clipped_policy_loss,
    clipped_value_loss,
    entropy_from_logits,
    explained_variance,
    gae,
    kl_penalty_rewards,
    whiten,
)
from tunesmith.models.adapters import attach_lora, parameter_counts
from tunesmith.models.load import load_causal_lm, load_dtype, load_tokenizer, resolve_model
from tunesmith.models.reward_head import RewardModel, RewardModelError, load_reward_model

MINIBATCH_STREAM = -1  # derive_seed(seed, iteration, k) with k >= 0 seeds prompt k's sampling


@dataclass
class PPOResult:
    run_dir: Path
    final_dir: Path
    steps: int
    reward_first: float | None  # rollout reward of the first and last iterations
    reward_last: float | None
    kl_last: float | None
    val_reward_first: float | None = None  # held-out greedy reward before training
    val_reward_last: float | None = None  # ... after the last iteration
    best_val_reward: float | None = None  # the best one of train.eval_every's (best/)
    best_step: int | None = None
    stopped_early: bool = False
    stats: dict[str, Any] = field(default_factory=dict)


class PolicyValue(torch.nn.Module):
    """The policy and its value head as one module: what the update step calls (DDP-wrapped
    under torchrun, so both gradients are averaged across ranks)."""

    def __init__(self, model: Any, head: torch.nn.Linear, precision: str, temperature: float):
        super().__init__()
        self.model, self.head = model, head
        self.precision, self.temperature = precision, temperature

    def forward(
        self, batch: dict[str, torch.Tensor], values: bool = True
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor | None]:
        """(logprobs [B, L] of the response tokens, logits [B, L, V], values [B, L] or None) of a
        :func:`~tunesmith.data.completion_batches.collate_prompt_response` batch [B, P + L].
        Position P - 1 + t predicts response token t; positions come from the mask (left
        padding)."""
        ids, mask = batch["input_ids"], batch["attention_mask"]
        width = ids.size(1) - batch["response_mask"].size(1)
        positions = (mask.cumsum(-1) - 1).clamp(min=0)
        with autocast(self.precision, ids.device):
            out = self.model(
                input_ids=ids,
                attention_mask=mask,
                position_ids=positions,
                output_hidden_states=values,
            )
        logits = out.logits[:, width - 1 : -1].float() / self.temperature
        logp = torch.log_softmax(logits, -1).gather(-1, ids[:, width:].unsqueeze(-1)).squeeze(-1)
        if not values:
            return logp, logits, None
        return logp, logits, self.head(out.hidden_states[-1][:, width - 1 : -1].float()).squeeze(-1)


@dataclass
class Setup(OnRun):
    cfg: PPOConfig
    run: Run
    model: Any  # the peft policy
    head: torch.nn.Linear  # the value head
    policy: PolicyValue  # model + head, as the rollout calls it
    step_module: torch.nn.Module  # the same, DDP-wrapped across ranks: what the update calls
    tokenizer: Any
    rm: RewardModel
    prompts: list[PromptRecord]  # training prompts
    val: list[PromptRecord]  # held-out prompts
    iterations: int


@dataclass
class Rollout:
    """One iteration's completions, every rank's share in rank order (so the same on all ranks).

    Per token tensors are [N, L], right-padded over the response positions."""

    prompts: list[list[int]]  # N prompt token ids
    responses: list[list[int]]  # N sampled completions (token ids)
    mask: torch.Tensor  # 1 on real response tokens
    logprobs: torch.Tensor
    values: torch.Tensor
    advantages: torch.Tensor
    returns: torch.Tensor
    stats: dict[str, Any]


# ----------------------------------------------------------------------------- set up


def check_world(cfg: PPOConfig, world: int) -> None:
    """Every rank takes an equal share of each iteration's prompts and of each minibatch."""
    for name, value in (
        ("ppo.prompts_per_iteration", cfg.ppo.prompts_per_iteration),
        ("ppo.minibatch_size", cfg.ppo.minibatch_size),
    ):
        if value % world:
            raise UserError(
                f"{name}={value} does not split across {world} processes: each process takes "
                f"an equal share, so make it a multiple of {world}"
            )


def setup(cfg: PPOConfig, skip_preflight: bool = False) -> Setup:
    run = Run.start(cfg)
    rejects: list[dict[str, Any]] = []
    with run.preparing():
        check_world(cfg, run.dist.world)
        rm = load_reward_model(cfg.ppo.reward_model, device=str(run.device))  # not one: an error
        if run.dist.is_main:  # a GGUF is converted once, by rank 0, before the others read it
            resolve_model(cfg.model.name_or_path)
        barrier(run.dist)
        model_path = resolve_model(cfg.model.name_or_path)
        tokenizer = load_tokenizer(model_path)
        if (same := check_reward_model(cfg.ppo.reward_model, tokenizer)).failed:
            raise RewardModelError(f"ppo.reward_model: {same.detail}")  # it scores our token ids
        prompts, val = read_prompt_splits(cfg, tokenizer, rejects)
        model = _policy(cfg, model_path, run.device)
        if not skip_preflight:  # `tunesmith doctor` explains; --skip-preflight overrides
            preflight(cfg, prompts, tokenizer, model)
    head = torch.nn.Linear(model.config.hidden_size, 1).to(run.device)
    torch.nn.init.zeros_(head.weight)
    torch.nn.init.zeros_(head.bias)
    if run.dist.is_main:
        write_jsonl(run.run_dir / "rejects.jsonl", rejects)
        if note := held_out_note(len(val), "prompts"):
            print(note, flush=True)
    trainable, total = parameter_counts(model)
    run.announce(
        list(cfg.data.train) + list(cfg.data.validation or []),
        {
            "base_model": str(model_path),
            "prompts": len(prompts),
            "val_prompts": len(val),
            "rejects": len(rejects),
            "trainable_params": trainable,
        },
        f"ppo: {len(prompts)} prompts, {len(val)} held out ({len(rejects)} rows rejected, see "
        f"rejects.jsonl), trainable params {trainable:,} / {total:,} (+ value head), reward model "
        f"{cfg.ppo.reward_model}, processes {run.dist.world}",
    )
    policy = PolicyValue(model, head, run.precision, cfg.ppo.temperature)
    step_module = wrap_for_training(policy, model, run.dist, run.device, cfg.train.parallel)
    iterations = cfg.train.max_steps or max(
        1, math.ceil(cfg.train.epochs * len(prompts) / cfg.ppo.prompts_per_iteration)
    )
    return Setup(
        cfg, run, model, head, policy, step_module, tokenizer, rm, prompts, val, iterations
    )


def read_prompt_splits(
    cfg: PPOConfig, tokenizer: Any, rejects: list[dict[str, Any]]
) -> tuple[list[PromptRecord], list[PromptRecord]]:
    """(training, held-out) prompts: the validation files, else the shared held-out split of
    the training prompts (:func:`tunesmith.data.split.hold_out`), capped at max_val_examples."""
    return read_prompt_section(cfg.data, tokenizer, rejects)


def preflight(cfg: PPOConfig, prompts: list[PromptRecord], tokenizer: Any, model: Any) -> None:
    """Refuse to start on a failed prompt check (:mod:`tunesmith.checks.prompts`)."""
    context = model_context_length(model.config)
    if failed := failures(preflight_prompts(prompts, tokenizer, cfg, context_length=context)):
        raise PreflightError(failed)


def _policy(cfg: PPOConfig, model_path: Path, device: torch.device) -> Any:
    """The base model with LoRA, in eval mode (dropout off: rollout and update see one policy)."""
    torch.manual_seed(cfg.train.seed)  # LoRA's A matrices are drawn here
    model = load_causal_lm(
        model_path,
        dtype=load_dtype(cfg.model.dtype, device),
        device=device,
        attn_implementation=cfg.model.attn_implementation,
        trust_pickle=cfg.model.trust_pickle,
    )
    model = attach_lora(model, cfg.lora, cfg.adapter.type)
    model.eval()
    return model


# ----------------------------------------------------------------------------- rollout


def to_device(batch: dict[str, torch.Tensor], device: torch.device) -> dict[str, torch.Tensor]:
    return {k: v.to(device) for k, v in batch.items()}


def score_completions(
    s: Setup, prompts: list[PromptRecord], completions: list[Completion]
) -> torch.Tensor:
    """[B] reward-model scores: token ids as sampled (causal-LM reward model) or the text."""
    rm = s.rm
    if rm.kind == "decoder":
        items = []
        for p, c in zip(prompts, completions, strict=True):
            ids = encode_prompt(p.messages, rm.tokenizer, rm.template) + c.token_ids
            items.append({"input_ids": ids[-rm.max_length :]})
        scores = rm.score_encoded(items, s.cfg.ppo.reward_batch_size)
    else:
        scores = rm.score([p.messages for p in prompts], [c.text for c in completions])
    return torch.tensor(scores, dtype=torch.float32)


@torch.no_grad()
def rollout_share(
    s: Setup, prompts: list[PromptRecord], seeds: list[int], kl_coef: float
) -> dict[str, Any]:
    """This rank's completions of ``prompts``, scored, with per-token log-probs, values, GAE
    advantages and returns (one list entry per completion, each trimmed to its length)."""
    cfg = s.cfg.ppo
    params = SamplingParams(cfg.max_new_tokens, cfg.temperature, cfg.top_p, cfg.top_k)
    prompt_ids = [p.prompt_ids for p in prompts]
    comps = sample(s.model, s.tokenizer, prompt_ids, params, 1, cfg.generation_batch_size, seeds)
    batch = collate_prompt_response(
        prompt_ids, [c.token_ids for c in comps], s.tokenizer.pad_token_id
    )
    on_device = to_device(batch, s.run.device)
    logp, logits, values = s.policy(on_device)
    with s.model.disable_adapter():
        ref_logp, _, _ = s.policy(on_device, values=False)
    assert values is not None
    m = batch["response_mask"].float()
    logp, ref_logp, values = logp.cpu(), ref_logp.cpu(), values.cpu() * m
    scores = score_completions(s, prompts, comps)
    rewards, kl = kl_penalty_rewards(scores, logp, ref_logp, m, kl_coef)
    adv, returns = gae(rewards, values, m, cfg.gamma, cfg.lam)
    lengths = [len(c.token_ids) for c in comps]

    def rows(t: torch.Tensor) -> list[torch.Tensor]:
        return [t[i, :n] for i, n in enumerate(lengths)]

    return {
        "prompts": prompt_ids,
        "responses": [c.token_ids for c in comps],
        "logprobs": rows(logp),
        "values": rows(values),
        "advantages": rows(adv),
        "returns": rows(returns),
        "scores": scores.tolist(),
        "kl": kl.sum(-1).tolist(),
        "entropy": (entropy_from_logits(logits).cpu() * m).sum(-1).tolist(),
        "stopped": [c.finish_reason == "stop" for c in comps],
    }


def gather_rollout(s: Setup, share: dict[str, Any]) -> Rollout:
    """Every rank's share, in rank order: the whole iteration, the same on every rank; its
    advantages whitened over all of it, and its metrics."""
    parts = gather_objects(share, s.run.dist)
    whole = {k: [x for part in parts for x in part[k]] for k in share}

    def pad(rows: list[torch.Tensor]) -> torch.Tensor:  # [N, L], right-padded with 0
        return torch.nn.utils.rnn.pad_sequence(rows, batch_first=True)

    mask = pad([torch.ones(len(r)) for r in whole["responses"]])
    values, advantages, returns = (pad(whole[k]) for k in ("values", "advantages", "returns"))
    if s.cfg.ppo.whiten_advantages:
        advantages = whiten(advantages, mask)  # global mean and variance
    scores = torch.tensor(whole["scores"])
    stats = {
        "reward_mean": float(scores.mean()),
        "reward_std": float(scores.std()) if len(scores) > 1 else 0.0,
        "kl": sum(whole["kl"]) / len(scores),
        "entropy": sum(whole["entropy"]) / float(mask.sum()),
        "response_length": float(mask.sum(-1).mean()),
        "stopped_fraction": sum(whole["stopped"]) / len(scores),
        "explained_variance": explained_variance(values, returns, mask),
        "samples_sha256": hashlib.sha256(json.dumps(whole["responses"]).encode()).hexdigest(),
    }
    logprobs = pad(whole["logprobs"])
    return Rollout(
        whole["prompts"], whole["responses"], mask, logprobs, values, advantages, returns, stats
    )


# ----------------------------------------------------------------------------- update


def minibatch_loss(
    s: Setup, r: Rollout, rows: list[int], minibatch_tokens: float
) -> tuple[torch.Tensor, dict[str, float]]:
    """This rank's share ``rows`` of one minibatch: its loss, scaled to sum(tokens here) /
    minibatch_tokens x world so that DDP's average over ranks is the minibatch's token mean of
    clipped policy loss + vf_coef x clipped value loss; stats are this rank's part of the mean."""
    cfg, dev = s.cfg.ppo, s.run.device
    batch = collate_prompt_response(
        [r.prompts[i] for i in rows], [r.responses[i] for i in rows], s.tokenizer.pad_token_id
    )
    logp, _, values = s.step_module(to_device(batch, dev))
    assert values is not None
    idx, length = torch.tensor(rows), logp.size(1)

    def old(t: torch.Tensor) -> torch.Tensor:
        return t[idx, :length].to(dev)

    m = old(r.mask)
    pg, pg_clip = clipped_policy_loss(logp, old(r.logprobs), old(r.advantages), m, cfg.clip_range)
    vf, vf_clip = clipped_value_loss(values, old(r.values), old(r.returns), m, cfg.value_clip_range)
    share = float(m.sum()) / minibatch_tokens
    stats = {
        "policy_loss": float(pg.detach()) * share,
        "value_loss": float(vf.detach()) * share,
        "clip_fraction": float(pg_clip) * share,
        "value_clip_fraction": float(vf_clip) * share,
    }
    return (pg + cfg.vf_coef * vf) * (share * s.run.dist.world), stats


def ppo_update(
    s: Setup, r: Rollout, opt: torch.optim.Optimizer, sched: Any, iteration: int
) -> dict[str, float]:
    """``ppo.epochs`` passes of shuffled minibatches; returns the mean of their stats, summed
    over ranks (the global values)."""
    cfg, info = s.cfg.ppo, s.run.dist
    params = [p for g in opt.param_groups for p in g["params"]]
    gen = torch.Generator().manual_seed(derive_seed(s.cfg.train.seed, iteration, MINIBATCH_STREAM))
    sums: dict[str, float] = {}
    n = 0
    for _ in range(cfg.epochs):
        order = torch.randperm(len(r.responses), generator=gen).tolist()
        for start in range(0, len(order), cfg.minibatch_size):
            minibatch = order[start : start + cfg.minibatch_size]
            loss, stats = minibatch_loss(
                s, r, shard(minibatch, info), float(r.mask[minibatch].sum())
            )
            loss.backward()
            stats.update(s.run.optimizer_step(params, opt, sched))
            for k, v in stats.items():
                sums[k] = sums.get(k, 0.0) + v
            n += 1
    out = {k: v / n for k, v in sums.items()}
    for k in ("policy_loss", "value_loss", "clip_fraction", "value_clip_fraction"):
        out[k] = all_reduce_sum(out[k], info, s.run.device)
    return out


# ----------------------------------------------------------------------------- evaluation


def save_model(s: Setup, out: Path) -> Path:
    """``out`` (final/ or best/): the policy adapter (loads with peft), tokenizer + template, and
    the value head; every rank calls it, rank 0 writes."""
    s.tokenizer.chat_template = template_string(s.cfg.data.template, s.tokenizer)

    def value_head(tmp: Path) -> None:
        weights = {k: v.detach().cpu().contiguous() for k, v in s.head.state_dict().items()}
        save_file(weights, str(tmp / "value_head.safetensors"))

    return s.run.export_model(out, s.model, s.tokenizer, extra=value_head)


@torch.no_grad()
def evaluate(s: Setup) -> dict[str, Any]:
    """Greedy replies of the policy to the held-out prompts, scored by the reward model: their
    mean and standard deviation, the mean reply length in tokens and a hash of the replies.
    Each rank answers a contiguous share; the shares are gathered in rank order."""
    info, n = s.run.dist, len(s.val)
    mine = s.val[info.rank * n // info.world : (info.rank + 1) * n // info.world]
    part: dict[str, list[Any]] = {"scores": [], "replies": []}
    if mine:  # more processes than held-out prompts: some ranks have none
        params = SamplingParams(max_new_tokens=s.cfg.ppo.max_new_tokens)  # temperature 0: greedy
        batch = s.cfg.ppo.generation_batch_size
        comps = sample(s.model, s.tokenizer, [p.prompt_ids for p in mine], params, 1, batch)
        part = {
            "scores": score_completions(s, mine, comps).tolist(),
            "replies": [c.token_ids for c in comps],
        }
    parts = gather_objects(part, info)
    scores = [x for p in parts for x in p["scores"]]
    replies = [x for p in parts for x in p["replies"]]
    return {
        "reward_mean": statistics.fmean(scores),
        "reward_std": statistics.stdev(scores) if len(scores) > 1 else 0.0,
        "completion_length": statistics.fmean(len(r) for r in replies),
        "n": len(scores),
        "samples_sha256": hashlib.sha256(json.dumps(replies).encode()).hexdigest(),
    }


def _evaluate(s: Setup, track_best: bool) -> bool:
    """Log the held-out evaluation of the current policy and keep its reward in the run state
    (a resume neither repeats nor loses one); with ``track_best`` the reward (higher is better)
    updates ``best/`` and early stopping, whose trigger is returned."""
    if not s.val:
        return False
    state = s.run.state
    m = evaluate(s)
    s.run.write({"step": state.step, "split": "val", **m})
    state.method.setdefault("val_reward_first", m["reward_mean"])
    state.method["val_reward_last"] = m["reward_mean"]
    if s.run.dist.is_main:
        print(f"[tunesmith] step {state.step}: held-out reward {m['reward_mean']:.4f}", flush=True)
    if not track_best:
        return False
    return s.run.evaluated(m["reward_mean"], lambda out: save_model(s, out), higher_is_better=True)


# ----------------------------------------------------------------------------- one iteration


def updates_per_iteration(cfg: PPOConfig) -> int:
    return cfg.ppo.epochs * math.ceil(cfg.ppo.prompts_per_iteration / cfg.ppo.minibatch_size)


def next_kl_coef(cfg: PPOConfig, kl_coef: float, r: Rollout) -> float:
    """The adaptive controller's beta for the next iteration (fixed without ``ppo.kl_target``)."""
    if cfg.ppo.kl_target is None:
        return kl_coef
    n = len(r.responses)
    return adaptive_kl_update(kl_coef, r.stats["kl"], cfg.ppo.kl_target, cfg.ppo.kl_horizon, n)


def ppo_iteration(
    s: Setup, indices: list[int], opt: torch.optim.Optimizer, sched: Any
) -> dict[str, Any]:
    """One PPO iteration on the training prompts ``indices`` (this iteration's, all ranks'):
    rollout of this rank's share, gathered; the update; beta moves; the step advances."""
    t0 = time.perf_counter()
    cfg, state, info = s.cfg, s.run.state, s.run.dist
    step, kl_coef = state.step + 1, state.method["kl_coef"]
    mine = shard(list(enumerate(indices)), info)  # (k, prompt index): this rank's share
    seeds = [derive_seed(cfg.train.seed, step, k) for k, _ in mine]
    share = rollout_share(s, [s.prompts[i] for _, i in mine], seeds, kl_coef)
    r = gather_rollout(s, share)
    m = {**r.stats, **ppo_update(s, r, opt, sched, step), "kl_coef": kl_coef}
    state.method["kl_coef"] = next_kl_coef(cfg, kl_coef, r)
    state.method.setdefault("reward_first", m["reward_mean"])
    state.step, state.tokens = step, state.tokens + int(r.mask.sum())
    m["step_seconds"] = time.perf_counter() - t0
    return m


def _result(s: Setup, final: Path, m: dict[str, Any], stopped: bool) -> PPOResult:
    state = s.run.state
    return PPOResult(
        run_dir=s.run.run_dir,
        final_dir=final,
        steps=state.step,
        reward_first=state.method.get("reward_first"),
        reward_last=m.get("reward_mean"),
        kl_last=m.get("kl"),
        val_reward_first=state.method.get("val_reward_first"),
        val_reward_last=state.method.get("val_reward_last"),
        best_val_reward=state.best_metric,
        best_step=state.best_step,
        stopped_early=stopped,
        stats={"prompts": len(s.prompts), "val_prompts": len(s.val)},
    )


# ----------------------------------------------------------------------------- the loop


def run(cfg: PPOConfig, skip_preflight: bool = False) -> PPOResult:
    s = setup(cfg, skip_preflight)
    run = s.run
    trainable = torch.nn.ModuleDict({"policy": s.model, "value_head": s.head})
    opt = build_optimizer(trainable, cfg.optim)
    sched = build_scheduler(opt, cfg.optim, s.iterations * updates_per_iteration(cfg))
    if cfg.train.resume:
        run.restore(s.model, opt, sched, modules={"value_head": s.head})
    state = run.state
    state.method.setdefault("kl_coef", cfg.ppo.kl_coef)
    run.open_log()
    if state.step == 0:
        _evaluate(s, track_best=False)  # the untrained policy: the baseline training must beat
    # The data position is the iteration number: iteration s takes prompts [s*P, (s+1)*P) of
    # the endless stream of fixed-seed epoch orders (P = ppo.prompts_per_iteration).
    per_iteration = cfg.ppo.prompts_per_iteration
    batches = step_batches(len(s.prompts), cfg.train.seed, per_iteration, 1, state.step)
    bar = run.progress(s.iterations, "ppo", "iter")
    m: dict[str, Any] = {}
    stopped = False
    while state.step < s.iterations and not stopped:
        m = ppo_iteration(s, next(batches)[0], opt, sched)
        if due(state.step, cfg.train.log_every, s.iterations):
            run.write({"step": state.step, "split": "train", **m})
        bar.set_postfix(reward=f"{m['reward_mean']:.3f}", kl=f"{m['kl']:.3f}")
        bar.update(1)
        every = cfg.train.eval_every
        if due(state.step, every, s.iterations) or state.step == s.iterations:
            stopped = _evaluate(s, track_best=every is not None)
        if due(state.step, cfg.train.save_every, s.iterations):
            run.checkpoint(s.model, opt, sched, modules={"value_head": s.head})
        run.crash_point()
    bar.close()
    final = save_model(s, run.run_dir / "final")
    run.finish()
    return _result(s, final, m, stopped)
