"""Direct preference optimisation and its family (DPO, cDPO, IPO, hinge/SLiC, SimPO, ORPO).

The algorithm, top to bottom:
  1. set up (:class:`tunesmith.engine.run.Run`): resolve the base model, read the preference
     pairs (:func:`tunesmith.data.preference.read_preference_data`, the shared held-out split)
     and tokenize them, attach the adapter (SFT's ``adapter``/``lora``/... sections) and pick the
     reference: for adapters the same model with its adapter disabled (no second copy); for full
     fine-tuning a frozen deep copy; none for the reference-free losses (SimPO, ORPO);
  2. optionally (``dpo.precompute_ref``) compute the reference log-probs of every pair once,
     cache them in the run dir keyed by a hash of the data, and never run the reference again;
     a checkpoint holds the hash of the cache, and a resumed run checks it (recomputing a cache
     that is missing or differs);
  3. loop: per optimizer step take ``grad_accum`` micro-batches of pairs, each process its share
     of each; for each, chosen and rejected go through the policy in ONE forward pass
     (``dpo.layout``: by default each pair's prompt once with both replies after it, masked
     from each other, one pair per row; or 2B padded rows, see :mod:`tunesmith.data.pair_batches`),
     their log-probs are summed over the response tokens, the pair loss
     (:mod:`tunesmith.losses.dpo`) is averaged over the step's pairs on every process and
     backpropagated; then clip, AdamW step, schedule step;
  4. every ``eval_every`` steps (and at step 0): loss, implicit rewards, margin, reward accuracy,
     KL proxy and the chosen/rejected mean log-probs with their change since the first evaluation
     (one warning when the chosen ones fell by > ``dpo.likelihood_warning`` nats) on the
     held-out pairs, ``best/`` and early stopping on the held-out loss;
     every ``save_every`` steps a checkpoint (weights, optimizer, schedule, RNG, step);
  5. save ``final/`` (loads with plain transformers or peft) with the chat template used.

Under ``torchrun`` the policy's forward is DDP-replicated or FSDP2-sharded (``train.parallel``).
"""

from __future__ import annotations

import contextlib
import copy
import hashlib
import time
from collections.abc import Iterator, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import torch
from tqdm.auto import tqdm

from tunesmith.checks.pairs import preflight_pairs
from tunesmith.checks.preflight import PreflightError
from tunesmith.config.dpo import DPOConfig
from tunesmith.data.dataset import write_jsonl
from tunesmith.data.pair_batches import collate_pairs, collate_shared_prompt, held_out_shares
from tunesmith.data.preference import (
    EncodedPair,
    EncodedSplits,
    PairSplits,
    encode_pair_splits,
    pairs_hash,
    read_pair_section,
)
from tunesmith.data.split import held_out_note
from tunesmith.data.templates import template_string
from tunesmith.engine.distributed import (
    DistInfo,
    all_reduce_sum,
    barrier,
    gather_objects,
    grad_sync,
    shard,
    wrap_for_training,
)
from tunesmith.engine.forward import is_prompt_learning, uses_flash_attention
from tunesmith.engine.logps import LogpsModule, cache_digest, cached_reference
from tunesmith.engine.precision import autocast
from tunesmith.engine.run import OnRun, Run
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
from tunesmith.models.load import load_tokenizer, resolve_model
from tunesmith.models.quantization import quantization_config

__all__ = ["DPOConfig", "DPOResult", "run"]


@dataclass
class DPOResult:
    run_dir: Path
    final_dir: Path
    steps: int
    last_train_loss: float | None
    first_val: dict[str, float] | None  # held-out metrics before training (step 0)
    val: dict[str, float] | None  # held-out metrics of the final weights
    best_val_loss: float | None = None
    stopped_early: bool = False
    stats: dict[str, Any] = field(default_factory=dict)


# ----------------------------------------------------------------------------- set up


@contextlib.contextmanager
def _eval_mode(module: torch.nn.Module) -> Iterator[None]:
    was_training = module.training
    module.eval()
    try:
        yield
    finally:
        module.train(was_training)


