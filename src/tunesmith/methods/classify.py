"""Sequence classification: a pretrained encoder or decoder with a classification head.

The algorithm, top to bottom:
  1. data: text,label rows (fields configurable), held out by :mod:`tunesmith.data.split`; the
     label set is the training labels, saved with the model (id2label / label2id); a held-out
     label never seen in training stops the run before any model loads, naming the valid labels;
  2. model: ``AutoModelForSequenceClassification`` on the backbone (an encoder such as
     all-MiniLM-L6-v2, pooled at [CLS]; or a decoder, pooled by transformers at the rightmost
     token that is not ``pad_token_id``, so a decoder gets ``pad_token_id`` and texts must not
     contain that token);
  3. what trains (``classify.mode``): head only, head + top-k layers, everything, or LoRA with
     the head trained in full; head only and top_k (``classify.cache_features``, on by default):
     the frozen part runs once over every example and the trained part runs on what it kept
     (head: the head's input, :mod:`tunesmith.models.frozen_features`; top_k: the states
     entering the first trained layer, :mod:`tunesmith.models.frozen_layers`; memory, or a disk
     cache keyed by content hash);
  4. loop: each optimizer step takes ``micro_batch_size x world x grad_accum`` examples (each
     process its share of every micro-batch) and descends the mean cross-entropy over all of
     them, ``L = (1/N) sum_i CE(z_i, y_i)``; clip, AdamW, schedule step;
  5. every ``eval_every`` steps (and after the last): accuracy, macro precision/recall/F1,
     confusion matrix and the majority-class baseline on the held-out split. The metric that
     keeps ``best/`` and drives early stopping is the held-out **macro-F1**, higher is better:
     unlike accuracy it does not reward predicting the majority class, and unlike the loss it is
     what a classifier is judged by;
  6. every ``save_every`` steps an atomic checkpoint (``train.resume`` continues it exactly);
     ``final/`` (atomic) loads with ``AutoModelForSequenceClassification`` (LoRA: with peft,
     see :func:`load_classifier`), with the tokenizer and ``labels.json``.

The lifecycle (start, resume checks, checkpoints, best/, final/, torchrun DDP/FSDP2) is
:class:`tunesmith.engine.run.Run`'s.
"""

from __future__ import annotations

import json
import re
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from transformers import AutoModelForSequenceClassification

from tunesmith.checks import PreflightError, failures, preflight_labels
from tunesmith.config.classify import ClassifyConfig
from tunesmith.data.labelled import (
    ClassifyData,
    LabelledText,
    check_pad_free,
    collate,
    encode,
    prepare_classify_data,
    train_files,
    validation_files,
)
from tunesmith.data.split import held_out_note
from tunesmith.engine.distributed import (
    DistInfo,
    all_reduce_sum,
    gather_objects,
    grad_sync,
    shard,
    wrap_for_training,
)
from tunesmith.engine.precision import autocast, weight_dtype
from tunesmith.engine.run import OnRun, Run
from tunesmith.engine.trainable import due, total_steps
from tunesmith.eval.classification import classification_report, majority_baseline
from tunesmith.losses.classification import classification_loss
from tunesmith.models.adapters import check_rank, linear_modules, lora_targets, match_targets
from tunesmith.models.encoders import resolve_backbone
from tunesmith.models.frozen_features import (
    Features,
    cached_tensors,
    content_key,
    feature_batch,
    feature_plan,
    predict_features,
)
from tunesmith.models.load import (
    enable_activation_checkpointing,
    load_tokenizer,
    pick_device,
)
from tunesmith.models.safe_weights import check_weights_dir, use_safetensors

__all__ = ["ClassifyConfig", "ClassifyResult", "load_classifier", "run"]

LAYER_RE = re.compile(r"\.(?:layers|layer|h|blocks)\.(\d+)\.")
Encoded = list[tuple[list[int], int]]  # (token ids, label id) per example
NO_TOP_K = "the top_k cache rebuilds BERT-style encoders and Llama-style decoders, not "


