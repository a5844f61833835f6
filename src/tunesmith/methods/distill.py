"""Knowledge distillation: a student learns a teacher's next-token distributions (GKD family).

The algorithm, top to bottom:
  1. set up (:class:`tunesmith.engine.run.Run`): resolve the student (a model, or a run dir's
     ``final/``; an adapter is merged into its base first) and the teacher (a run dir, merged or
     an adapter on its base, or a model); refuse a pair that does not share a tokenizer, naming
     both, before any model is loaded; tokenize the data with SFT's reader, template and masks
     (reply tokens only); attach the student's adapter (SFT's ``adapter``/``lora``/... sections,
     or ``train.trainable_top_layers``); the teacher is frozen, in eval mode;
  2. loop: each optimizer step is on-policy with probability ``distill.lambda`` (drawn from
     ``train.seed`` and the step number, so every rank and a resumed run agree; Agarwal et al.
     2024, Algorithm 1). Off-policy, the targets are the dataset's replies; on-policy, the student
     samples a reply to each example's prompt (:func:`tunesmith.generation.sample`, each prompt
     seeded by ``(train.seed, step, example)``: a resume draws the same replies) and the teacher
     scores it. Per micro-batch the teacher's hidden states are computed without grad; then, a
     chunk of ``distill.chunk_size`` reply positions at a time, teacher and student logits
     ``[chunk, V]`` give the per-token loss of :mod:`tunesmith.losses.distill` (the student's
     chunk is recomputed in the backward pass), summed and divided by the step's reply tokens
     over every rank; backprop, clip, AdamW step, schedule step;
  3. every ``eval_every`` steps (and at step 0): the loss, the forward KL at T = 1 and the
     cross-entropy on the held-out replies; ``best/`` and early stopping on the held-out loss;
     every ``save_every`` steps a checkpoint (weights, optimizer, schedule, RNG, step);
  4. save ``final/`` (loads with plain transformers or peft) with the chat template used.

Under ``torchrun`` the student is DDP-replicated; every rank holds the whole teacher.
"""

from __future__ import annotations

import hashlib
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from torch.utils.checkpoint import checkpoint

from tunesmith.checks.preflight import PreflightError, preflight_failures
from tunesmith.checks.tokenizers import shared_tokenizer_problem, tokenizer_dir
from tunesmith.config.distill import DistillConfig, DistillSection
from tunesmith.data.dataset import PreparedData, collate, data_files, prepare_data, write_jsonl
from tunesmith.data.pair_batches import held_out_shares
from tunesmith.data.templates import IGNORE_INDEX, Encoded, template_string
from tunesmith.engine.distributed import (
    DistInfo,
    all_reduce_sum,
    barrier,
    grad_sync,
    shard,
    wrap_for_training,
)
from tunesmith.engine.forward import decoder_hidden, forward_logits, head_parts
from tunesmith.engine.logps import cache_digest, cached_reference
from tunesmith.engine.precision import autocast
from tunesmith.engine.run import OnRun, Run
from tunesmith.engine.trainable import build_trainable_model, due, total_steps
from tunesmith.errors import UserError
from tunesmith.generation import SamplingParams, derive_seed, sample
from tunesmith.losses.distill import distill_token_loss, topk_token_loss
from tunesmith.models.adapters import parameter_counts
from tunesmith.models.load import (
    find_weights_dir,
    load_for_inference,
    load_tokenizer,
    resolve_model,
)

__all__ = ["DistillConfig", "DistillResult", "TokenizerMismatchError", "run"]

METRICS = ("loss", "div", "ce", "kl")  # summed per step / held-out set, then divided


class TokenizerMismatchError(UserError):
    """Teacher and student do not tokenize text into the same ids."""


@dataclass
class DistillResult:
    run_dir: Path
    final_dir: Path
    steps: int
    last_train_loss: float | None
    first_val: dict[str, float] | None  # held-out metrics before training (step 0)
    val: dict[str, float] | None  # held-out metrics of the final weights
    best_val_loss: float | None = None
    stopped_early: bool = False
    stats: dict[str, Any] = field(default_factory=dict)


# ----------------------------------------------------------------------------- teacher, student


def _is_adapter(weights: Path | None) -> bool:
    return weights is not None and (weights / "adapter_config.json").is_file()


