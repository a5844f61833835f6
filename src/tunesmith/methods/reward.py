"""Reward-model training on preference pairs (Bradley-Terry), LoRA or full, with exact resume.

The algorithm, top to bottom:
  1. set up: a scalar head over the backbone (a causal LM, or an encoder such as
     all-MiniLM-L6-v2), LoRA with the head trained in full (peft ``modules_to_save``) or every
     weight; preference pairs read by the one preference reader (held-out split included) and
     encoded as ``prompt + chosen`` / ``prompt + rejected``;
  2. loop: each optimizer step scores ``grad_accum`` micro-batches of pairs (both sides in one
     forward; a causal-LM backbone runs each pair's prompt once, shared by both replies:
     DPO's shared-prompt layout, :func:`shared_prompt_rewards`; under torchrun each rank
     scores its share), takes the pairwise loss
     -log sigmoid(r_c - r_r - m) summed over the step's pairs and divided by their number,
     backprops, clips, steps;
  3. held-out pairwise accuracy (chance = 50%) and loss before the first step, every
     ``eval_every`` steps and after the last; the held-out *loss* (lower is better) picks
     ``best/`` and drives early stopping: it moves with every margin, where accuracy on a small
     held-out set saturates at 1.0 and stops telling models apart;
  4. every ``save_every`` steps an atomic checkpoint (weights with the head, optimizer,
     scheduler, RNG, the step and the evaluations so far); ``--resume`` continues exactly;
  5. save ``final/``: weights, tokenizer and ``tunesmith_reward.json``, which
     :func:`tunesmith.models.reward_head.load_reward_model` reloads.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

from tunesmith.checks import PreflightError, failures, preflight_pairs
from tunesmith.checks.pairs import check_rejects
from tunesmith.config import LoraSection
from tunesmith.config.reward import RewardConfig
from tunesmith.data.dataset import write_jsonl
from tunesmith.data.pair_batches import collate_shared_prompt, shared_prompt_ends
from tunesmith.data.preference import (
    EncodedPair,
    PairSplits,
    PreferencePair,
    encode_pair,
    read_pair_section,
)
from tunesmith.data.sequence_batches import Encoded, pad_batch, pair_batch
from tunesmith.data.split import held_out_note
from tunesmith.engine.distributed import (
    all_reduce_sum,
    barrier,
    grad_sync,
    shard,
    wrap_for_training,
)
from tunesmith.engine.forward import decoder_hidden, is_prompt_learning, uses_flash_attention
from tunesmith.engine.precision import autocast, weight_dtype
from tunesmith.engine.run import OnRun, Run
from tunesmith.engine.trainable import due, total_steps
from tunesmith.losses.bradley_terry import bradley_terry_loss, pairwise_accuracy
from tunesmith.models.adapters import (
    check_rank,
    lora_config,
    lora_targets,
    match_targets,
    parameter_counts,
)
from tunesmith.models.reward_head import (
    RewardModel,
    RewardScorer,
    backbone_kind,
    load_head_model,
    load_tokenizer_for,
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
    best_val_loss: float | None
    stopped_early: bool
    stats: dict[str, Any] = field(default_factory=dict)


@dataclass
class Pairs:
    """Encoded sides of preference pairs: chosen[i] and rejected[i] belong to pairs[i]."""

    pairs: list[PreferencePair]
    chosen: list[Encoded]
    rejected: list[Encoded]
    encoded: list[EncodedPair] | None = None  # causal-LM backbones: the pair as encoded


@dataclass
class Setup(OnRun):
    cfg: RewardConfig
    run: Run
    rm: RewardModel
    train: Pairs
    val: Pairs
    total_steps: int
    step_module: Any  # RewardScorer over rm.net: alone, DDP-replicated or FSDP2-sharded
    stats: dict[str, Any]


# ----------------------------------------------------------------------------- set up


def shared_prompt_rewards(net: Any, batch: dict[str, torch.Tensor]) -> torch.Tensor:
    """[2R] rewards, chosen sides then rejected, of a shared-prompt batch (one pair per row,
    ``prompt + chosen + rejected`` with the branch mask: each reply sees the prompt and itself,
    :func:`tunesmith.data.pair_batches.collate_shared_prompt`). Every hidden state equals the
    padded layout's, so the rewards do too, while the prompt runs once (Wang et al. 2024)."""
    seq = net.get_base_model() if hasattr(net, "get_base_model") else net
    body = getattr(seq, seq.base_model_prefix)
    hidden = decoder_hidden(body, seq, batch)  # [R, T, H]
    chosen_at, rejected_at = shared_prompt_ends(batch)  # [R], [R]
    rows = torch.arange(hidden.size(0), device=hidden.device)
    pooled = torch.cat([hidden[rows, chosen_at], hidden[rows, rejected_at]])  # [2R, H]
    return seq.score(pooled).squeeze(-1).float()