@dataclass
class Reference:
    """Where reference log-probs come from: ``none`` (reference-free loss), ``adapter_off``
    (the policy's step module with its adapter disabled), ``frozen_copy`` (full fine-tuning: a
    :class:`LogpsModule` over a frozen copy of the base, FSDP-sharded like the policy) or a
    ``cache`` of precomputed values (``split -> [N, 2]``, columns chosen and rejected)."""

    kind: str
    module: Any = None  # batch -> (logps [2B], lengths [2B])
    cache: dict[str, torch.Tensor] | None = None

    def live(self, batch: dict[str, torch.Tensor], precision: str, device: torch.device) -> Any:
        """``[2B]`` reference log-probs of a collated pair batch, computed now (no grad, eval
        mode: deterministic, so a live and a precomputed reference agree)."""
        with torch.no_grad(), _eval_mode(self.module), autocast(precision, device):
            return self.module(batch, adapter_off=self.kind == "adapter_off")[0]

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


def _make_reference(cfg: DPOConfig, step_module: Any, frozen: Any, run: Run) -> Reference:
    if cfg.dpo.loss in REFERENCE_FREE:
        return Reference("none")
    if frozen is None:
        return Reference("adapter_off", step_module)
    module = LogpsModule(frozen)  # every rank in every forward under FSDP, as the policy
    if cfg.train.parallel == "fsdp":
        module = wrap_for_training(module, frozen, run.dist, run.device, "fsdp")
    return Reference("frozen_copy", module)


def _frozen_copy(cfg: DPOConfig, model: Any) -> Any:
    """Full fine-tuning's reference: the base weights, frozen (taken before any sharding)."""
    if cfg.dpo.loss in REFERENCE_FREE or cfg.adapter.type != "full":
        return None
    frozen = copy.deepcopy(model)
    frozen.requires_grad_(False)
    return frozen.eval()


@dataclass
class Setup(OnRun):
    cfg: DPOConfig
    run: Run
    model: Any
    tokenizer: Any
    data: EncodedSplits
    reference: Reference
    total_steps: int
    step_module: Any  # LogpsModule(model): alone, DDP-replicated or FSDP-sharded across ranks
    layout: str = "padded"
    last_val: tuple[int, dict[str, float] | None] | None = None  # (step, held-out metrics)

    def collate(self, pairs: Sequence[EncodedPair]) -> dict[str, torch.Tensor]:
        """One micro-batch of pairs in the run's layout, on the run's device."""
        pad = self.tokenizer.pad_token_id
        if self.layout == "shared_prompt":
            capacity = self.cfg.data.max_length if self.cfg.dpo.pack_pairs else None
            batch = collate_shared_prompt(pairs, pad, capacity)
        else:
            batch = collate_pairs(pairs, pad)
        return {k: v.to(self.device) for k, v in batch.items()}


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


def _read_data(
    cfg: DPOConfig, run: Run, skip_preflight: bool
) -> tuple[Path, Any, PairSplits, EncodedSplits]:
    """Base model path, tokenizer, the pairs as read and as token ids (pre-flight checked)."""
    if run.dist.is_main:  # a GGUF is converted once, by rank 0, before the others read the cache
        resolve_model(cfg.model.name_or_path)
    barrier(run.dist)
    model_path = resolve_model(cfg.model.name_or_path)
    tokenizer = load_tokenizer(model_path)
    d = cfg.data
    splits = read_pair_section(d)
    data = encode_pair_splits(splits, tokenizer, d.template, d.max_length)
    # Pre-flight of the pairs (checks/pairs.py); `tunesmith doctor` explains, --skip-preflight
    # overrides.
    if not skip_preflight:
        checks = preflight_pairs(
            splits.train, tokenizer, cfg, rejects=splits.rejects, encoded=data.train
        )
        if failures := [f"{c.name}: {c.detail}" for c in checks if c.failed]:
            raise PreflightError(failures)
    return model_path, tokenizer, splits, data