@dataclass
class ClassifyResult:
    run_dir: Path
    final_dir: Path
    steps: int
    last_train_loss: float | None
    eval: dict[str, Any] = field(default_factory=dict)  # headline figures; eval.json: all
    best_macro_f1: float | None = None  # of the periodic evaluations (best/), if any
    stopped_early: bool = False


# ----------------------------------------------------------------------------- model


def is_decoder_backbone(config: Any) -> bool:
    """A causal LM type that has no masked-LM form: transformers pools its classifier at the
    last non-pad token (encoders pool at [CLS])."""
    from transformers.models.auto.modeling_auto import (
        MODEL_FOR_CAUSAL_LM_MAPPING_NAMES,
        MODEL_FOR_MASKED_LM_MAPPING_NAMES,
    )

    kind = config.model_type
    return (
        kind in MODEL_FOR_CAUSAL_LM_MAPPING_NAMES and kind not in MODEL_FOR_MASKED_LM_MAPPING_NAMES
    )


def head_modules(model: Any) -> list[str]:
    """Top-level modules with weights outside the backbone (BERT: classifier; Llama: score)."""
    prefix = model.base_model_prefix
    return [
        name
        for name, child in model.named_children()
        if name != prefix and any(True for _ in child.parameters())
    ]


def load_backbone(
    cfg: ClassifyConfig, path: Path, labels: list[str], tokenizer: Any, device: torch.device
) -> Any:
    """The classifier with a fresh head of ``len(labels)`` outputs and the label names."""
    model = AutoModelForSequenceClassification.from_pretrained(
        str(path),
        num_labels=len(labels),
        id2label=dict(enumerate(labels)),
        label2id={label: i for i, label in enumerate(labels)},
        dtype=weight_dtype(cfg.model.dtype, device, base_trains=True),  # the head trains
        attn_implementation=cfg.model.attn_implementation,
        use_safetensors=use_safetensors(path, trust_pickle=cfg.model.trust_pickle),
    )
    if model.config.pad_token_id is None:
        model.config.pad_token_id = tokenizer.pad_token_id
    return model.to(device)


def _set_trainable(model: Any, mode: str, top_k: int) -> None:
    """head: the head only; top_k: the head, the top ``top_k`` layers and the final norm."""
    heads = tuple(f"{h}." for h in head_modules(model))
    n_layers = int(model.config.num_hidden_layers)
    if mode == "top_k" and top_k > n_layers:
        raise ValueError(f"classify.top_k_layers={top_k} but the model has {n_layers} layers")
    for name, p in model.named_parameters():
        if name.startswith(heads) or mode == "full":
            p.requires_grad = True
            continue
        layer = LAYER_RE.search(name)
        if mode == "top_k" and layer:
            p.requires_grad = int(layer.group(1)) >= n_layers - top_k
        else:  # the final norm of a decoder sits after the top layer
            p.requires_grad = mode == "top_k" and bool(re.search(r"(?:^|\.)norm\.", name))


def _lora_targets(cfg: ClassifyConfig, model: Any) -> Any:
    spec = cfg.lora.target_modules
    if spec is None:
        return None  # peft's default for the architecture
    heads = head_modules(model)
    if spec == "all-linear":
        linears = [n for n in linear_modules(model) if n.split(".", 1)[0] not in heads]
        return sorted({n.rsplit(".", 1)[-1] for n in linears})
    return lora_targets(spec)


def attach_classifier_lora(cfg: ClassifyConfig, model: Any) -> Any:
    """LoRA on the backbone (peft task SEQ_CLS); the head trains in full (modules_to_save)."""
    from peft import LoraConfig, get_peft_model

    targets = _lora_targets(cfg, model)
    if targets is not None:
        check_rank(match_targets(model, targets, "lora.target_modules"), cfg.lora.r)
    config = LoraConfig(
        task_type="SEQ_CLS",
        r=cfg.lora.r,
        lora_alpha=cfg.lora.alpha,
        lora_dropout=cfg.lora.dropout,
        target_modules=targets,
        use_rslora=cfg.lora.use_rslora,
        modules_to_save=head_modules(model),
    )
    return get_peft_model(model, config)