def check_tokenizers(cfg: DistillConfig) -> Any:
    """The student's tokenizer, once it is known to be the teacher's; else a
    :class:`TokenizerMismatchError` naming both."""
    problem = shared_tokenizer_problem(cfg.model.name_or_path, cfg.distill.teacher)
    if problem is not None:
        raise TokenizerMismatchError(problem)
    return load_tokenizer(tokenizer_dir(cfg.model.name_or_path))


def student_base(cfg: DistillConfig, run: Run) -> Path:
    """The student's starting weights as a model directory: the model itself, a run dir's
    merged ``final/``, or (an adapter run) its adapter merged into its base, written once by
    rank 0 to ``<run dir>/student_base``."""
    target = cfg.model.name_or_path
    weights = find_weights_dir(target)
    if not _is_adapter(weights):
        return weights if weights is not None else resolve_model(target)
    out = run.run_dir / "student_base"
    if run.dist.is_main and not (out / "config.json").is_file():
        model, tokenizer = load_for_inference(
            str(weights), device="cpu", dtype="float32", trust_pickle=cfg.model.trust_pickle
        )
        model.merge_and_unload().save_pretrained(out, safe_serialization=True)
        tokenizer.save_pretrained(out)
    barrier(run.dist)
    return out


def load_teacher(cfg: DistillConfig, run: Run) -> Any:
    """The frozen teacher on this rank's device (an adapter is merged for speed)."""
    model, _ = load_for_inference(
        cfg.distill.teacher, device=str(run.device), trust_pickle=cfg.model.trust_pickle
    )
    if hasattr(model, "merge_and_unload"):
        model = model.merge_and_unload()
    model.requires_grad_(False)
    return model.eval()


def vocab_size(model: Any) -> int:
    return int(model.get_output_embeddings().weight.shape[0])


# ----------------------------------------------------------------------------- chunked logits


@dataclass
class Positions:
    """A model's view of a batch's reply positions: ``hidden`` [N, H] and the output ``head``
    (logits are made a chunk at a time), or, for models not known to be decoder -> head,
    their ``[N, V]`` logits (``head`` None)."""

    hidden: torch.Tensor
    head: Any
    softcap: float | None


def positions(model: Any, batch: dict[str, torch.Tensor], keep: torch.Tensor) -> Positions:
    """Hidden states (or logits) of the positions ``keep`` [B, T-1] whose next token counts."""
    parts = head_parts(model)
    if parts is None:
        return Positions(forward_logits(model, batch)[:, :-1][keep], None, None)
    decoder, head, softcap = parts
    return Positions(decoder_hidden(decoder, model, batch)[:, :-1][keep], head, softcap)


def chunk_logits(head: Any, softcap: float | None, h: torch.Tensor, vocab: int) -> torch.Tensor:
    """Logits [n, vocab] of hidden states [n, H] (already logits when ``head`` is None)."""
    z = (head(h) if head is not None else h).float()[:, :vocab]
    return torch.tanh(z / softcap) * softcap if softcap is not None else z


TeacherChunk = torch.Tensor | tuple[torch.Tensor, torch.Tensor]  # [n, V] or cached top-k


def _chunk_loss(
    head: Any,
    softcap: float | None,
    h: torch.Tensor,
    teacher: TeacherChunk,
    targets: torch.Tensor,
    hard: torch.Tensor,
    d: DistillSection,
    vocab: int,
) -> tuple[torch.Tensor, torch.Tensor]:
    """(summed loss, [div, ce, kl] sums) of one chunk of reply positions: against the
    teacher's logits [n, V], or its cached top-k (logits [n, k], ids [n, k])."""
    student = chunk_logits(head, softcap, h, vocab)
    hyper = (d.loss, d.temperature, d.beta, d.hard_weight)
    if isinstance(teacher, tuple):
        loss, parts = topk_token_loss(student, *teacher, targets, hard, *hyper)
    else:
        loss, parts = distill_token_loss(student, teacher, targets, hard, *hyper)
    return loss, torch.stack([parts["div"], parts["ce"], parts["kl"]])


