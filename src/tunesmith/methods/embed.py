"""Retriever fine-tuning: a sentence encoder trained on query/passage pairs (``method: embed``).

The algorithm, top to bottom:
  1. data: query/positive(/negative) rows (fields configurable), held out by
     :mod:`tunesmith.data.split`; the evaluation corpus is every distinct passage of both
     splits, each held-out query's relevant set the passages paired with it;
  2. model: the backbone's ``AutoModel`` (an encoder alias such as ``all-minilm-l6-v2``, any
     sentence-transformers directory, or a plain HF encoder) with the directory's own pooling
     (mean + L2 normalisation when it declares none); ``embed.mode`` full or LoRA;
  3. hard negatives (``embed.hard_negatives``): the rows' own, or mined once with the base
     model (each training query's highest-ranked other training positive), or none;
  4. "before": recall@1/5/10, MRR@10, nDCG@10 of the base model on the held-out set;
  5. loop: each optimizer step takes ``micro_batch_size x world x grad_accum`` pairs; every
     micro-batch is one forward over its queries, positives and negatives, and the loss is
     :func:`tunesmith.losses.contrastive.multiple_negatives_ranking_loss` (InfoNCE with in-batch
     negatives). Under torchrun every rank's embeddings are gathered (with gradients) before
     the loss, so its in-batch negatives are the whole global micro-batch, ``micro_batch_size
     x world`` pairs: two processes at batch 2 follow one process at batch 4;
  6. every ``eval_every`` steps (and after the last) the retrieval metrics again; held-out
     nDCG@10 (higher is better) keeps ``best/`` and drives early stopping;
  7. checkpoints every ``save_every`` steps (``train.resume`` continues exactly); ``final/``
     (LoRA merged into the weights) loads in ``sentence_transformers.SentenceTransformer`` and in
     :func:`tunesmith.models.sentence_encoder.load_sentence_encoder` with the same embeddings;
     ``eval.json`` holds the metrics before and after.
"""

from __future__ import annotations

import copy
import json
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from transformers import AutoModel

from tunesmith.checks import PreflightError, failures
from tunesmith.checks.embed import preflight_retrieval
from tunesmith.config.embed import EmbedConfig
from tunesmith.data.retrieval_pairs import (
    Pair,
    RetrievalSet,
    collate_pairs,
    files,
    retrieval_set,
    split_pairs,
    with_mined_negatives,
)
from tunesmith.data.split import held_out_note
from tunesmith.engine.distributed import (
    all_gather_rows,
    all_reduce_sum,
    grad_sync,
    shard,
    wrap_for_training,
)
from tunesmith.engine.precision import autocast, weight_dtype
from tunesmith.engine.run import OnRun, Run
from tunesmith.engine.trainable import due, total_steps
from tunesmith.eval.retrieval import retrieval_metrics
from tunesmith.losses.contrastive import multiple_negatives_ranking_loss, similarity_logits
from tunesmith.models.adapters import check_rank, lora_config, lora_targets, match_targets
from tunesmith.models.encoders import resolve_backbone
from tunesmith.models.load import enable_activation_checkpointing, load_tokenizer
from tunesmith.models.safe_weights import use_safetensors
from tunesmith.models.sentence_encoder import (
    EncoderStep,
    Pooling,
    embed_texts,
    read_pooling,
    write_sentence_transformers_files,
)

__all__ = ["EmbedConfig", "EmbedResult", "run"]


@dataclass
class EmbedResult:
    run_dir: Path
    final_dir: Path
    steps: int
    last_train_loss: float | None
    before: dict[str, float] = field(default_factory=dict)  # held-out metrics of the base model
    after: dict[str, float] = field(default_factory=dict)  # ... of final/
    best_ndcg10: float | None = None
    stopped_early: bool = False


# ----------------------------------------------------------------------------- model


def build_encoder(cfg: EmbedConfig, path: Path, device: torch.device) -> Any:
    """The backbone's ``AutoModel`` (no head), LoRA attached for ``embed.mode: lora``."""
    torch.manual_seed(cfg.train.seed)  # LoRA's A is drawn here
    model = AutoModel.from_pretrained(
        str(path),
        dtype=weight_dtype(cfg.model.dtype, device, base_trains=cfg.embed.mode == "full"),
        attn_implementation=cfg.model.attn_implementation,
        use_safetensors=use_safetensors(path, trust_pickle=cfg.model.trust_pickle),
    ).to(device)
    if cfg.train.gradient_checkpointing:
        enable_activation_checkpointing(model)
    if cfg.embed.mode == "lora":
        from peft import get_peft_model

        spec = cfg.lora.target_modules
        targets = None if spec is None else lora_targets(spec)
        if targets is not None:
            check_rank(match_targets(model, targets, "lora.target_modules"), cfg.lora.r)
        model = get_peft_model(model, lora_config(cfg.lora, "lora", targets, "FEATURE_EXTRACTION"))
    for name, p in model.named_parameters():
        if ".pooler." in f".{name}":  # BERT's [CLS] pooler: sentence pooling never reads it
            p.requires_grad = False  # (and DDP refuses parameters that get no gradient)
    model.train()
    return model