def build_model(
    cfg: ClassifyConfig,
    path: Path,
    labels: list[str],
    tokenizer: Any,
    device: torch.device | None = None,
) -> Any:
    """The classifier with what ``classify.mode`` trains set trainable, in train mode."""
    torch.manual_seed(cfg.train.seed)  # the new head (and LoRA's A) are drawn here
    device = device or pick_device(cfg.train.device)
    model = load_backbone(cfg, path, labels, tokenizer, device)
    if cfg.train.gradient_checkpointing:
        enable_activation_checkpointing(model)
    if cfg.classify.mode == "lora":
        model = attach_classifier_lora(cfg, model)
    else:
        _set_trainable(model, cfg.classify.mode, cfg.classify.top_k_layers)
    model.train()
    return model


def load_classifier(path: str | Path, device: str = "auto") -> tuple[Any, Any]:
    """A saved ``final/`` (or run dir) back as (model, tokenizer), LoRA adapters included."""
    weights = Path(path)
    weights = weights / "final" if (weights / "final").is_dir() else weights
    tokenizer = load_tokenizer(weights)
    if (weights / "adapter_config.json").is_file():
        from peft import PeftModel

        labels = json.loads((weights / "labels.json").read_text())["labels"]
        backbone = resolve_backbone(_saved_base(weights))
        check_weights_dir(weights, adapter=True)  # pickle adapters need TUNESMITH_TRUST_PICKLE=1
        base = AutoModelForSequenceClassification.from_pretrained(
            str(backbone),
            use_safetensors=use_safetensors(backbone),
            num_labels=len(labels),
            id2label=dict(enumerate(labels)),
            label2id={label: i for i, label in enumerate(labels)},
        )
        if base.config.pad_token_id is None:
            base.config.pad_token_id = tokenizer.pad_token_id
        model = PeftModel.from_pretrained(base, str(weights))
    else:
        model = AutoModelForSequenceClassification.from_pretrained(
            str(weights), use_safetensors=use_safetensors(weights)
        )
    return model.to(pick_device(device)).eval(), tokenizer


def _saved_base(weights: Path) -> str:
    import yaml

    return str(
        yaml.safe_load((weights / "tunesmith_config.yaml").read_text())["model"]["name_or_path"]
    )


class ClassifierStep(torch.nn.Module):
    """``batch -> logits [B, K]`` as a module, so that DDP / FSDP2 see (and wrap) the forward."""

    def __init__(self, model: Any):
        super().__init__()
        self.model = model

    def forward(self, batch: dict[str, torch.Tensor]) -> torch.Tensor:
        return self.model(
            input_ids=batch["input_ids"], attention_mask=batch["attention_mask"]
        ).logits


# ----------------------------------------------------------------------------- evaluation