class DistillModule(torch.nn.Module):
    """``(batch, teacher) -> (summed loss, [div, ce, kl] sums)`` over the batch's reply
    positions, as a module so that DDP sees the student's forward."""

    def __init__(self, model: Any, d: DistillSection, vocab: int):
        super().__init__()
        self.model = model
        self.d = d
        self.vocab = vocab

    def forward(
        self, batch: dict[str, torch.Tensor], teacher: Callable[[int, int], TeacherChunk]
    ) -> tuple[torch.Tensor, torch.Tensor]:
        keep = batch["labels"][:, 1:] != IGNORE_INDEX  # [B, T-1]
        targets, hard = batch["labels"][:, 1:][keep], batch["hard"][:, 1:][keep]  # [N], [N]
        view = positions(self.model, batch, keep)
        total = view.hidden[:1, :1].sum().float() * 0.0  # in the graph even when N = 0
        sums = torch.zeros(3, device=total.device)
        step = self.d.chunk_size
        for start in range(0, targets.size(0), step):
            end = min(start + step, targets.size(0))
            args = (view.hidden[start:end], teacher(start, end), targets[start:end])
            if torch.is_grad_enabled():
                loss, parts = checkpoint(
                    _chunk_loss,
                    view.head,
                    view.softcap,
                    *args,
                    hard[start:end],
                    self.d,
                    self.vocab,
                    use_reentrant=False,
                )
            else:
                loss, parts = _chunk_loss(
                    view.head, view.softcap, *args, hard[start:end], self.d, self.vocab
                )
            total, sums = total + loss, sums + parts.detach()
        return total, sums


# ----------------------------------------------------------------------------- set up


@dataclass
class Setup(OnRun):
    cfg: DistillConfig
    run: Run
    model: Any  # the student
    teacher: Any
    tokenizer: Any
    data: PreparedData
    total_steps: int
    step_module: Any  # DistillModule(student): alone or DDP-replicated
    vocab: int  # logits compared: the first `vocab` ids (the shared tokenizer's, at least)
    last_val: tuple[int, dict[str, float] | None] | None = None
    topk: dict[str, torch.Tensor] | None = None  # the cached top-k teacher of the train replies

    def teacher_source(
        self, batch: dict[str, torch.Tensor], indices: Sequence[int] | None = None
    ) -> Callable[[int, int], TeacherChunk]:
        """The teacher of a batch's reply positions, a chunk at a time: from the top-k cache
        for train examples ``indices`` when there is one, else live."""
        if self.topk is None or indices is None:
            return self.teacher_logits(batch)
        c, offsets = self.topk, self.topk["offsets"]
        rows = [range(int(offsets[i]), int(offsets[i + 1])) for i in indices]
        where = torch.tensor([j for r in rows for j in r], dtype=torch.long)
        values, ids = c["values"][where].to(self.device), c["ids"][where].to(self.device).long()
        return lambda start, end: (values[start:end], ids[start:end])

    def teacher_logits(self, batch: dict[str, torch.Tensor]) -> Callable[[int, int], torch.Tensor]:
        """The teacher's logits of the batch's reply positions, one chunk [start:end] at a
        time (its hidden states [N, H] are computed once, without grad)."""
        keep = batch["labels"][:, 1:] != IGNORE_INDEX
        with torch.no_grad(), autocast(self.precision, self.device):
            view = positions(self.teacher, batch, keep)

        def chunk(start: int, end: int) -> torch.Tensor:
            with torch.no_grad(), autocast(self.precision, self.device):
                h = view.hidden[start:end]
                return chunk_logits(view.head, view.softcap, h, self.vocab)

        return chunk


def _prepare(cfg: DistillConfig, run: Run, skip_preflight: bool) -> tuple[Path, Any, PreparedData]:
    """Student weights, the shared tokenizer and the data (pre-flight checked)."""
    if run.dist.is_main:  # GGUF / alias conversions once, by rank 0, before the others read them
        for target in (cfg.model.name_or_path, cfg.distill.teacher):
            tokenizer_dir(target)
    barrier(run.dist)
    tokenizer = check_tokenizers(cfg)  # refused before any model is loaded
    data = prepare_data(cfg.data, tokenizer)
    if not skip_preflight and (failures := preflight_failures(cfg, tokenizer, data)):
        raise PreflightError(failures)  # `tunesmith doctor` explains; --skip-preflight overrides
    return student_base(cfg, run), tokenizer, data