def setup(cfg: DPOConfig, skip_preflight: bool = False) -> Setup:
    quantization_config(cfg.model.quantization, torch.float32)  # backend missing: fail first
    run = Run.start(cfg)
    with run.preparing():  # bad data: refused before anything is written
        model_path, tokenizer, splits, data = _read_data(cfg, run, skip_preflight)
    if run.dist.is_main:
        write_jsonl(run.run_dir / "rejects.jsonl", splits.rejects)
        write_jsonl(run.run_dir / "data" / "val.jsonl", [p.to_json() for p in splits.val])
        if note := held_out_note(len(data.val), "pairs"):
            print(note, flush=True)
    model = build_trainable_model(cfg, model_path, run.device)
    trainable, total = parameter_counts(model)
    layout, why = _layout(cfg, model)
    frozen = _frozen_copy(cfg, model)
    step_module = wrap_for_training(
        LogpsModule(model), model, run.dist, run.device, cfg.train.parallel
    )
    reference = _make_reference(cfg, step_module, frozen, run)
    files = [*_file_list(cfg.data.train), *_file_list(cfg.data.validation)]
    run.announce(
        files,
        {"base_model": str(model_path), "data": data.stats, "trainable_params": trainable},
        f"dpo loss={cfg.dpo.loss} beta={cfg.dpo.beta} reference={reference.kind}"
        f"{' (precomputed)' if cfg.dpo.precompute_ref else ''}; layout={layout} ({why}); "
        f"trainable params {trainable:,} / {total:,}; processes {run.dist.world}"
        f"{f' ({cfg.train.parallel})' if run.dist.enabled else ''}; data {data.stats}",
    )
    return Setup(
        cfg=cfg,
        run=run,
        model=model,
        tokenizer=tokenizer,
        data=data,
        reference=reference,
        total_steps=total_steps(cfg.train, len(data.train), run.dist.world),
        step_module=step_module,
        layout=layout,
    )


def _file_list(value: str | list[str] | None) -> list[str]:
    return [] if value is None else [value] if isinstance(value, str) else list(value)


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


def _compute_reference(s: Setup) -> dict[str, torch.Tensor]:
    """Reference log-probs ``[N, 2]`` of every train and held-out pair. Every rank computes all
    of them, in the same micro-batches (FSDP needs every rank in every forward)."""
    out: dict[str, torch.Tensor] = {}
    size = s.cfg.train.micro_batch_size
    for split, pairs in (("train", s.data.train), ("val", s.data.val)):
        rows = []
        starts = range(0, len(pairs), size)
        for start in tqdm(starts, desc=f"reference ({split})", disable=not s.dist.is_main):
            logps = s.reference.live(s.collate(pairs[start : start + size]), s.precision, s.device)
            rows.append(torch.stack(logps.float().cpu().chunk(2), dim=1))  # [b, 2]
        out[split] = torch.cat(rows) if rows else torch.zeros(0, 2)
    return out


# ----------------------------------------------------------------------------- loss and metrics


def _pair_logps(logps: torch.Tensor, lengths: torch.Tensor, ref: torch.Tensor | None) -> PairLogps:
    """Split ``[2B]`` rows (chosen first) into the per-pair view the losses take."""
    chosen, rejected = logps.chunk(2)
    len_c, len_r = lengths.float().chunk(2)
    ref_c, ref_r = ref.chunk(2) if ref is not None else (None, None)
    return PairLogps(chosen, rejected, len_c, len_r, ref_c, ref_r)


def _loss(cfg: DPOConfig, lp: PairLogps) -> torch.Tensor:
    d = cfg.dpo
    return preference_loss(
        d.loss, lp, d.beta, d.label_smoothing, d.simpo_gamma, d.orpo_lambda, d.sft_weight
    )


def _detach(lp: PairLogps, keep: int | None = None) -> PairLogps:
    """A CPU float copy of ``lp`` (its first ``keep`` pairs)."""

    def det(t: torch.Tensor | None) -> torch.Tensor | None:
        return None if t is None else t[:keep].detach().float().cpu()

    return PairLogps(*(det(getattr(lp, f)) for f in PairLogps.__dataclass_fields__))  # type: ignore[arg-type]


def _concat(parts: Sequence[PairLogps]) -> PairLogps:
    def cat(name: str) -> torch.Tensor | None:
        values = [getattr(p, name) for p in parts]
        return None if values[0] is None else torch.cat(values)

    return PairLogps(*(cat(f) for f in PairLogps.__dataclass_fields__))  # type: ignore[arg-type]


