"""Direct preference optimisation and its family (DPO, cDPO, IPO, hinge/SLiC, SimPO, ORPO).

The algorithm, top to bottom:
  1. set up: resolve the base model, read and tokenize the preference pairs, attach the adapter
     (SFT's ``adapter``/``lora``/... sections) and pick the reference: for adapters the same model
     with its adapter disabled (no second copy); for full fine-tuning a frozen deep copy; none for
     the reference-free losses (SimPO, ORPO);
  2. optionally (``dpo.precompute_ref``) compute the reference log-probs of every pair once,
     cache them in the run dir keyed by a hash of the data, and never run the reference again;
  3. loop: per optimizer step take ``grad_accum`` micro-batches of pairs; for each, chosen and
     rejected go through the policy in ONE forward pass (``dpo.layout``: by default each pair's
     prompt once with both replies after it, masked from each other, one pair per row; or 2B
     padded rows, see :mod:`tunesmith.engine.logps`), their log-probs are summed over
     the response tokens, the pair loss (:mod:`tunesmith.losses.dpo`) is averaged over the step's
     pairs and backpropagated; then clip, AdamW step, schedule step;
  4. every ``eval_every`` steps (and at step 0): loss, implicit rewards, margin, reward accuracy
     and KL proxy on the held-out pairs; every ``save_every`` steps a checkpoint;
  5. save ``final/`` (loads with plain transformers or peft) with the chat template used.
"""

from __future__ import annotations

import contextlib
import copy
import hashlib
import math
import os
import random
import shutil
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from tqdm.auto import tqdm

from tunesmith.config.dpo import DPOConfig, PreferenceDataSection
from tunesmith.data.dataset import step_batches, write_jsonl
from tunesmith.data.preference import (
    EncodedPair,
    PreferencePair,
    encode_pairs,
    load_preference_pairs,
    pairs_hash,
)
from tunesmith.data.templates import template_string
from tunesmith.engine import checkpoint as ckpt
from tunesmith.engine.forward import is_prompt_learning, uses_flash_attention
from tunesmith.engine.logps import collate_pairs, collate_shared_prompt, sequence_logps
from tunesmith.engine.metrics_log import MetricsLog, read_metrics
from tunesmith.engine.optim import build_optimizer, build_scheduler
from tunesmith.engine.precision import autocast, resolve_precision
from tunesmith.engine.rundir import new_run_dir, write_run_files
from tunesmith.engine.tracking import open_metrics_log
from tunesmith.engine.trainable import build_trainable_model, due, total_steps
from tunesmith.errors import UserError
from tunesmith.losses.dpo import (
    REFERENCE_FREE,
    PairLogps,
    implicit_rewards,
    kl_proxy,
    preference_loss,
    reward_stats,
)
from tunesmith.models.adapters import parameter_counts
from tunesmith.models.load import load_tokenizer, pick_device, resolve_model

__all__ = ["DPOConfig", "DPOResult", "run"]


@dataclass
class PreferenceData:
    train_pairs: list[PreferencePair]
    val_pairs: list[PreferencePair]
    train: list[EncodedPair]
    val: list[EncodedPair]
    rejects: list[dict[str, Any]]
    stats: dict[str, Any]


@dataclass
class DPOResult:
    run_dir: Path
    final_dir: Path
    steps: int
    last_train_loss: float | None
    first_val: dict[str, float] | None  # held-out metrics before training (step 0)
    val: dict[str, float] | None  # held-out metrics of the final weights
    stats: dict[str, Any] = field(default_factory=dict)


# ----------------------------------------------------------------------------- set up


def _as_list(value: str | list[str] | None) -> list[str]:
    return [] if value is None else [value] if isinstance(value, str) else list(value)


def _read_pairs(
    paths: list[str], cfg: PreferenceDataSection, rejects: list[dict[str, Any]]
) -> list[PreferencePair]:
    pairs: list[PreferencePair] = []
    for path in paths:
        got, bad = load_preference_pairs(path, split=cfg.split, on_error=cfg.on_error)
        pairs += got
        rejects += bad
    return pairs