def setup(cfg: DistillConfig, skip_preflight: bool = False) -> Setup:
    run = Run.start(cfg)
    with run.preparing():  # a refused start leaves no run dir behind
        model_path, tokenizer, data = _prepare(cfg, run, skip_preflight)
    if run.dist.is_main:
        write_jsonl(run.run_dir / "rejects.jsonl", data.rejects)
        write_jsonl(run.run_dir / "data" / "val.jsonl", [e.to_json() for e in data.val.examples])
    model = build_trainable_model(cfg, model_path, run.device)
    teacher = load_teacher(cfg, run)
    vocab = min(vocab_size(model), vocab_size(teacher))
    if vocab < len(tokenizer):
        raise TokenizerMismatchError(
            f"an output head has {vocab} rows, fewer than the tokenizer's {len(tokenizer)} tokens"
        )
    trainable, total = parameter_counts(model)
    d = cfg.distill
    run.announce(
        data_files(cfg.data),
        {"student": str(model_path), "teacher": d.teacher, "data": data.stats},
        f"distill loss={d.loss} T={d.temperature} hard_weight={d.hard_weight} "
        f"lambda={d.on_policy_fraction}; teacher {d.teacher}; student {model_path}; trainable "
        f"params {trainable:,} / {total:,}; processes {run.dist.world}; data {data.stats}",
    )
    module = DistillModule(model, d, vocab)
    step_module = wrap_for_training(module, model, run.dist, run.device, "ddp")
    return Setup(
        cfg=cfg,
        run=run,
        model=model,
        teacher=teacher,
        tokenizer=tokenizer,
        data=data,
        total_steps=total_steps(cfg.train, len(data.train.encoded), run.dist.world),
        step_module=step_module,
        vocab=vocab,
    )


# ----------------------------------------------------------------------------- top-k cache


def _cache_path(s: Setup, k: int) -> Path:
    """``teacher_topk<k>-<key>.pt``: the key hashes the train replies' token ids, the teacher,
    the precision and k."""
    digest = hashlib.sha256()
    for enc in s.data.train.encoded:
        digest.update(torch.tensor(enc.input_ids + enc.labels).numpy().tobytes())
    digest.update(f"|{s.cfg.distill.teacher}|{s.precision}|{s.vocab}|{k}".encode())
    return s.run_dir / f"teacher_topk{k}-{digest.hexdigest()[:16]}.pt"


def compute_topk(s: Setup, k: int) -> dict[str, torch.Tensor]:
    """The teacher's k largest logits (T = 1) and their ids at every train reply position, in
    example order (``offsets[i]:offsets[i + 1]`` are example i's), with the probability mass
    outside them (``tail_mass``) and ``k`` itself."""
    values, ids, tails, counts = [], [], [], [0]
    encoded, size = s.data.train.encoded, s.cfg.train.micro_batch_size
    for start in range(0, len(encoded), size):
        batch = make_batch(s, encoded[start : start + size], hard=True)
        per_row = (batch["labels"][:, 1:] != IGNORE_INDEX).sum(-1).tolist()
        counts += per_row
        teacher, n = s.teacher_logits(batch), sum(per_row)
        for lo in range(0, n, s.cfg.distill.chunk_size):
            z = teacher(lo, min(lo + s.cfg.distill.chunk_size, n)).float()  # [c, V]
            top = z.topk(k, dim=-1)
            probs = torch.softmax(z, dim=-1).gather(-1, top.indices).sum(-1)
            values.append(top.values.cpu())
            ids.append(top.indices.to(torch.int32).cpu())
            tails.append((1.0 - probs).cpu())
    return {
        "values": torch.cat(values),
        "ids": torch.cat(ids),
        "tail_mass": torch.cat(tails),
        "offsets": torch.tensor(counts).cumsum(0),
        "k": torch.tensor([k]),
    }


def load_topk(s: Setup) -> None:
    """The top-k cache (``distill.cache_top_k``): read back, or computed and saved by rank 0;
    a checkpoint records its digest, and a resumed run recomputes a cache that differs."""
    k = s.cfg.distill.cache_top_k
    if k is None:
        return
    state = s.run.state
    path = _cache_path(s, k)
    s.topk = cached_reference(path, lambda: compute_topk(s, k), state.method.get("topk"), s.dist)
    if int(s.topk["k"]) != k:  # the file name says k; the metadata must agree
        raise UserError(f"{path}: cache of k={int(s.topk['k'])}, distill.cache_top_k={k}")
    state.method["topk"] = cache_digest(s.topk)
    tail = float(s.topk["tail_mass"].mean())
    s.run.write({"step": state.step, "split": "cache", "k": k, "teacher_tail_mass": tail})
    if s.dist.is_main:
        print(f"[tunesmith] teacher top-{k} cache {path.name}: mean tail mass {tail:.4f}")


