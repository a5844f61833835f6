"""PPO-based RLHF (Ziegler et al. 2019; Ouyang et al. 2022) against a trained reward model.

The algorithm, top to bottom, once per iteration (``train.max_steps`` iterations):
  1. rollout: sample one completion for each of ``ppo.prompts_per_iteration`` prompts from the
     policy (LoRA on the base model); score each with the reward model (``ppo.reward_model``);
  2. per token: log-probabilities under the policy and under the reference (the same model with
     its adapters disabled), values from the value head (a linear layer on the policy's last
     hidden state, sharing the LoRA backbone); rewards = -beta * (logp - ref_logp) on every
     token plus the score on the last (losses/ppo.py: kl_penalty_rewards);
  3. GAE advantages and returns (gamma, lambda), advantages whitened;
  4. ``ppo.epochs`` passes over shuffled minibatches: clipped policy loss + vf_coef x clipped
     value loss, one AdamW step per minibatch;
  5. the adaptive KL controller moves beta towards ``ppo.kl_target`` (or beta stays fixed).
Dropout is off throughout (the model stays in eval mode), so the first minibatch's ratio is 1.
``final/`` holds the policy adapter (loads with peft) and ``value_head.safetensors``.
"""

from __future__ import annotations

import math
import shutil
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from tqdm.auto import tqdm

from tunesmith.config.ppo import PPOConfig
from tunesmith.data.dataset import data_files, write_jsonl
from tunesmith.data.records import Message
from tunesmith.data.templates import encode_prompt, template_string
from tunesmith.engine import checkpoint as ckpt
from tunesmith.engine.optim import build_optimizer, build_scheduler
from tunesmith.engine.precision import autocast, resolve_precision
from tunesmith.engine.rundir import new_run_dir, write_run_files
from tunesmith.engine.tracking import open_metrics_log
from tunesmith.errors import UserError
from tunesmith.generation import SamplingParams, left_pad, sample
from tunesmith.losses.ppo import (
    adaptive_kl_update,
    clipped_policy_loss,
    clipped_value_loss,
    entropy_from_logits,
    explained_variance,
    gae,
    kl_penalty_rewards,
    masked_mean,
    whiten,
)
from tunesmith.models.adapters import attach_lora, parameter_counts
from tunesmith.models.load import (
    load_causal_lm,
    load_dtype,
    load_tokenizer,
    pick_device,
    resolve_model,
)
from tunesmith.models.reward_head import RewardModel, RewardModelError, load_reward_model


@dataclass
class PPOResult:
    run_dir: Path
    final_dir: Path
    steps: int
    reward_first: float | None
    reward_last: float | None
    kl_last: float | None
    stats: dict[str, Any] = field(default_factory=dict)


@dataclass
class Setup:
    cfg: PPOConfig
    run_dir: Path
    device: torch.device
    precision: str
    model: Any  # the peft policy
    value_head: torch.nn.Linear
    tokenizer: Any
    rm: RewardModel
    prompts: list[tuple[Message, ...]]
    prompt_ids: list[list[int]]


@dataclass
class Rollout:
    """One batch of completions, left-padded prompts + right-padded responses.

    ids/mask [B, P + L]; everything per token is [B, L] over response positions."""

    ids: torch.Tensor
    mask: torch.Tensor
    width: int  # P
    resp_mask: torch.Tensor
    logprobs: torch.Tensor
    values: torch.Tensor
    advantages: torch.Tensor
    returns: torch.Tensor
    stats: dict[str, float]


# ----------------------------------------------------------------------------- set up


def _prompt_of(messages: tuple[Message, ...], source: str, line: int) -> tuple[Message, ...]:
    """The conversation up to its last user turn (a trailing assistant reply is dropped)."""
    turns = list(messages)
    while turns and turns[-1].role == "assistant":
        turns.pop()
    if not turns or turns[-1].role != "user":
        raise UserError(f"{source}:{line}: a PPO prompt must end with a user turn")
    return tuple(turns)


def _file_prompts(
    path: str, cfg: PPOConfig
) -> tuple[list[tuple[Message, ...]], list[dict[str, Any]]]:
    """(prompts, rejects) of one file: preference pairs (their prompts) or chat data."""
    from tunesmith.data.formats import load_examples
    from tunesmith.data.preference import load_preference_pairs
    from tunesmith.data.readers import iter_rows

    first = next(iter(iter_rows(path, split=cfg.data.split)), (0, {}))[1]
    if "chosen" in first:
        pairs, bad = load_preference_pairs(path, split=cfg.data.split, on_error=cfg.data.on_error)
        return [p.prompt for p in pairs], bad
    examples, bad = load_examples(path, cfg.data.format, cfg.data.split, cfg.data.on_error)
    out = []
    for ex in examples:
        if not ex.is_chat:
            raise UserError(f"{ex.source}:{ex.line}: PPO needs chat prompts, not plain text")
        out.append(_prompt_of(ex.messages, ex.source, ex.line))
    return out, bad