class PairScorer(RewardScorer):
    """:class:`RewardScorer` that also takes shared-prompt batches (they carry ``branch_ids``)."""

    def forward(self, batch: dict[str, torch.Tensor]) -> torch.Tensor:
        if "branch_ids" in batch:
            return shared_prompt_rewards(self.model, batch)
        return super().forward(batch)


def shares_prompts(rm: RewardModel) -> bool:
    """A causal-LM backbone scores pairs in the shared-prompt layout, unless its attention
    takes no 4-D mask (flash) or its adapter adds virtual tokens."""
    return (
        rm.kind == "decoder" and not uses_flash_attention(rm.net) and not is_prompt_learning(rm.net)
    )


def pair_micro_batch(s: Setup, idx: list[int]) -> dict[str, torch.Tensor]:
    """Pairs ``idx`` of the training set as one batch: shared-prompt rows or padded sides."""
    pad_id = s.rm.tokenizer.pad_token_id
    if s.train.encoded is not None and shares_prompts(s.rm):
        return collate_shared_prompt([s.train.encoded[j] for j in idx], pad_id)
    return pair_batch([s.train.chosen[j] for j in idx], [s.train.rejected[j] for j in idx], pad_id)


def attach_reward_lora(net: Any, cfg: LoraSection, kind: str) -> Any:
    """LoRA on the backbone (peft task SEQ_CLS), the scalar head trained in full."""
    from peft import get_peft_model

    targets = lora_targets(cfg.target_modules)
    matched = match_targets(net, targets, "lora.target_modules")
    check_rank({n: m for n, m in matched.items() if n.rsplit(".", 1)[-1] not in HEADS}, cfg.r)
    # SEQ_CLS: peft adds the head (score / classifier) to modules_to_save
    return get_peft_model(net, lora_config(cfg, kind, targets, "SEQ_CLS"))


def build_reward_model(cfg: RewardConfig, device: torch.device) -> RewardModel:
    path = resolve_backbone(cfg.model.name_or_path)
    tokenizer = load_tokenizer_for(path)
    torch.manual_seed(cfg.train.seed)  # the head and LoRA's A matrices are drawn here
    net = load_head_model(
        path,
        tokenizer.pad_token_id,
        weight_dtype(cfg.model.dtype, device, base_trains=True),  # the head trains
        cfg.model.attn_implementation,
        trust_pickle=cfg.model.trust_pickle,
    )
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


def read_pairs(cfg: RewardConfig) -> PairSplits:
    """(train, held-out, rejects) through the one preference reader and held-out rule."""
    return read_pair_section(cfg.data)


def encode_pairs(rm: RewardModel, pairs: list[PreferencePair]) -> Pairs:
    """Both sides of each pair. A causal-LM backbone encodes the pair once (DPO's encoding), so
    a truncated prompt is cut the same way for chosen and rejected and both replies are scored on
    one prompt; an encoder reads each side as a (conversation, reply) text pair."""
    if rm.kind == "decoder":
        enc = [encode_pair(p, rm.tokenizer, rm.template, rm.max_length) for p in pairs]
        chosen = [{"input_ids": e.prompt_ids + e.chosen_ids} for e in enc]
        rejected = [{"input_ids": e.prompt_ids + e.rejected_ids} for e in enc]
        return Pairs(pairs, chosen, rejected, enc)
    chosen = [rm.encode(p.prompt, p.chosen) for p in pairs]
    rejected = [rm.encode(p.prompt, p.rejected) for p in pairs]
    return Pairs(pairs, chosen, rejected)


def _files(value: str | list[str] | None) -> list[str]:
    return [] if value is None else [value] if isinstance(value, str) else list(value)


def _prepare(cfg: RewardConfig, run: Run) -> tuple[RewardModel, PairSplits]:
    """The pairs and the reward model."""
    if run.dist.is_main:  # a GGUF is converted once, by rank 0, before the others read the cache
        resolve_backbone(cfg.model.name_or_path)
    barrier(run.dist)
    splits = read_pairs(cfg)
    return build_reward_model(cfg, run.device), splits