def _all_pairs(parts: Sequence[PairLogps], info: DistInfo) -> PairLogps:
    """Every rank's pairs (rank order): metrics are those of the global step or held-out set."""
    return _concat([PairLogps(**d) for d in gather_objects(asdict(_concat(parts)), info)])


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
    """One optimizer step over ``grad_accum`` micro-batches of pair indices (this rank's share).

    With P the step's pairs over every rank and W the processes, each micro-batch's summed pair
    losses are scaled by W / P: DDP/FSDP average the gradients over ranks, so the gradient is
    that of the mean pair loss over the global step however it is split. Metrics are those of
    every rank's pairs.
    """
    n_pairs = all_reduce_sum(float(sum(len(idx) for idx in micro)), s.dist, s.device)
    scale = s.dist.world / n_pairs
    parts: list[PairLogps] = []
    positions = 0
    for i, idx in enumerate(micro):
        batch = s.collate([s.data.train[j] for j in idx])
        positions += batch["input_ids"].numel()
        ref = s.reference.logps(batch, "train", idx, s.precision, s.device)
        with grad_sync(s.step_module, on=i == len(micro) - 1):
            with autocast(s.precision, s.device):
                logps, lengths = s.step_module(batch)  # one forward: chosen and rejected
            lp = _pair_logps(logps, lengths, ref)
            (_loss(s.cfg, lp).sum() * scale).backward()
        parts.append(_detach(lp))
    params = [p for p in s.model.parameters() if p.requires_grad]
    tail = s.run.optimizer_step(params, optimizer, scheduler)
    return {
        **pair_metrics(s.cfg, _all_pairs(parts, s.dist)),
        **tail,
        "pairs": n_pairs,
        "input_positions": all_reduce_sum(float(positions), s.dist, s.device),
    }


def evaluate(s: Setup) -> dict[str, float] | None:
    """Metrics of :func:`pair_metrics` over all held-out pairs (no grad, eval mode), each rank
    computing its share."""
    if not s.data.val:
        return None
    parts: list[PairLogps] = []
    with torch.no_grad(), _eval_mode(s.step_module):
        shares = held_out_shares(
            len(s.data.val), s.cfg.train.micro_batch_size, s.dist.rank, s.dist.world
        )
        for idx, keep in shares:
            batch = s.collate([s.data.val[i] for i in idx])
            ref = s.reference.logps(batch, "val", idx, s.precision, s.device)
            with autocast(s.precision, s.device):
                logps, lengths = s.step_module(batch)
            parts.append(_detach(_pair_logps(logps, lengths, ref), keep))
    return pair_metrics(s.cfg, _all_pairs(parts, s.dist))


# ----------------------------------------------------------------------------- bookkeeping


def _save_export(s: Setup, out: Path) -> Path:
    """A directory that loads with plain transformers / peft, tokenizer and template included.
    Every rank calls it (FSDP gathers the weights); rank 0 writes."""
    s.tokenizer.chat_template = template_string(s.cfg.data.template, s.tokenizer)
    return s.run.export_model(out, s.model, s.tokenizer, s.step_module)


def _log_eval(s: Setup) -> dict[str, float] | None:
    """Held-out metrics of the current weights, logged (and printed by rank 0)."""
    step = s.run.state.step
    metrics = evaluate(s)
    s.last_val = (step, metrics)
    if metrics is not None:
        metrics.update(likelihood_change(s, metrics))
        s.run.write({"step": step, "split": "val", **metrics})
        if s.dist.is_main:
            print(
                f"[tunesmith] step {step} held-out: loss {metrics['loss']:.4f} reward accuracy "
                f"{metrics['accuracy']:.3f} margin {metrics['margin']:.4f} avg-logp accuracy "
                f"{metrics['avg_logp_accuracy']:.3f}",
                flush=True,
            )
    return metrics