def read_prompts(cfg: PPOConfig) -> tuple[list[tuple[Message, ...]], list[dict[str, Any]]]:
    """Every prompt of ``data.train``, and the rows rejected (written to rejects.jsonl)."""
    paths = [
        p
        for spec in cfg.data.train
        for p in ([spec.path] if isinstance(spec.path, str) else spec.path)
    ]
    prompts: list[tuple[Message, ...]] = []
    rejects: list[dict[str, Any]] = []
    for path in paths:
        found, bad = _file_prompts(path, cfg)
        prompts.extend(found)
        rejects.extend(bad)
    if not prompts:
        raise UserError(f"{', '.join(paths)}: no prompts")
    return prompts, rejects


PROBE = "Hello, world! 123 <|im_end|> the quick brown fox"


def check_tokenizers(policy_tok: Any, rm: RewardModel, policy_name: str, rm_path: str) -> None:
    """A causal-LM reward model scores the policy's token ids: both must tokenize alike."""
    if rm.kind != "decoder":
        return  # an encoder reward model reads the decoded text with its own tokenizer
    a, b = policy_tok.get_vocab(), rm.tokenizer.get_vocab()
    probe_a, probe_b = policy_tok(PROBE)["input_ids"], rm.tokenizer(PROBE)["input_ids"]
    if a != b or probe_a != probe_b:
        raise RewardModelError(
            f"ppo.reward_model {rm_path} uses a different tokenizer from the policy "
            f"{policy_name} (vocab sizes {len(b)} vs {len(a)}; {PROBE!r} encodes to "
            f"{probe_b[:8]}... vs {probe_a[:8]}...): train the reward model on the policy's "
            "base model"
        )


def setup(cfg: PPOConfig) -> Setup:
    device = pick_device(cfg.train.device)
    rm = load_reward_model(cfg.ppo.reward_model, device=str(device))  # not one: a clear error
    model_path = resolve_model(cfg.model.name_or_path)
    tokenizer = load_tokenizer(model_path)
    check_tokenizers(tokenizer, rm, cfg.model.name_or_path, cfg.ppo.reward_model)
    prompts, rejects = read_prompts(cfg)
    prompt_ids = [
        encode_prompt(p, tokenizer, cfg.data.template)[-cfg.data.max_length :] for p in prompts
    ]
    torch.manual_seed(cfg.train.seed)
    model = load_causal_lm(
        model_path,
        dtype=load_dtype(cfg.model.dtype, device),
        device=device,
        attn_implementation=cfg.model.attn_implementation,
    )
    model = attach_lora(model, cfg.lora, cfg.adapter.type)
    model.eval()  # dropout off: rollout and update see the same policy
    head = torch.nn.Linear(model.config.hidden_size, 1).to(device)
    torch.nn.init.zeros_(head.weight)
    torch.nn.init.zeros_(head.bias)
    run_dir = new_run_dir(cfg)
    write_jsonl(run_dir / "rejects.jsonl", rejects)
    trainable, total = parameter_counts(model)
    write_run_files(
        run_dir,
        cfg,
        data_files(cfg.data),
        {
            "base_model": str(model_path),
            "prompts": len(prompts),
            "rejects": len(rejects),
            "trainable_params": trainable,
        },
    )
    print(
        f"[tunesmith] run dir {run_dir}\n[tunesmith] ppo: {len(prompts)} prompts "
        f"({len(rejects)} rows rejected, see rejects.jsonl), trainable "
        f"params {trainable:,} / {total:,} (+ value head), reward model {cfg.ppo.reward_model}",
        flush=True,
    )
    precision = resolve_precision(cfg.train.precision, device)
    return Setup(cfg, run_dir, device, precision, model, head, tokenizer, rm, prompts, prompt_ids)


# ----------------------------------------------------------------------------- rollout


def policy_forward(
    s: Setup, ids: torch.Tensor, mask: torch.Tensor, width: int, values: bool = True
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor | None]:
    """(logprobs [B, L] of the response tokens, logits [B, L, V], values [B, L] or None).

    Position P - 1 + t predicts response token t; positions come from the mask (left padding)."""
    positions = (mask.cumsum(-1) - 1).clamp(min=0)
    with autocast(s.precision, s.device):
        out = s.model(
            input_ids=ids, attention_mask=mask, position_ids=positions, output_hidden_states=values
        )
    logits = out.logits[:, width - 1 : -1].float() / s.cfg.ppo.temperature
    targets = ids[:, width:]
    logp = torch.log_softmax(logits, -1).gather(-1, targets.unsqueeze(-1)).squeeze(-1)
    v = None
    if values:
        hidden = out.hidden_states[-1][:, width - 1 : -1].float()
        v = s.value_head(hidden).squeeze(-1)
    return logp, logits, v