def _preflight(cfg: RewardConfig, rm: RewardModel, splits: PairSplits, train: Pairs) -> None:
    """The pair checks (``tunesmith doctor`` explains; ``--skip-preflight`` overrides): every
    check for a causal-LM backbone, on the pairs as encoded for training; the reader's rejects
    only for an encoder, which reads the conversation as a text pair with no chat template."""
    if rm.kind == "encoder":
        checks = [check_rejects(len(splits.train), splits.rejects)]
    else:
        checks = preflight_pairs(
            splits.train,
            rm.tokenizer,
            cfg,
            rejects=splits.rejects,
            encoded=train.encoded,
            per_side=False,
        )
    if bad := failures(checks):
        raise PreflightError(bad)


def setup(cfg: RewardConfig, skip_preflight: bool = False) -> Setup:
    """Run dir, reward model (pre-flight checked), encoded pairs and the step module."""
    run = Run.start(cfg)
    with run.preparing():
        rm, splits = _prepare(cfg, run)
        train, val = encode_pairs(rm, splits.train), encode_pairs(rm, splits.val)
        if not skip_preflight:
            _preflight(cfg, rm, splits, train)
    stats = {
        "train_pairs": len(train.pairs),
        "val_pairs": len(val.pairs),
        "rejects": len(splits.rejects),
        "backbone": rm.kind,
    }
    if run.dist.is_main:
        write_jsonl(run.run_dir / "rejects.jsonl", splits.rejects)
        if note := held_out_note(len(val.pairs), "pairs"):
            print(note, flush=True)
    trainable, total = parameter_counts(rm.net)
    run.announce(
        _files(cfg.data.train) + _files(cfg.data.validation),
        {"data": stats, "trainable_params": trainable, "total_params": total},
        f"reward model ({rm.kind} backbone): trainable params {trainable:,} / {total:,}; "
        f"processes {run.dist.world}; data {stats}",
    )
    scorer = PairScorer(rm.net, rm.kind)
    return Setup(
        cfg=cfg,
        run=run,
        rm=rm,
        train=train,
        val=val,
        total_steps=total_steps(cfg.train, len(train.pairs), run.dist.world),  # type: ignore[arg-type]
        step_module=wrap_for_training(scorer, rm.net, run.dist, run.device, cfg.train.parallel),
        stats=stats,
    )


# ----------------------------------------------------------------------------- one step


def train_step(
    s: Setup, micro: list[list[int]], optimizer: torch.optim.Optimizer, scheduler: Any
) -> dict[str, float]:
    """One optimizer step over the step's pairs P (every rank's share of every micro-batch):

        L = (1 / |P|) * sum_{i in P} -log sigmoid(r_c[i] - r_r[i] - m)

    Each rank backprops its summed pair loss x world / |P|; DDP / FSDP average the gradients over
    ranks, which makes the result the gradient of L however the step is split."""
    info, device = s.dist, s.run.device
    n_step = sum(len(mb) for mb in micro)  # |P|: the global pairs of this step
    sums = {"loss": 0.0, "correct": 0.0, "margin": 0.0, "tokens": 0.0}
    for i, mb in enumerate(micro):
        idx = shard(mb, info)
        batch = {k: v.to(device) for k, v in pair_micro_batch(s, idx).items()}
        with grad_sync(s.step_module, on=i == len(micro) - 1):
            with autocast(s.run.precision, device):
                rewards = s.step_module(batch)  # [2k]: chosen sides, then rejected
            r_c, r_r = rewards[: len(idx)], rewards[len(idx) :]
            loss_sum = bradley_terry_loss(r_c, r_r, s.cfg.reward.margin) * len(idx)
            (loss_sum * info.world / n_step).backward()
        sums["loss"] += float(loss_sum.detach())
        sums["correct"] += pairwise_accuracy(r_c.detach(), r_r.detach()) * len(idx)
        sums["margin"] += float((r_c - r_r).detach().sum())
        real = batch["seq_ids"] >= 0 if "seq_ids" in batch else batch["attention_mask"]
        sums["tokens"] += float(real.sum())  # tokens run: a shared prompt counts once
    params = [p for p in s.rm.net.parameters() if p.requires_grad]
    tail = s.run.optimizer_step(params, optimizer, scheduler)
    sums = {k: all_reduce_sum(v, info, device) for k, v in sums.items()}
    return {
        "loss": sums["loss"] / n_step,
        "accuracy": sums["correct"] / n_step,
        "reward_margin": sums["margin"] / n_step,
        **tail,
        "tokens": sums["tokens"],
    }


# ----------------------------------------------------------------------------- evaluation