def _rank_share(items: list[Any], info: DistInfo) -> list[Any]:
    """This rank's equal share of ``items``, the last item repeated to fill it: every rank runs
    as many forwards (FSDP gathers weights collectively in each)."""
    per = -(-len(items) // info.world)
    padded = items + items[-1:] * (per * info.world - len(items))
    return padded[info.rank * per : (info.rank + 1) * per]


@torch.no_grad()
def predict(
    module: torch.nn.Module,
    encoded: Encoded,
    pad_id: int,
    batch_size: int,
    precision: str,
    info: DistInfo | None = None,
) -> list[int]:
    """Arg-max label id of each example. ``module``: ``batch -> logits`` (:class:`ClassifierStep`,
    DDP/FSDP-wrapped or not); under torchrun each rank runs its share of every
    ``batch_size x world`` examples and every rank gets all predictions, in order."""
    info = info or DistInfo()
    was_training = module.training
    module.eval()
    device = next(module.parameters()).device
    out: list[int] = []
    for start in range(0, len(encoded), batch_size * info.world):
        chunk = encoded[start : start + batch_size * info.world]
        batch = {k: v.to(device) for k, v in collate(_rank_share(chunk, info), pad_id).items()}
        with autocast(precision, device):
            mine = module(batch).argmax(-1).tolist()
        out += [p for preds in gather_objects(mine, info) for p in preds][: len(chunk)]
    module.train(was_training)
    return out


def evaluate(s: Setup) -> dict[str, Any]:
    """The held-out report beside the majority-class baseline (the same on every rank)."""
    y_true = [label for _, label in s.held_out]
    size = s.cfg.classify.eval_batch_size
    if s.features is not None:
        y_pred = predict_features(s.step_module, s.features[1], size)
    else:
        y_pred = predict(s.step_module, s.held_out, s.pad_id, size, s.precision, s.dist)
    report = classification_report(y_true, y_pred, s.data.labels)
    baseline = majority_baseline([label for _, label in s.train], y_true, s.data.labels)
    return {"step": s.run.state.step, "held_out": report, "majority_baseline": baseline}


# ----------------------------------------------------------------------------- set up


@dataclass
class Setup(OnRun):
    cfg: ClassifyConfig
    run: Run
    data: ClassifyData
    model: Any
    tokenizer: Any
    train: Encoded
    held_out: Encoded
    total_steps: int
    step_module: Any  # ClassifierStep (HeadStep / UpperStack on cached features), DDP/FSDP2-wrapped
    features: tuple[Features, Features] | None = None  # cached train, held-out

    @property
    def pad_id(self) -> int:
        return int(self.tokenizer.pad_token_id)


def _encode_all(
    cfg: ClassifyConfig, data: ClassifyData, tokenizer: Any, model: Any
) -> tuple[Encoded, Encoded]:
    ids = data.label2id
    train = encode(tokenizer, data.train, ids, cfg.data.max_length)
    held = encode(tokenizer, data.held_out, ids, cfg.data.max_length)
    if is_decoder_backbone(model.config):
        pad = model.config.pad_token_id
        items: list[LabelledText] = data.train + data.held_out
        check_pad_free(train + held, items, pad, tokenizer.convert_ids_to_tokens(pad))
    return train, held


def setup(cfg: ClassifyConfig, skip_preflight: bool = False) -> Setup:
    c = cfg.classify
    data = prepare_classify_data(cfg.data, c.text_field, c.label_field)  # errors before any dir
    run = Run.start(cfg)
    with run.preparing():
        path = resolve_backbone(cfg.model.name_or_path)
        tokenizer = load_tokenizer(path)
        checks = preflight_labels(data.train, data.held_out, tokenizer, cfg)
        if not skip_preflight and (bad := failures(checks)):
            raise PreflightError(bad)  # `tunesmith doctor` explains; --skip-preflight overrides
        model = build_model(cfg, path, data.labels, tokenizer, run.device)
        train, held = _encode_all(cfg, data, tokenizer, model)
    trainable = sum(p.numel() for p in model.parameters() if p.requires_grad)
    params = sum(p.numel() for p in model.parameters())
    note = held_out_note(len(held), "labelled examples")
    if note and run.dist.is_main:
        print(note, flush=True)
    run.announce(
        train_files(cfg.data) + validation_files(cfg.data),
        {
            "base_model": str(path),
            "labels": data.labels,
            "train_examples": len(train),
            "held_out_examples": len(held),
            "trainable_params": trainable,
            "total_params": params,
        },
        f"classify mode {c.mode}: trainable {trainable:,} / {params:,}; labels {data.labels}; "
        f"train {len(train)}, held-out {len(held)}; processes {run.dist.world}",
    )
    cached = _cached_features(cfg, run, model, tokenizer, train, held, path)
    features, step = cached if cached is not None else (None, ClassifierStep(model))
    step_module = wrap_for_training(step, model, run.dist, run.device, cfg.train.parallel)
    total = total_steps(cfg.train, len(train), run.dist.world)
    return Setup(cfg, run, data, model, tokenizer, train, held, total, step_module, features)


def _cached_features(
    cfg: ClassifyConfig,
    run: Run,
    model: Any,
    tokenizer: Any,
    train: Encoded,
    held: Encoded,
    path: Path,
) -> tuple[tuple[Features, Features], torch.nn.Module] | None:
    """Head / top_k mode: what the frozen part of the model gives every example, computed once
    (or read from the disk cache), and the step module that trains on it; None where the model
    trains on the live backbone instead."""
    c, decoder = cfg.classify, is_decoder_backbone(model.config)
    sharded = run.dist.enabled and cfg.train.parallel == "fsdp"
    if c.mode not in ("head", "top_k") or c.cache_features == "none" or sharded:
        return None
    pad = int(tokenizer.pad_token_id)
    plan = feature_plan(model, c.mode, c.top_k_layers, decoder, pad, c.eval_batch_size, collate)
    if plan is None or not plan.verify(train):  # a layout not rebuilt exactly: run live
        kind = model.config.model_type
        why = f"this {kind} head is not one linear layer" if c.mode == "head" else NO_TOP_K + kind
        _say(run, f"classify {c.mode}: {why}; not cached, the backbone runs every step")
        return None
    t0, out, hits = time.perf_counter(), [], []
    where = Path(cfg.train.output_dir) / ".feature_cache"
    where = where if c.cache_features == "disk" and not run.dist.enabled else None
    for items in (train, held):
        key = content_key(path, items, cfg.data.max_length, plan.tag)
        with autocast(run.precision, run.device):
            tensors, hit = cached_tensors(lambda items=items: plan.compute(items), key, where)
        out.append(plan.unpack(tensors))
        hits.append(hit)
    source = "read from disk" if all(hits) else f"computed in {time.perf_counter() - t0:.1f}s"
    _say(
        run,
        f"classify {c.mode}: frozen features of {len(train)} + {len(held)} examples cached "
        f"({c.cache_features}, {source}); {plan.what}",
    )
    return (out[0], out[1]), plan.step


def _say(run: Run, message: str) -> None:
    if run.dist.is_main:
        print(f"[tunesmith] {message}", flush=True)


# ----------------------------------------------------------------------------- one step


def _micro_batch(s: Setup, idx: list[int]) -> dict[str, torch.Tensor]:
    """Token ids of the examples ``idx``, or their cached features / states."""
    if s.features is None:
        return collate([s.train[i] for i in idx], s.pad_id)
    labels = torch.tensor([s.train[i][1] for i in idx], dtype=torch.long)
    return {**feature_batch(s.features[0], idx), "labels": labels}


def train_step(
    s: Setup, optimizer: torch.optim.Optimizer, scheduler: Any, micro: list[dict[str, torch.Tensor]]
) -> dict[str, float]:
    """One optimizer step over ``grad_accum`` micro-batches (this rank's share of each).

    With N the step's examples over every rank, each rank backpropagates
    ``(world / N) * sum_{its examples} CE(z_i, y_i)``; DDP / FSDP average gradients over the
    ranks, so the update is the gradient of ``L = (1/N) sum_{all N examples} CE(z_i, y_i)``
    (logits ``z`` [B, K], labels ``y`` [B]) however the step is split.
    """
    info = s.dist
    n_step = all_reduce_sum(float(sum(len(mb["labels"]) for mb in micro)), info, s.device)
    scale = info.world / n_step
    loss_sum, correct = 0.0, 0.0
    for i, mb in enumerate(micro):
        mb = {k: v.to(s.device) for k, v in mb.items()}
        with grad_sync(s.step_module, on=i == len(micro) - 1):
            with autocast(s.precision, s.device):
                logits = s.step_module(mb)  # [B, K]
            summed = classification_loss(logits, mb["labels"]) * len(mb["labels"])
            (summed * scale).backward()
        loss_sum += summed.item()
        correct += float((logits.argmax(-1) == mb["labels"]).sum())
    params = [p for p in s.model.parameters() if p.requires_grad]
    tail = s.run.optimizer_step(params, optimizer, scheduler)
    loss_sum, correct = (all_reduce_sum(v, info, s.device) for v in (loss_sum, correct))
    return {"loss": loss_sum / n_step, "accuracy": correct / n_step, **tail, "examples": n_step}


# ----------------------------------------------------------------------------- bookkeeping


def _save(s: Setup, out: Path) -> Path:
    """``final/`` or ``best/``, atomically: the model (LoRA: adapter + head), tokenizer,
    ``labels.json`` and the resolved config. Every rank calls it (FSDP gathers the weights)."""

    def labels(tmp: Path) -> None:
        (tmp / "labels.json").write_text(json.dumps({"labels": s.data.labels}, indent=2))

    return s.run.export_model(out, s.model, s.tokenizer, s.step_module, extra=labels)


def _log_eval(s: Setup, result: dict[str, Any]) -> None:
    r, b = result["held_out"], result["majority_baseline"]
    s.run.write(
        {
            "step": result["step"],
            "split": "val",
            "accuracy": r["accuracy"],
            "macro_precision": r["macro_precision"],
            "macro_recall": r["macro_recall"],
            "macro_f1": r["macro_f1"],
            "confusion_matrix": r["confusion_matrix"],
            "majority_accuracy": b["accuracy"],
            "majority_macro_f1": b["macro_f1"],
        }
    )


def _evaluate(s: Setup) -> tuple[dict[str, Any], bool]:
    """Held-out report, logged; a new best macro-F1 goes to ``best/``. Returns the report and
    whether early stopping triggers."""
    result = evaluate(s)
    _log_eval(s, result)
    stop = s.run.evaluated(
        result["held_out"]["macro_f1"], lambda out: _save(s, out), higher_is_better=True
    )
    return result, stop


def _final_eval(s: Setup, last: dict[str, Any] | None) -> dict[str, Any]:
    """The final weights' report (reused when the last step was just evaluated) -> eval.json."""
    if not s.held_out:
        return {}
    if last is None or last["step"] != s.run.state.step:
        last = evaluate(s)
        _log_eval(s, last)
    if s.dist.is_main:
        (s.run_dir / "eval.json").write_text(json.dumps(last, indent=2))
    return last


def _report_step(s: Setup, m: dict[str, float], bar: Any) -> None:
    step = s.run.state.step
    if step % s.cfg.train.log_every == 0 or step == s.total_steps:
        s.run.write({"step": step, "split": "train", **m})
    bar.set_postfix(loss=f"{m['loss']:.4f}", lr=f"{m['lr']:.2e}")
    bar.update(1)


# ----------------------------------------------------------------------------- the loop


def run(cfg: ClassifyConfig, skip_preflight: bool = False) -> ClassifyResult:
    """Train, evaluate and save a classifier (pre-flight checks: ``tunesmith doctor``)."""
    s = setup(cfg, skip_preflight)
    run, info = s.run, s.dist
    optimizer, scheduler = run.optimizer(s.model, s.total_steps, s.step_module)
    state = run.state
    # One step = grad_accum rounds of (micro_batch_size x world) examples; each rank its share.
    batches = run.batches(len(s.train))
    run.open_log()
    bar = run.progress(s.total_steps, "classify")
    stopped_early, last_loss, last_eval = False, None, None
    while state.step < s.total_steps and not stopped_early:
        t0 = time.perf_counter()  # the step alone: evaluation and checkpoints are not counted
        micro = [_micro_batch(s, shard(mb, info)) for mb in next(batches)]
        m = train_step(s, optimizer, scheduler, micro)
        state.step += 1
        last_loss = m["loss"]
        m["step_seconds"] = time.perf_counter() - t0
        _report_step(s, m, bar)
        if s.held_out and due(state.step, cfg.train.eval_every, s.total_steps):
            last_eval, stopped_early = _evaluate(s)
        if due(state.step, cfg.train.save_every, s.total_steps):
            run.checkpoint(s.model, optimizer, scheduler, s.step_module)
        run.crash_point()
    bar.close()
    result = _final_eval(s, last_eval)
    final = _save(s, s.run_dir / "final")
    run.finish()
    best = state.best_metric if state.best_step is not None else None
    return ClassifyResult(
        run_dir=s.run_dir,
        final_dir=final,
        steps=state.step,
        last_train_loss=last_loss,
        eval=_summary(result),
        best_macro_f1=None if best is None else float(best),
        stopped_early=stopped_early,
    )


def _summary(result: dict[str, Any]) -> dict[str, Any]:
    """The headline figures (eval.json holds the full report)."""
    if not result:
        return {}
    r, b = result["held_out"], result["majority_baseline"]
    return {
        "accuracy": r["accuracy"],
        "macro_f1": r["macro_f1"],
        "majority_accuracy": b["accuracy"],
        "majority_macro_f1": b["macro_f1"],
    }