def build_batch(
    prompt_ids: list[list[int]], responses: list[list[int]], pad_id: int
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, int]:
    """ids, attention mask [B, P + L], response mask [B, L] and P."""
    left = left_pad(prompt_ids, pad_id)
    width = left["input_ids"].size(1)
    length = max(len(r) for r in responses)
    resp = torch.full((len(responses), length), pad_id, dtype=torch.long)
    resp_mask = torch.zeros((len(responses), length), dtype=torch.long)
    for i, r in enumerate(responses):
        resp[i, : len(r)] = torch.tensor(r)
        resp_mask[i, : len(r)] = 1
    ids = torch.cat([left["input_ids"], resp], 1)
    mask = torch.cat([left["attention_mask"], resp_mask], 1)
    return ids, mask, resp_mask, width


def score_completions(s: Setup, prompts: list[int], completions: list[Any]) -> torch.Tensor:
    """[B] reward-model scores: token ids as sampled (causal-LM reward model) or the text."""
    rm = s.rm
    if rm.kind == "decoder":
        items = []
        for i, c in zip(prompts, completions, strict=True):
            ids = encode_prompt(s.prompts[i], rm.tokenizer, rm.template) + c.token_ids
            items.append({"input_ids": ids[-rm.max_length :]})
        scores = rm.score_encoded(items, s.cfg.ppo.reward_batch_size)
    else:
        scores = rm.score([s.prompts[i] for i in prompts], [c.text for c in completions])
    return torch.tensor(scores, dtype=torch.float32)


@torch.no_grad()
def rollout(s: Setup, indices: list[int], kl_coef: float) -> Rollout:
    cfg = s.cfg.ppo
    params = SamplingParams(
        max_new_tokens=cfg.max_new_tokens,
        temperature=cfg.temperature,
        top_p=cfg.top_p,
        top_k=cfg.top_k,
    )
    prompt_ids = [s.prompt_ids[i] for i in indices]
    comps = sample(s.model, s.tokenizer, prompt_ids, params, 1, cfg.generation_batch_size)
    ids, mask, resp_mask, width = build_batch(
        prompt_ids, [c.token_ids for c in comps], s.tokenizer.pad_token_id
    )
    ids, mask = ids.to(s.device), mask.to(s.device)
    logp, logits, values = policy_forward(s, ids, mask, width)
    with s.model.disable_adapter():
        ref_logp, _, _ = policy_forward(s, ids, mask, width, values=False)
    m = resp_mask.float()
    logp, ref_logp, values = logp.cpu(), ref_logp.cpu(), values.cpu()
    scores = score_completions(s, indices, comps)
    rewards, kl = kl_penalty_rewards(scores, logp, ref_logp, m, kl_coef)
    adv, returns = gae(rewards, values, m, cfg.gamma, cfg.lam)
    if cfg.whiten_advantages:
        adv = whiten(adv, m)
    stats = {
        "reward_mean": float(scores.mean()),
        "reward_std": float(scores.std()) if len(scores) > 1 else 0.0,
        "kl": float(kl.sum(-1).mean()),
        "entropy": float(masked_mean(entropy_from_logits(logits).cpu(), m)),
        "response_length": float(m.sum(-1).mean()),
        "stopped_fraction": sum(c.finish_reason == "stop" for c in comps) / len(comps),
        "explained_variance": explained_variance(values, returns, m),
    }
    return Rollout(ids.cpu(), mask.cpu(), width, m, logp, values * m, adv, returns, stats)


# ----------------------------------------------------------------------------- update


def minibatch_loss(s: Setup, r: Rollout, mb: torch.Tensor) -> tuple[torch.Tensor, dict[str, float]]:
    cfg = s.cfg.ppo
    ids, mask = r.ids[mb].to(s.device), r.mask[mb].to(s.device)
    logp, _, values = policy_forward(s, ids, mask, r.width)
    dev = s.device
    m = r.resp_mask[mb].to(dev)
    pg, pg_clip = clipped_policy_loss(
        logp, r.logprobs[mb].to(dev), r.advantages[mb].to(dev), m, cfg.clip_range
    )
    assert values is not None
    vf, vf_clip = clipped_value_loss(
        values, r.values[mb].to(dev), r.returns[mb].to(dev), m, cfg.value_clip_range
    )
    stats = {
        "policy_loss": float(pg.detach()),
        "value_loss": float(vf.detach()),
        "clip_fraction": float(pg_clip),
        "value_clip_fraction": float(vf_clip),
    }
    return pg + cfg.vf_coef * vf, stats