@torch.no_grad()
def _scores(s: Setup, items: list[Encoded]) -> torch.Tensor:
    """[N] rewards through the step module (FSDP gathers the weights: every rank takes part)."""
    size, pad_id, device = s.cfg.reward.eval_batch_size, s.rm.tokenizer.pad_token_id, s.run.device
    out = []
    for start in range(0, len(items), size):
        batch = {k: v.to(device) for k, v in pad_batch(items[start : start + size], pad_id).items()}
        with autocast(s.run.precision, device):
            out.append(s.step_module(batch).float().cpu())
    return torch.cat(out)


def evaluate(s: Setup) -> dict[str, float]:
    """Held-out pairwise accuracy (chance 0.5), loss and mean reward margin of every held-out
    pair (every rank scores all of them, in eval mode)."""
    s.step_module.eval()
    try:
        r_c, r_r = _scores(s, s.val.chosen), _scores(s, s.val.rejected)
    finally:
        s.step_module.train()
    return {
        "val_accuracy": pairwise_accuracy(r_c, r_r),
        "val_loss": float(bradley_terry_loss(r_c, r_r, s.cfg.reward.margin)),
        "val_reward_margin": float((r_c - r_r).mean()),
        "val_pairs": float(len(s.val.pairs)),
    }


def save_model(s: Setup, out: Path) -> Path:
    """``out`` with the weights (adapter + head, or the full model), the tokenizer and
    ``tunesmith_reward.json``; every rank calls it (FSDP gathers), rank 0 writes."""
    return s.run.export_model(out, s.rm.net, s.rm.tokenizer, s.step_module, s.rm.write_marker)


def _evaluate(s: Setup, track_best: bool) -> bool:
    """Log the held-out metrics of the current weights and keep them in the run state (so a
    resume neither repeats nor loses them); with ``track_best`` the held-out loss (lower is
    better) updates ``best/`` and early stopping, whose trigger is returned."""
    if not s.val.pairs:
        return False
    state = s.run.state
    m = evaluate(s)
    s.run.write({"step": state.step, "split": "val", **m})
    state.method["last_val"] = {"step": state.step, **m}
    if state.step == 0:
        state.method["first_val"] = m
    if not track_best:
        return False
    return s.run.evaluated(m["val_loss"], lambda out: save_model(s, out))


def _report_step(s: Setup, m: dict[str, float], bar: Any) -> None:
    step = s.run.state.step
    if step % s.cfg.train.log_every == 0 or step == s.total_steps:
        s.run.write({"step": step, "split": "train", **m})
    bar.set_postfix(loss=f"{m['loss']:.4f}", acc=f"{m['accuracy']:.2f}")
    bar.update(1)


def _result(s: Setup, final: Path, last_loss: float | None, stopped: bool) -> RewardResult:
    state = s.run.state
    first, last = state.method.get("first_val") or {}, state.method.get("last_val") or {}
    return RewardResult(
        run_dir=s.run.run_dir,
        final_dir=final,
        steps=state.step,
        last_train_loss=last_loss,
        initial_val_accuracy=first.get("val_accuracy"),
        val_accuracy=last.get("val_accuracy"),
        val_loss=last.get("val_loss"),
        best_val_loss=float(state.best_metric) if state.best_step else None,
        stopped_early=stopped,
        stats=s.stats,
    )


# ----------------------------------------------------------------------------- the loop


def run(cfg: RewardConfig, skip_preflight: bool = False) -> RewardResult:
    s = setup(cfg, skip_preflight)
    run = s.run
    optimizer, scheduler = run.optimizer(s.rm.net, s.total_steps, s.step_module)
    state = run.state
    run.open_log()
    if state.step == 0:
        _evaluate(s, track_best=False)  # the untrained head: the baseline training must beat
    # One step = grad_accum rounds of (micro_batch_size x world) pairs; each rank takes its share.
    batches = run.batches(len(s.train.pairs))
    bar = run.progress(s.total_steps, "reward")
    stopped_early, last_loss = False, None
    while state.step < s.total_steps and not stopped_early:
        t0 = time.perf_counter()  # the step alone: evaluation and checkpoints are not counted
        m = train_step(s, next(batches), optimizer, scheduler)
        state.step += 1
        state.tokens += int(m["tokens"])
        last_loss = m["loss"]
        m["step_seconds"] = time.perf_counter() - t0
        _report_step(s, m, bar)
        every = cfg.train.eval_every
        if due(state.step, every, s.total_steps) or state.step == s.total_steps:
            stopped_early = _evaluate(s, track_best=every is not None)
        if due(state.step, cfg.train.save_every, s.total_steps):
            run.checkpoint(s.rm.net, optimizer, scheduler, s.step_module)
        run.crash_point()
    bar.close()
    final = save_model(s, run.run_dir / "final")
    run.finish()
    return _result(s, final, last_loss, stopped_early)