def _hold_out(
    pairs: list[PreferencePair], cfg: PreferenceDataSection
) -> tuple[list[PreferencePair], list[PreferencePair]]:
    """``val_fraction`` of the pairs (fixed seed) as the held-out set, the rest for training."""
    n_val = round(cfg.val_fraction * len(pairs)) if len(pairs) > 1 else 0
    if cfg.max_val_pairs is not None:
        n_val = min(n_val, cfg.max_val_pairs)
    order = list(range(len(pairs)))
    random.Random(cfg.seed).shuffle(order)
    held = set(order[:n_val])
    train = [p for i, p in enumerate(pairs) if i not in held]
    return train, [pairs[i] for i in sorted(held)]


def prepare_preference_data(cfg: PreferenceDataSection, tokenizer: Any) -> PreferenceData:
    """Read, split and tokenize the pairs; every dropped row is in ``rejects``."""
    rejects: list[dict[str, Any]] = []
    train_pairs = _read_pairs(_as_list(cfg.train), cfg, rejects)
    if cfg.validation is not None:
        val_pairs = _read_pairs(_as_list(cfg.validation), cfg, rejects)
        if cfg.max_val_pairs is not None:
            val_pairs = val_pairs[: cfg.max_val_pairs]
    else:
        train_pairs, val_pairs = _hold_out(train_pairs, cfg)
    if not train_pairs:
        raise UserError(
            f"data.train {cfg.train}: no usable preference pair ({len(rejects)} rejected; "
            "rejects.jsonl in the run dir says why)"
        )
    train, cut_train = encode_pairs(train_pairs, tokenizer, cfg.template, cfg.max_length)
    val, cut_val = encode_pairs(val_pairs, tokenizer, cfg.template, cfg.max_length)
    stats = {
        "train_pairs": len(train),
        "val_pairs": len(val),
        "rejected": len(rejects),
        "truncated_train": cut_train,
        "truncated_val": cut_val,
        "train_tokens": sum(
            len(e.prompt_ids) * 2 + len(e.chosen_ids) + len(e.rejected_ids) for e in train
        ),
    }
    return PreferenceData(train_pairs, val_pairs, train, val, rejects, stats)


@contextlib.contextmanager
def _eval_mode(model: torch.nn.Module) -> Iterator[None]:
    was_training = model.training
    model.eval()
    try:
        yield
    finally:
        model.train(was_training)


@dataclass
class Reference:
    """Where reference log-probs come from: ``none`` (reference-free loss), ``adapter_off``
    (the policy with its adapter disabled), ``frozen_copy`` (full fine-tuning) or a ``cache``
    of precomputed values (``split -> [N, 2]``, columns chosen and rejected)."""

    kind: str
    model: Any = None
    cache: dict[str, torch.Tensor] | None = None

    def live(self, batch: dict[str, torch.Tensor], precision: str, device: torch.device) -> Any:
        """``[2B]`` reference log-probs of a collated pair batch, computed now (no grad, eval
        mode: deterministic, so a live and a precomputed reference agree)."""
        off = (
            self.model.disable_adapter() if self.kind == "adapter_off" else contextlib.nullcontext()
        )
        with torch.no_grad(), _eval_mode(self.model), off, autocast(precision, device):
            return sequence_logps(self.model, batch)[0]

    def logps(
        self,
        batch: dict[str, torch.Tensor],
        split: str,
        indices: Sequence[int],
        precision: str,
        device: torch.device,
    ) -> torch.Tensor | None:
        if self.kind == "none":
            return None
        if self.cache is not None:
            rows = self.cache[split][list(indices)]
            return torch.cat([rows[:, 0], rows[:, 1]]).to(device)
        return self.live(batch, precision, device)