def ppo_update(
    s: Setup, r: Rollout, opt: torch.optim.Optimizer, sched: Any, gen: torch.Generator
) -> dict[str, float]:
    """``ppo.epochs`` passes of shuffled minibatches; returns the mean of their stats."""
    cfg = s.cfg.ppo
    params = [p for g in opt.param_groups for p in g["params"]]
    sums: dict[str, float] = {}
    n = 0
    for _ in range(cfg.epochs):
        order = torch.randperm(r.ids.size(0), generator=gen)
        for start in range(0, len(order), cfg.minibatch_size):
            loss, stats = minibatch_loss(s, r, order[start : start + cfg.minibatch_size])
            loss.backward()
            torch.nn.utils.clip_grad_norm_(params, s.cfg.optim.max_grad_norm or math.inf)
            opt.step()
            sched.step()
            opt.zero_grad(set_to_none=True)
            for k, v in stats.items():
                sums[k] = sums.get(k, 0.0) + v
            n += 1
    return {k: v / n for k, v in sums.items()}


# ----------------------------------------------------------------------------- bookkeeping


def save_final(s: Setup) -> Path:
    """The policy adapter (loads with peft), tokenizer + template, and the value head."""
    from safetensors.torch import save_file

    final = s.run_dir / "final"
    tmp = ckpt.atomic_dir(final)
    try:
        s.tokenizer.chat_template = template_string(s.cfg.data.template, s.tokenizer)
        ckpt.export_model(s.model, tmp, s.tokenizer)
        head = {k: v.detach().cpu().contiguous() for k, v in s.value_head.state_dict().items()}
        save_file(head, str(tmp / "value_head.safetensors"))
        (tmp / "tunesmith_config.yaml").write_text((s.run_dir / "config.yaml").read_text())
        ckpt.commit_dir(tmp, final)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return final


def _iterations(cfg: PPOConfig, n_prompts: int) -> int:
    if cfg.train.max_steps is not None:
        return cfg.train.max_steps
    return max(1, math.ceil(cfg.train.epochs * n_prompts / cfg.ppo.prompts_per_iteration))


def _updates_per_iteration(cfg: PPOConfig) -> int:
    return cfg.ppo.epochs * math.ceil(cfg.ppo.prompts_per_iteration / cfg.ppo.minibatch_size)


def prompt_batches(n: int, per_iter: int, seed: int) -> Any:
    """An endless stream of prompt-index batches, each epoch in its own fixed-seed order."""
    from tunesmith.data.dataset import step_batches

    for step in step_batches(n, seed, per_iter, 1):
        yield step[0]


# ----------------------------------------------------------------------------- the loop


def run(cfg: PPOConfig, skip_preflight: bool = False) -> PPOResult:
    s = setup(cfg)
    iterations = _iterations(cfg, len(s.prompts))
    trainable = torch.nn.ModuleDict({"policy": s.model, "value_head": s.value_head})
    opt = build_optimizer(trainable, cfg.optim)
    sched = build_scheduler(opt, cfg.optim, iterations * _updates_per_iteration(cfg))
    gen = torch.Generator().manual_seed(cfg.train.seed)
    batches = prompt_batches(len(s.prompts), cfg.ppo.prompts_per_iteration, cfg.train.seed)
    kl_coef = cfg.ppo.kl_coef
    log = open_metrics_log(s.run_dir, cfg, True)
    bar = tqdm(total=iterations, desc="ppo", unit="iter", dynamic_ncols=True)
    first: dict[str, float] | None = None
    m: dict[str, float] = {}
    for step in range(1, iterations + 1):
        t0 = time.perf_counter()
        r = rollout(s, next(batches), kl_coef)
        m = {**r.stats, **ppo_update(s, r, opt, sched, gen), "kl_coef": kl_coef}
        if cfg.ppo.kl_target is not None:
            kl_coef = adaptive_kl_update(
                kl_coef, r.stats["kl"], cfg.ppo.kl_target, cfg.ppo.kl_horizon, r.ids.size(0)
            )
        m["lr"], m["step_seconds"] = sched.get_last_lr()[0], time.perf_counter() - t0
        first = first or m
        log.write({"step": step, "split": "train", **m})
        bar.set_postfix(reward=f"{m['reward_mean']:.3f}", kl=f"{m['kl']:.3f}")
        bar.update(1)
    bar.close()
    final = save_final(s)
    log.close()
    return PPOResult(
        run_dir=s.run_dir,
        final_dir=final,
        steps=iterations,
        reward_first=first["reward_mean"] if first else None,
        reward_last=m.get("reward_mean"),
        kl_last=m.get("kl"),
        stats={"prompts": len(s.prompts)},
    )