# ----------------------------------------------------------------------------- set up


@dataclass
class Setup(OnRun):
    cfg: EmbedConfig
    run: Run
    model: Any
    tokenizer: Any
    pooling: Pooling
    train: list[Pair]
    eval_set: RetrievalSet
    total_steps: int
    step_module: Any  # EncoderStep, DDP-replicated or FSDP2-sharded across ranks
    before: dict[str, float] = field(default_factory=dict)


def evaluate(s: Setup) -> dict[str, float]:
    """Retrieval metrics of the current weights on the held-out set (every rank, same result:
    each encodes all texts, so FSDP's collective forwards stay in step)."""
    e, c = s.eval_set, s.cfg
    if not e.queries:
        return {}
    args = (c.data.max_length, c.embed.eval_batch_size)
    with autocast(s.precision, s.device):
        q = embed_texts(s.step_module, s.tokenizer, e.queries, *args)
        d = embed_texts(s.step_module, s.tokenizer, e.corpus, *args)
    return retrieval_metrics(similarity_logits(q, d, 1.0), e.relevant)


def _mine(s: Setup) -> list[Pair]:
    """Each training pair with the base model's hardest other training positive."""
    passages = list(dict.fromkeys(x.positive for x in s.train))
    args = (s.cfg.data.max_length, s.cfg.embed.eval_batch_size)
    q = embed_texts(s.step_module, s.tokenizer, [x.query for x in s.train], *args)
    d = embed_texts(s.step_module, s.tokenizer, passages, *args)
    return with_mined_negatives(s.train, similarity_logits(q, d, 1.0), passages)


def setup(cfg: EmbedConfig, skip_preflight: bool = False) -> Setup:
    e = cfg.embed
    train, held = split_pairs(cfg.data, e.query_field, e.positive_field, e.negative_field)
    run = Run.start(cfg)  # data errors above stop the run before any directory exists
    with run.preparing():
        path = resolve_backbone(cfg.model.name_or_path)
        tokenizer = load_tokenizer(path)
        checks = preflight_retrieval(train, held, tokenizer, cfg, run.dist.world)
        if not skip_preflight and (bad := failures(checks)):
            raise PreflightError(bad)  # `tunesmith doctor` explains; --skip-preflight overrides
        model = build_encoder(cfg, path, run.device)
    pooling = read_pooling(path)
    step_module = wrap_for_training(
        EncoderStep(model, pooling), model, run.dist, run.device, cfg.train.parallel
    )
    total = total_steps(cfg.train, len(train), run.dist.world)
    s = Setup(cfg, run, model, tokenizer, pooling, train, retrieval_set(train, held), total,
              step_module)  # fmt: skip
    if e.hard_negatives == "mined":
        s.train = _mine(s)
    s.before = evaluate(s)  # the base model: weights are restored (on resume) only later
    trainable = sum(p.numel() for p in model.parameters() if p.requires_grad)
    params = sum(p.numel() for p in model.parameters())
    if (note := held_out_note(len(held), "query/passage pairs")) and run.dist.is_main:
        print(note, flush=True)
    run.announce(
        list(cfg.data.train) + files(cfg.data.validation),
        {
            "base_model": str(path),
            "pooling": pooling.mode,
            "normalize": pooling.normalize,
            "train_pairs": len(train),
            "held_out_queries": len(s.eval_set.queries),
            "corpus": len(s.eval_set.corpus),
            "trainable_params": trainable,
            "total_params": params,
        },
        f"embed mode {e.mode}, {pooling.mode} pooling: trainable {trainable:,} / {params:,}; "
        f"train {len(train)} pairs, held-out {len(s.eval_set.queries)} queries over "
        f"{len(s.eval_set.corpus)} passages; hard negatives {e.hard_negatives}; "
        f"processes {run.dist.world}",
    )
    return s


# ----------------------------------------------------------------------------- one step


def train_step(
    s: Setup, optimizer: torch.optim.Optimizer, scheduler: Any, micro: list[list[Pair]]
) -> dict[str, float]:
    """One optimizer step over ``grad_accum`` micro-batches (this rank's share of each).

    Each micro-batch's embeddings are gathered from every rank (``all_gather_rows``, with
    gradients), so ``L_m``, the mean InfoNCE over the global micro-batch's ``B_m`` queries, sees
    all of its ``B_m - 1`` in-batch negatives. With N the step's pairs over every rank, each rank
    backpropagates ``(1 / N) * sum_m B_m * L_m``; the gather's backward sums the ranks'
    gradients of each rank's rows (a factor ``world``) and DDP averages over ranks (``1 /
    world``), so the update descends ``(1/N) sum_i l_i`` however the step is split into
    micro-batches and processes."""
    info, c = s.dist, s.cfg
    n_step = all_reduce_sum(float(sum(len(mb) for mb in micro)), info, s.device)
    totals = {"loss": 0.0, "in_batch_accuracy": 0.0}
    use_negatives = c.embed.hard_negatives != "none"
    for i, pairs in enumerate(micro):
        batch = collate_pairs(s.tokenizer, pairs, c.data.max_length, use_negatives)
        b = batch.pop("n_queries")
        batch.pop("n_negatives")
        batch = {k: v.to(s.device) for k, v in batch.items()}
        with grad_sync(s.step_module, on=i == len(micro) - 1):
            with autocast(s.precision, s.device):
                vectors = s.step_module(batch)  # [2b+m, H], this rank's share
            q = all_gather_rows(vectors[:b], info)  # [B, H], every rank's rows in rank order
            p = all_gather_rows(vectors[b : 2 * b], info)  # [B, H]
            neg = all_gather_rows(vectors[2 * b :], info) if use_negatives else None  # [M, H]
            loss, m = multiple_negatives_ranking_loss(
                q, p, neg if neg is not None and len(neg) else None, c.embed.temperature
            )
            (loss * (len(q) / n_step)).backward()
        totals["loss"] += loss.item() * b
        totals["in_batch_accuracy"] += m["in_batch_accuracy"] * b
    params = [p for p in s.model.parameters() if p.requires_grad]
    tail = s.run.optimizer_step(params, optimizer, scheduler)
    summed = {k: all_reduce_sum(v, info, s.device) / n_step for k, v in totals.items()}
    return {**summed, **tail, "examples": n_step}