def likelihood_change(s: Setup, metrics: dict[str, float]) -> dict[str, float]:
    """The held-out mean log-probs of chosen and rejected replies (nats per sequence) minus those
    of the first evaluation (kept in the run state, so a resumed run measures from the same one).
    DPO can lower both while the margin grows (likelihood displacement): when the chosen one has
    fallen by more than ``dpo.likelihood_warning``, rank 0 prints one warning per run."""
    keys = ("logps/chosen", "logps/rejected")
    state = s.run.state.method
    start = state.setdefault(
        "logps_start", {"step": s.run.state.step, **{k: metrics[k] for k in keys}}
    )
    change = {f"{k}_change": metrics[k] - start[k] for k in keys}
    drop = -change["logps/chosen_change"]
    if drop > s.cfg.dpo.likelihood_warning and not state.get("likelihood_warned"):
        state["likelihood_warned"] = True
        if s.dist.is_main:
            print(
                f"[tunesmith] warning: the held-out chosen replies' mean log-prob fell by "
                f"{drop:.2f} nats per sequence since step {start['step']} (rejected: "
                f"{-change['logps/rejected_change']:.2f}): DPO is lowering the likelihood of the "
                "preferred replies while the margin grows. Remedies: a higher dpo.beta, an SFT "
                "term on the chosen replies (dpo.sft_weight, e.g. 1.0), or fewer steps (best/ "
                "keeps the best held-out loss).",
                flush=True,
            )
    return change


def _evaluate(s: Setup) -> bool:
    """Held-out evaluation; ``best/`` keeps the lowest held-out loss; True: stop early."""
    metrics = _log_eval(s)
    loss = None if metrics is None else metrics["loss"]
    return s.run.evaluated(loss, lambda out: _save_export(s, out))


def _report_step(s: Setup, m: dict[str, float], bar: Any) -> None:
    """metrics.jsonl and the progress bar for one step."""
    step = s.run.state.step
    if step % s.cfg.train.log_every == 0 or step == s.total_steps:
        s.run.write({"step": step, "split": "train", **m})
    bar.set_postfix(
        loss=f"{m['loss']:.4f}", acc=f"{m['accuracy']:.2f}", margin=f"{m['margin']:.3f}"
    )
    bar.update(1)


# ----------------------------------------------------------------------------- the loop


def run(cfg: DPOConfig, skip_preflight: bool = False) -> DPOResult:
    """Train with the configured preference loss (``skip_preflight``: train even when a pair
    pre-flight check fails)."""
    s = setup(cfg, skip_preflight)
    run, info = s.run, s.dist
    optimizer, scheduler = run.optimizer(s.model, s.total_steps, s.step_module)
    state = run.state
    if cfg.dpo.precompute_ref and s.reference.kind != "none":
        path, compute = _cache_path(s), lambda: _compute_reference(s)
        s.reference.cache = cached_reference(path, compute, state.method.get("ref_logps"), info)
        state.method["ref_logps"] = cache_digest(s.reference.cache)
    # One step = grad_accum rounds of (micro_batch_size x world) pairs; each rank takes its share.
    batches = run.batches(len(s.data.train))
    run.open_log()
    first_val = _log_eval(s) if cfg.train.eval_every is not None and state.step == 0 else None
    bar = run.progress(s.total_steps, "dpo")
    stopped_early, last_loss = False, None
    while state.step < s.total_steps and not stopped_early:
        t0 = time.perf_counter()  # the step alone: evaluation and checkpoints are not counted
        m = train_step(s, optimizer, scheduler, [shard(mb, info) for mb in next(batches)])
        state.step += 1
        last_loss = m["loss"]
        m["step_seconds"] = time.perf_counter() - t0
        _report_step(s, m, bar)
        if due(state.step, cfg.train.eval_every, s.total_steps):
            stopped_early = _evaluate(s)
        if due(state.step, cfg.train.save_every, s.total_steps):
            run.checkpoint(s.model, optimizer, scheduler, s.step_module)
        run.crash_point()
    bar.close()
    final = _save_export(s, s.run_dir / "final")
    fresh = s.last_val is not None and s.last_val[0] == state.step
    val = s.last_val[1] if fresh and s.last_val is not None else _log_eval(s)
    run.write({"step": state.step, "split": "final", **(val or {})})
    run.finish()
    best = state.best_metric if state.best_step else None
    return DPOResult(
        run_dir=s.run_dir,
        final_dir=final,
        steps=state.step,
        last_train_loss=last_loss,
        first_val=first_val,
        val=val,
        best_val_loss=best if best is None else float(best),
        stopped_early=stopped_early,
        stats=s.data.stats,
    )