def _make_reference(cfg: DPOConfig, model: Any) -> Reference:
    if cfg.dpo.loss in REFERENCE_FREE:
        return Reference("none")
    if cfg.adapter.type != "full":
        return Reference("adapter_off", model)
    frozen = copy.deepcopy(model)
    frozen.requires_grad_(False)
    return Reference("frozen_copy", frozen.eval())


@dataclass
class Setup:
    cfg: DPOConfig
    run_dir: Path
    device: torch.device
    precision: str
    model: Any
    tokenizer: Any
    data: PreferenceData
    reference: Reference
    total_steps: int
    layout: str = "padded"

    def collate(self, pairs: Sequence[EncodedPair]) -> dict[str, torch.Tensor]:
        """One micro-batch of pairs in the run's layout, on the run's device."""
        pad = self.tokenizer.pad_token_id
        if self.layout == "shared_prompt":
            capacity = self.cfg.data.max_length if self.cfg.dpo.pack_pairs else None
            return _to(collate_shared_prompt(pairs, pad, capacity), self.device)
        return _to(collate_pairs(pairs, pad), self.device)


def _layout(cfg: DPOConfig, model: Any) -> tuple[str, str]:
    """``(layout, why)``: ``dpo.layout``, with ``auto`` resolved for this model."""
    flash = uses_flash_attention(model)
    if cfg.dpo.layout == "shared_prompt" and flash:
        raise UserError(
            "dpo.layout=shared_prompt needs a 4-D attention mask, which flash attention does not "
            "take; set model.attn_implementation=sdpa or dpo.layout=auto"
        )
    if cfg.dpo.layout != "auto":
        return cfg.dpo.layout, "dpo.layout"
    if is_prompt_learning(model):
        return "padded", "auto: virtual tokens come before the whole row"
    if flash:
        return "padded", "auto: flash attention takes no 4-D mask"
    return "shared_prompt", "auto"


def setup(cfg: DPOConfig) -> Setup:
    if int(os.environ.get("WORLD_SIZE", "1")) > 1:
        raise UserError("dpo runs in a single process; launch it without torchrun")
    device = pick_device(cfg.train.device)
    model_path = resolve_model(cfg.model.name_or_path)
    tokenizer = load_tokenizer(model_path)
    data = prepare_preference_data(cfg.data, tokenizer)  # bad data fails before the run dir
    run_dir = new_run_dir(cfg)
    write_jsonl(run_dir / "rejects.jsonl", data.rejects)
    write_jsonl(run_dir / "data" / "val.jsonl", [p.to_json() for p in data.val_pairs])
    model = build_trainable_model(cfg, model_path, device)
    trainable, total = parameter_counts(model)
    reference = _make_reference(cfg, model)
    layout, why = _layout(cfg, model)
    extra = {"base_model": str(model_path), "data": data.stats, "trainable_params": trainable}
    write_run_files(run_dir, cfg, _as_list(cfg.data.train) + _as_list(cfg.data.validation), extra)
    print(
        f"[tunesmith] run dir {run_dir}\n[tunesmith] dpo loss={cfg.dpo.loss} beta={cfg.dpo.beta}"
        f" reference={reference.kind}{' (precomputed)' if cfg.dpo.precompute_ref else ''};"
        f" layout={layout} ({why});"
        f" trainable params {trainable:,} / {total:,}; data {data.stats}",
        flush=True,
    )
    return Setup(
        cfg=cfg,
        run_dir=run_dir,
        device=device,
        precision=resolve_precision(cfg.train.precision, device),
        model=model,
        tokenizer=tokenizer,
        data=data,
        reference=reference,
        total_steps=total_steps(cfg.train, len(data.train)),
        layout=layout,
    )


# ----------------------------------------------------------------------------- reference cache