# ----------------------------------------------------------------------------- the batches


def on_policy_step(cfg: DistillConfig, step: int) -> bool:
    """Whether optimizer step ``step`` (0-based) samples its targets: a draw with probability
    ``distill.lambda`` fixed by ``train.seed`` and the step alone (same on every rank, and
    again on resume)."""
    lam = cfg.distill.on_policy_fraction
    if lam in (0.0, 1.0):
        return lam == 1.0
    gen = torch.Generator().manual_seed(derive_seed(cfg.train.seed, step, 0x6B1D))
    return float(torch.rand((), generator=gen, dtype=torch.float64)) < lam


def prompt_ids(enc: Encoded) -> list[int]:
    """The tokens before an example's last reply (its last trained span); at least one."""
    trained = [i for i, label in enumerate(enc.labels) if label != IGNORE_INDEX]
    start = trained[-1]
    while start > 0 and enc.labels[start - 1] != IGNORE_INDEX:
        start -= 1
    return enc.input_ids[: max(start, 1)]


def sampled(s: Setup, indices: Sequence[int]) -> list[Encoded]:
    """The student's own replies to the examples' prompts, as examples whose trained tokens
    are the sampled ones (end-of-turn token included when drawn)."""
    d, step = s.cfg.distill, s.run.state.step
    prompts = [prompt_ids(s.data.train.encoded[i]) for i in indices]
    params = SamplingParams(max_new_tokens=d.max_new_tokens, temperature=d.sample_temperature)
    seeds = [derive_seed(s.cfg.train.seed, step, i) for i in indices]
    done = sample(s.model, s.tokenizer, prompts, params, seeds=seeds, batch_size=len(prompts))
    return [
        Encoded(p + c.token_ids, [IGNORE_INDEX] * len(p) + c.token_ids, len(c.token_ids), False)
        for p, c in zip(prompts, done, strict=True)
    ]


def make_batch(s: Setup, rows: Sequence[Encoded], hard: bool) -> dict[str, torch.Tensor]:
    """A padded batch on the device; ``hard`` marks its targets as reference replies."""
    batch = collate(list(rows), s.tokenizer.pad_token_id)
    batch["hard"] = torch.full_like(batch["labels"], int(hard), dtype=torch.bool)
    return {k: v.to(s.device) for k, v in batch.items()}


def _trained(batch: dict[str, torch.Tensor]) -> float:
    return float((batch["labels"][:, 1:] != IGNORE_INDEX).sum())


# ----------------------------------------------------------------------------- step and eval


def _metrics(sums: torch.Tensor, n: float, n_hard: float) -> dict[str, float]:
    """Token means of the summed ``METRICS`` (ce over the hard-label tokens only)."""
    loss, div, ce, kl = sums.tolist()
    out = {"loss": loss / max(n, 1.0), "div": div / max(n, 1.0), "kl": kl / max(n, 1.0)}
    return out | ({"ce": ce / n_hard} if n_hard else {})


def _reduce(sums: torch.Tensor, info: DistInfo, device: torch.device) -> torch.Tensor:
    return torch.tensor([all_reduce_sum(float(v), info, device) for v in sums.tolist()])


def train_step(
    s: Setup, optimizer: torch.optim.Optimizer, scheduler: Any, micro: list[list[int]]
) -> dict[str, float]:
    """One optimizer step over ``grad_accum`` micro-batches (this rank's share of each): the
    summed token losses are divided by the step's reply tokens N over every rank (scaled by
    the world size, which DDP's gradient average divides out)."""
    on_policy = on_policy_step(s.cfg, s.run.state.step)
    rows = [
        sampled(s, idx) if on_policy else [s.data.train.encoded[i] for i in idx] for idx in micro
    ]
    batches = [make_batch(s, r, hard=not on_policy) for r in rows]
    n_step = all_reduce_sum(sum(_trained(b) for b in batches), s.dist, s.device)
    scale = s.dist.world / max(n_step, 1.0)
    sums = torch.zeros(len(METRICS))
    for i, (batch, idx) in enumerate(zip(batches, micro, strict=True)):
        teacher = s.teacher_source(batch, None if on_policy else idx)
        with grad_sync(s.step_module, on=i == len(batches) - 1):
            with autocast(s.precision, s.device):
                loss, parts = s.step_module(batch, teacher)
            (loss * scale).backward()
        sums += torch.cat([loss.detach().float().reshape(1), parts]).cpu()
    params = [p for p in s.model.parameters() if p.requires_grad]
    tail = s.run.optimizer_step(params, optimizer, scheduler)
    n_hard = 0.0 if on_policy else n_step
    return {
        **_metrics(_reduce(sums, s.dist, s.device), n_step, n_hard),
        **tail,
        "on_policy": float(on_policy),
        "trained_tokens": n_step,
    }