# ----------------------------------------------------------------------------- saving


def _save(s: Setup, out: Path) -> Path:
    """``final/`` or ``best/``, atomically: the encoder (LoRA merged into a copy of the
    weights), the tokenizer and the sentence-transformers module files."""
    dim = int(s.model.config.hidden_size)

    def st_files(tmp: Path) -> None:
        write_sentence_transformers_files(tmp, s.pooling, dim, s.cfg.data.max_length)

    if s.cfg.embed.mode == "full":
        return s.run.export_model(out, s.model, s.tokenizer, s.step_module, extra=st_files)

    def write(tmp: Path) -> None:
        merged = copy.deepcopy(s.model).merge_and_unload()
        merged.save_pretrained(str(tmp), safe_serialization=True)
        s.tokenizer.save_pretrained(str(tmp))
        st_files(tmp)

    return s.run.export(out, write)


def _evaluate(s: Setup) -> tuple[dict[str, float], bool]:
    """Held-out metrics, logged; a new best nDCG@10 goes to ``best/``."""
    result = evaluate(s)
    s.run.write({"step": s.run.state.step, "split": "val", **result})
    stop = s.run.evaluated(result["ndcg@10"], lambda out: _save(s, out), higher_is_better=True)
    return result, stop


def _finish(s: Setup, last: dict[str, float] | None, last_step: int) -> dict[str, float]:
    """The final weights' metrics (reused when the last step was just evaluated) -> eval.json."""
    if not s.eval_set.queries:
        return {}
    if last is None or last_step != s.run.state.step:
        last = evaluate(s)
        s.run.write({"step": s.run.state.step, "split": "val", **last})
    if s.dist.is_main:
        report = {"step": s.run.state.step, "before": s.before, "after": last}
        (s.run_dir / "eval.json").write_text(json.dumps(report, indent=2))
    return last


# ----------------------------------------------------------------------------- the loop


def run(cfg: EmbedConfig, skip_preflight: bool = False) -> EmbedResult:
    """Fine-tune a sentence encoder for retrieval; evaluate before and after; save final/."""
    s = setup(cfg, skip_preflight)
    run, info, state = s.run, s.dist, s.run.state
    optimizer, scheduler = run.optimizer(s.model, s.total_steps, s.step_module)
    state = run.state  # restored on resume
    run.open_log()
    if state.step == 0 and s.before:
        run.write({"step": 0, "split": "val", "stage": "before", **s.before})
    batches = run.batches(len(s.train))
    bar = run.progress(s.total_steps, "embed")
    stopped_early, last_loss, last_eval, eval_step = False, None, None, -1
    while state.step < s.total_steps and not stopped_early:
        t0 = time.perf_counter()
        micro = [[s.train[i] for i in shard(mb, info)] for mb in next(batches)]
        m = train_step(s, optimizer, scheduler, micro)
        state.step += 1
        last_loss = m["loss"]
        m["step_seconds"] = time.perf_counter() - t0
        if state.step % cfg.train.log_every == 0 or state.step == s.total_steps:
            run.write({"step": state.step, "split": "train", **m})
        bar.set_postfix(loss=f"{m['loss']:.4f}")
        bar.update(1)
        if s.eval_set.queries and due(state.step, cfg.train.eval_every, s.total_steps):
            (last_eval, stopped_early), eval_step = _evaluate(s), state.step
        if due(state.step, cfg.train.save_every, s.total_steps):
            run.checkpoint(s.model, optimizer, scheduler, s.step_module)
        run.crash_point()
    bar.close()
    after = _finish(s, last_eval, eval_step)
    final = _save(s, s.run_dir / "final")
    run.finish()
    best = state.best_metric if state.best_step is not None else None
    return EmbedResult(
        run_dir=s.run_dir,
        final_dir=final,
        steps=state.step,
        last_train_loss=last_loss,
        before=s.before,
        after=after,
        best_ndcg10=None if best is None else float(best),
        stopped_early=stopped_early,
    )