def _cache_path(s: Setup) -> Path:
    """``ref_logps-<key>.pt``: the key hashes the encoded pairs and the reference model."""
    key = hashlib.sha256(
        "|".join(
            [
                pairs_hash(s.data.train),
                pairs_hash(s.data.val),
                str(resolve_model(s.cfg.model.name_or_path)),
                s.cfg.model.dtype,
                s.cfg.model.quantization,
                s.precision,
                s.layout,
                str(s.cfg.dpo.pack_pairs),
            ]
        ).encode()
    ).hexdigest()[:16]
    return s.run_dir / f"ref_logps-{key}.pt"


def precompute_reference(s: Setup) -> dict[str, torch.Tensor]:
    """Reference log-probs ``[N, 2]`` of every train and held-out pair, computed once (or read
    back from the run dir's cache when the data hash matches)."""
    path = _cache_path(s)
    if path.is_file():
        return dict(torch.load(path, map_location="cpu"))
    out: dict[str, torch.Tensor] = {}
    size = s.cfg.train.micro_batch_size
    for split, pairs in (("train", s.data.train), ("val", s.data.val)):
        rows = []
        for start in tqdm(range(0, len(pairs), size), desc=f"reference log-probs ({split})"):
            chunk = pairs[start : start + size]
            batch = s.collate(chunk)
            logps = s.reference.live(batch, s.precision, s.device).float().cpu()
            rows.append(torch.stack(logps.chunk(2), dim=1))  # [b, 2]
        out[split] = torch.cat(rows) if rows else torch.zeros(0, 2)
    torch.save(out, path)
    return out


def _to(batch: dict[str, torch.Tensor], device: torch.device) -> dict[str, torch.Tensor]:
    return {k: v.to(device) for k, v in batch.items()}


# ----------------------------------------------------------------------------- loss and metrics


def _pair_logps(logps: torch.Tensor, lengths: torch.Tensor, ref: torch.Tensor | None) -> PairLogps:
    """Split ``[2B]`` rows (chosen first) into the per-pair view the losses take."""
    chosen, rejected = logps.chunk(2)
    len_c, len_r = lengths.float().chunk(2)
    ref_c, ref_r = ref.chunk(2) if ref is not None else (None, None)
    return PairLogps(chosen, rejected, len_c, len_r, ref_c, ref_r)


def _loss(cfg: DPOConfig, lp: PairLogps) -> torch.Tensor:
    d = cfg.dpo
    return preference_loss(d.loss, lp, d.beta, d.label_smoothing, d.simpo_gamma, d.orpo_lambda)


def _detach(lp: PairLogps) -> PairLogps:
    def det(t: torch.Tensor | None) -> torch.Tensor | None:
        return None if t is None else t.detach().float().cpu()

    return PairLogps(*(det(getattr(lp, f)) for f in PairLogps.__dataclass_fields__))  # type: ignore[arg-type]


def _concat(parts: list[PairLogps]) -> PairLogps:
    def cat(name: str) -> torch.Tensor | None:
        values = [getattr(p, name) for p in parts]
        return None if values[0] is None else torch.cat(values)

    return PairLogps(*(cat(f) for f in PairLogps.__dataclass_fields__))  # type: ignore[arg-type]


def pair_metrics(cfg: DPOConfig, lp: PairLogps) -> dict[str, float]:
    """Loss, implicit rewards, margin, reward accuracy, KL proxy and log-prob stats of pairs.

    ``avg_logp_accuracy`` is the share of pairs whose chosen reply has the higher per-token
    log-likelihood under the policy: unlike the reward accuracy it is meaningful at step 0, when
    the policy equals the reference and every implicit reward is 0.
    """
    beta = cfg.dpo.beta
    avg_c, avg_r = lp.chosen / lp.chosen_lengths, lp.rejected / lp.rejected_lengths
    if lp.ref_chosen is not None and lp.ref_rejected is not None:
        rew_c, rew_r = (
            implicit_rewards(lp.chosen, lp.ref_chosen, beta),
            implicit_rewards(lp.rejected, lp.ref_rejected, beta),
        )
    else:
        rew_c, rew_r = implicit_rewards(avg_c, None, beta), implicit_rewards(avg_r, None, beta)
    out = {"loss": _loss(cfg, lp).mean(), **reward_stats(rew_c, rew_r)}
    if lp.ref_chosen is not None and lp.ref_rejected is not None:
        out["kl_proxy"] = kl_proxy(
            torch.cat([lp.chosen, lp.rejected]),
            torch.cat([lp.ref_chosen, lp.ref_rejected]),
            torch.cat([lp.chosen_lengths, lp.rejected_lengths]),
        )
    out["logps/chosen"] = lp.chosen.mean()
    out["logps/rejected"] = lp.rejected.mean()
    out["avg_logp_accuracy"] = (avg_c > avg_r).float().mean()
    return {k: float(v) for k, v in out.items()}