def evaluate(s: Setup) -> dict[str, float] | None:
    """Loss, divergence, forward KL (T = 1) and cross-entropy per reply token of the held-out
    examples (their dataset replies), each rank computing its share; no grad, eval mode."""
    val = s.data.val.encoded
    if not val:
        return None
    sums, n = torch.zeros(len(METRICS)), 0.0
    was_training = s.step_module.training
    s.step_module.eval()
    with torch.no_grad():
        shares = held_out_shares(len(val), s.cfg.train.micro_batch_size, s.dist.rank, s.dist.world)
        for idx, count in shares:
            batch = make_batch(s, [val[i] for i in idx], hard=True)
            with autocast(s.precision, s.device):
                loss, parts = s.step_module(batch, s.teacher_logits(batch))
            if count:
                sums += torch.cat([loss.float().reshape(1), parts]).cpu()
                n += _trained(batch)
    s.step_module.train(was_training)
    n = all_reduce_sum(n, s.dist, s.device)
    return _metrics(_reduce(sums, s.dist, s.device), n, n)


# ----------------------------------------------------------------------------- bookkeeping


def _save_export(s: Setup, out: Path) -> Path:
    """A directory that loads with plain transformers / peft, tokenizer and template included."""
    s.tokenizer.chat_template = template_string(s.cfg.data.template, s.tokenizer)
    return s.run.export_model(out, s.model, s.tokenizer, s.step_module)


def _log_eval(s: Setup) -> dict[str, float] | None:
    step = s.run.state.step
    metrics = evaluate(s)
    s.last_val = (step, metrics)
    if metrics is not None:
        s.run.write({"step": step, "split": "val", **metrics})
        if s.dist.is_main:
            print(
                f"[tunesmith] step {step} held-out: loss {metrics['loss']:.4f} "
                f"KL(teacher||student) {metrics['kl']:.4f} ce {metrics['ce']:.4f}",
                flush=True,
            )
    return metrics


def _evaluate(s: Setup) -> bool:
    """Held-out evaluation; ``best/`` keeps the lowest held-out loss; True: stop early."""
    metrics = _log_eval(s)
    loss = None if metrics is None else metrics["loss"]
    return s.run.evaluated(loss, lambda out: _save_export(s, out))


def _report_step(s: Setup, m: dict[str, float], bar: Any) -> None:
    step = s.run.state.step
    if step % s.cfg.train.log_every == 0 or step == s.total_steps:
        s.run.write({"step": step, "split": "train", **m})
    bar.set_postfix(loss=f"{m['loss']:.4f}", kl=f"{m['kl']:.4f}", on=int(m["on_policy"]))
    bar.update(1)


# ----------------------------------------------------------------------------- the loop


def run(cfg: DistillConfig, skip_preflight: bool = False) -> DistillResult:
    """Distil ``distill.teacher`` into the student ``model`` (``skip_preflight``: train even
    when a pre-flight check fails)."""
    s = setup(cfg, skip_preflight)
    run, info = s.run, s.dist
    optimizer, scheduler = run.optimizer(s.model, s.total_steps, s.step_module)
    state = run.state
    # One step = grad_accum rounds of (micro_batch_size x world) examples; each rank its share.
    batches = run.batches(len(s.data.train.encoded))
    run.open_log()
    load_topk(s)
    first_val = _log_eval(s) if cfg.train.eval_every is not None and state.step == 0 else None
    bar = run.progress(s.total_steps, "distill")
    stopped_early, last_loss = False, None
    while state.step < s.total_steps and not stopped_early:
        t0 = time.perf_counter()  # the step alone: evaluation and checkpoints are not counted
        m = train_step(s, optimizer, scheduler, [shard(mb, info) for mb in next(batches)])
        state.step += 1
        state.tokens += int(m["trained_tokens"])
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
    return DistillResult(
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