# ----------------------------------------------------------------------------- one step


def train_step(
    s: Setup, optimizer: torch.optim.Optimizer, scheduler: Any, micro: list[list[int]]
) -> dict[str, float]:
    """One optimizer step over ``grad_accum`` micro-batches of pair indices.

    Each micro-batch's summed pair losses are divided by the step's pair count, so the gradient
    is that of the mean pair loss over the step however it is split.
    """
    n_pairs = sum(len(idx) for idx in micro)
    parts: list[PairLogps] = []
    positions = 0
    for idx in micro:
        batch = s.collate([s.data.train[i] for i in idx])
        positions += batch["input_ids"].numel()
        ref = s.reference.logps(batch, "train", idx, s.precision, s.device)
        with autocast(s.precision, s.device):
            logps, lengths = sequence_logps(s.model, batch)  # one forward: chosen and rejected
        lp = _pair_logps(logps, lengths, ref)
        (_loss(s.cfg, lp).sum() / n_pairs).backward()
        parts.append(_detach(lp))
    params = [p for p in s.model.parameters() if p.requires_grad]
    norm = torch.nn.utils.clip_grad_norm_(params, s.cfg.optim.max_grad_norm or math.inf)
    lr = scheduler.get_last_lr()[0]
    optimizer.step()
    scheduler.step()
    optimizer.zero_grad(set_to_none=True)
    return {
        **pair_metrics(s.cfg, _concat(parts)),
        "grad_norm": float(norm),
        "lr": lr,
        "pairs": n_pairs,
        "input_positions": positions,
    }


def evaluate(s: Setup) -> dict[str, float] | None:
    """Metrics of :func:`pair_metrics` over all held-out pairs (no grad, eval mode)."""
    if not s.data.val:
        return None
    size = s.cfg.train.micro_batch_size
    parts: list[PairLogps] = []
    with torch.no_grad(), _eval_mode(s.model):
        starts = range(0, len(s.data.val), size)
        for start in tqdm(starts, desc="held-out pairs", unit="batch", leave=False):
            idx = list(range(start, min(start + size, len(s.data.val))))
            batch = s.collate([s.data.val[i] for i in idx])
            ref = s.reference.logps(batch, "val", idx, s.precision, s.device)
            with autocast(s.precision, s.device):
                logps, lengths = sequence_logps(s.model, batch)
            parts.append(_detach(_pair_logps(logps, lengths, ref)))
    return pair_metrics(s.cfg, _concat(parts))


# ----------------------------------------------------------------------------- bookkeeping


def _save_export(s: Setup, out: Path) -> None:
    """A directory that loads with plain transformers / peft, tokenizer and template included."""
    s.tokenizer.chat_template = template_string(s.cfg.data.template, s.tokenizer)
    tmp = ckpt.atomic_dir(out)
    try:
        ckpt.export_model(s.model, tmp, s.tokenizer)
        (tmp / "tunesmith_config.yaml").write_text((s.run_dir / "config.yaml").read_text())
        ckpt.commit_dir(tmp, out)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


def _restore(s: Setup, optimizer: torch.optim.Optimizer, scheduler: Any) -> int:
    """Weights, optimizer, schedule and RNG of the run's latest checkpoint; its step (0: none).
    The reference needs nothing: a frozen copy was taken from the base before this load, and
    a precomputed cache is found again by its key."""
    found = ckpt.list_checkpoints(s.run_dir)
    if not found:
        print(f"[tunesmith] no checkpoint in {s.run_dir}; starting from step 0", flush=True)
        return 0
    step, path = found[-1]
    saved = ckpt.load_state(path)
    ckpt.load_trainable(s.model, path)
    optimizer.load_state_dict(saved["optimizer"])
    scheduler.load_state_dict(saved["scheduler"])
    ckpt.set_rng_state(saved["rng"][0])
    metrics = s.run_dir / "metrics.jsonl"
    if metrics.is_file():  # drop what the interrupted run logged after its checkpoint
        write_jsonl(metrics, [r for r in read_metrics(metrics) if r.get("step", 0) <= step])
    print(f"[tunesmith] resumed from {path} (step {step})", flush=True)
    return step


def _log_eval(s: Setup, step: int, log: MetricsLog) -> dict[str, float] | None:
    metrics = evaluate(s)
    if metrics is not None:
        log.write({"step": step, "split": "val", **metrics})
        print(
            f"[tunesmith] step {step} held-out: loss {metrics['loss']:.4f} reward accuracy "
            f"{metrics['accuracy']:.3f} margin {metrics['margin']:.4f} avg-logp accuracy "
            f"{metrics['avg_logp_accuracy']:.3f}",
            flush=True,
        )
    return metrics


# ----------------------------------------------------------------------------- the loop


def run(cfg: DPOConfig, skip_preflight: bool = False) -> DPOResult:
    """Train with the configured preference loss; ``skip_preflight`` is accepted for the CLI
    (preference data has no SFT pre-flight checks)."""
    s = setup(cfg)
    if cfg.dpo.precompute_ref and s.reference.kind != "none":
        s.reference.cache = precompute_reference(s)
    optimizer = build_optimizer(s.model, cfg.optim)
    scheduler = build_scheduler(optimizer, cfg.optim, s.total_steps)
    step = _restore(s, optimizer, scheduler) if cfg.train.resume else 0
    batches = step_batches(
        len(s.data.train),
        cfg.train.seed,
        cfg.train.micro_batch_size,
        cfg.train.grad_accum,
        start_step=step,
    )
    log = open_metrics_log(s.run_dir, cfg)  # metrics.jsonl (+ tracking.backends)
    evaluate_first = cfg.train.eval_every is not None and step == 0
    first_val = _log_eval(s, 0, log) if evaluate_first else None
    last_val: tuple[int, dict[str, float] | None] = (0, first_val)
    bar = tqdm(total=s.total_steps, initial=step, desc="dpo", unit="step", dynamic_ncols=True)
    last_loss = None
    while step < s.total_steps:
        t0 = time.perf_counter()
        m = train_step(s, optimizer, scheduler, next(batches))
        step += 1
        last_loss = m["loss"]
        m["step_seconds"] = time.perf_counter() - t0
        if step % cfg.train.log_every == 0 or step == s.total_steps:
            log.write({"step": step, "split": "train", **m})
        bar.set_postfix(
            loss=f"{m['loss']:.4f}", acc=f"{m['accuracy']:.2f}", margin=f"{m['margin']:.3f}"
        )
        bar.update(1)
        if due(step, cfg.train.eval_every, s.total_steps):
            last_val = (step, _log_eval(s, step, log))
        if due(step, cfg.train.save_every, s.total_steps):
            state = {"step": step, "last_train_loss": last_loss}
            ckpt.save_checkpoint(
                s.run_dir, step, s.model, optimizer, scheduler, state, cfg.train.keep_last
            )
    bar.close()
    final = s.run_dir / "final"
    _save_export(s, final)
    val = last_val[1] if last_val[0] == step else _log_eval(s, step, log)
    log.write({"step": step, "split": "final", **(val or {})})
    log.close()
    return DPOResult(s.run_dir, final, step, last_loss, first_val, val, s.data.stats)
