"""Sequence classification: a pretrained encoder or decoder with a classification head.

The algorithm, top to bottom:
  1. data: text,label rows (fields configurable); the label set is the training labels, saved
     with the model (id2label / label2id); a held-out label never seen in training stops the
     run before any model loads, naming the valid labels;
  2. model: ``AutoModelForSequenceClassification`` on the backbone (an encoder such as
     all-MiniLM-L6-v2, pooled at [CLS]; or a decoder, pooled by transformers at the rightmost
     token that is not ``pad_token_id``, so a decoder gets ``pad_token_id`` and texts must not
     contain that token);
  3. what trains (``classify.mode``): head only, head + top-k layers, everything, or LoRA with
     the head trained in full;
  4. loop: for each optimizer step ``grad_accum`` micro-batches of mean cross-entropy (each
     scaled by 1/grad_accum), clip, AdamW, schedule step;
  5. evaluate on the held-out split: accuracy, macro precision/recall/F1, confusion matrix and
     the majority-class baseline -> ``metrics.jsonl`` and ``eval.json``;
  6. save ``final/``: loads with ``AutoModelForSequenceClassification`` (LoRA: with peft, see
     :func:`load_classifier`).
"""

from __future__ import annotations

import json
import math
import re
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from tqdm.auto import tqdm
from transformers import AutoModelForSequenceClassification

from tunesmith.config.classify import ClassifyConfig
from tunesmith.data.dataset import step_batches
from tunesmith.data.labelled import (
    ClassifyData,
    LabelledText,
    check_pad_free,
    collate,
    encode,
    prepare_classify_data,
    train_files,
)
from tunesmith.engine.metrics_log import MetricsLog
from tunesmith.engine.optim import build_optimizer, build_scheduler
from tunesmith.engine.precision import autocast, resolve_precision
from tunesmith.engine.rundir import new_run_dir, write_run_files
from tunesmith.engine.tracking import open_metrics_log
from tunesmith.engine.trainable import total_steps
from tunesmith.eval.classification import classification_report, majority_baseline
from tunesmith.losses.classification import classification_loss
from tunesmith.models.adapters import check_rank, linear_modules, lora_targets, match_targets
from tunesmith.models.encoders import resolve_backbone
from tunesmith.models.load import load_dtype, load_tokenizer, pick_device

__all__ = ["ClassifyConfig", "ClassifyResult", "load_classifier", "run"]

LAYER_RE = re.compile(r"\.(?:layers|layer|h|blocks)\.(\d+)\.")


@dataclass
class ClassifyResult:
    run_dir: Path
    final_dir: Path
    steps: int
    last_train_loss: float | None
    eval: dict[str, Any] = field(default_factory=dict)  # headline figures; eval.json: all


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


def load_backbone(cfg: ClassifyConfig, path: Path, labels: list[str], tokenizer: Any) -> Any:
    """The classifier with a fresh head of ``len(labels)`` outputs and the label names."""
    device = pick_device(cfg.train.device)
    model = AutoModelForSequenceClassification.from_pretrained(
        str(path),
        num_labels=len(labels),
        id2label=dict(enumerate(labels)),
        label2id={label: i for i, label in enumerate(labels)},
        dtype=load_dtype(cfg.model.dtype, device),
        attn_implementation=cfg.model.attn_implementation,
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


def build_model(cfg: ClassifyConfig, path: Path, labels: list[str], tokenizer: Any) -> Any:
    torch.manual_seed(cfg.train.seed)  # the new head (and LoRA's A) are drawn here
    model = load_backbone(cfg, path, labels, tokenizer)
    if cfg.train.gradient_checkpointing:
        model.gradient_checkpointing_enable(gradient_checkpointing_kwargs={"use_reentrant": False})
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
        base = AutoModelForSequenceClassification.from_pretrained(
            str(resolve_backbone(_saved_base(weights))),
            num_labels=len(labels),
            id2label=dict(enumerate(labels)),
            label2id={label: i for i, label in enumerate(labels)},
        )
        if base.config.pad_token_id is None:
            base.config.pad_token_id = tokenizer.pad_token_id
        model = PeftModel.from_pretrained(base, str(weights))
    else:
        model = AutoModelForSequenceClassification.from_pretrained(str(weights))
    return model.to(pick_device(device)).eval(), tokenizer


def _saved_base(weights: Path) -> str:
    import yaml

    return str(
        yaml.safe_load((weights / "tunesmith_config.yaml").read_text())["model"]["name_or_path"]
    )


# ----------------------------------------------------------------------------- evaluation


@torch.no_grad()
def predict(
    model: Any, encoded: list[tuple[list[int], int]], pad_id: int, batch_size: int, precision: str
) -> list[int]:
    was_training = model.training
    model.eval()
    device = next(model.parameters()).device
    out: list[int] = []
    for start in range(0, len(encoded), batch_size):
        batch = collate(encoded[start : start + batch_size], pad_id)
        with autocast(precision, device):
            logits = model(
                input_ids=batch["input_ids"].to(device),
                attention_mask=batch["attention_mask"].to(device),
            ).logits
        out += logits.argmax(-1).tolist()
    model.train(was_training)
    return out


def evaluate(s: Setup, step: int) -> dict[str, Any]:
    """The held-out report beside the majority-class baseline."""
    y_true = [label for _, label in s.held_out]
    y_pred = predict(s.model, s.held_out, s.pad_id, s.cfg.classify.eval_batch_size, s.precision)
    report = classification_report(y_true, y_pred, s.data.labels)
    baseline = majority_baseline([label for _, label in s.train], y_true, s.data.labels)
    return {"step": step, "held_out": report, "majority_baseline": baseline}


# ----------------------------------------------------------------------------- the loop


@dataclass
class Setup:
    cfg: ClassifyConfig
    run_dir: Path
    data: ClassifyData
    model: Any
    tokenizer: Any
    train: list[tuple[list[int], int]]
    held_out: list[tuple[list[int], int]]
    pad_id: int
    device: torch.device
    precision: str
    total_steps: int


def _encode_all(
    cfg: ClassifyConfig, data: ClassifyData, tokenizer: Any, model: Any
) -> tuple[Any, Any]:
    ids = data.label2id
    train = encode(tokenizer, data.train, ids, cfg.data.max_length)
    held = encode(tokenizer, data.held_out, ids, cfg.data.max_length)
    if is_decoder_backbone(model.config):
        pad = model.config.pad_token_id
        items: list[LabelledText] = data.train + data.held_out
        check_pad_free(train + held, items, pad, tokenizer.convert_ids_to_tokens(pad))
    return train, held


def setup(cfg: ClassifyConfig) -> Setup:
    c = cfg.classify
    data = prepare_classify_data(cfg.data, c.text_field, c.label_field)  # errors before loading
    path = resolve_backbone(cfg.model.name_or_path)
    tokenizer = load_tokenizer(path)
    model = build_model(cfg, path, data.labels, tokenizer)
    train, held = _encode_all(cfg, data, tokenizer, model)
    run_dir = new_run_dir(cfg)
    total = total_steps(cfg.train, len(train))
    trainable = sum(p.numel() for p in model.parameters() if p.requires_grad)
    params = sum(p.numel() for p in model.parameters())
    extra = {
        "base_model": str(path),
        "labels": data.labels,
        "train_examples": len(train),
        "held_out_examples": len(held),
        "trainable_params": trainable,
        "total_params": params,
    }
    write_run_files(run_dir, cfg, train_files(cfg.data), extra)
    print(
        f"[tunesmith] run dir {run_dir}\n[tunesmith] classify mode {c.mode}: trainable "
        f"{trainable:,} / {params:,}; labels {data.labels}; train {len(train)}, held-out "
        f"{len(held)}",
        flush=True,
    )
    device = next(model.parameters()).device
    return Setup(
        cfg,
        run_dir,
        data,
        model,
        tokenizer,
        train,
        held,
        tokenizer.pad_token_id,
        device,
        resolve_precision(cfg.train.precision, device),
        total,
    )


def train_step(
    s: Setup, optimizer: Any, scheduler: Any, micro: list[list[int]]
) -> dict[str, float]:
    """Mean loss over the step's micro-batches (each micro-batch a mean over its examples)."""
    total = 0.0
    for indices in micro:
        batch = {
            k: v.to(s.device) for k, v in collate([s.train[i] for i in indices], s.pad_id).items()
        }
        with autocast(s.precision, s.device):
            logits = s.model(
                input_ids=batch["input_ids"], attention_mask=batch["attention_mask"]
            ).logits
        loss = classification_loss(logits, batch["labels"]) / len(micro)
        loss.backward()
        total += loss.item()
    params = [p for p in s.model.parameters() if p.requires_grad]
    norm = torch.nn.utils.clip_grad_norm_(params, s.cfg.optim.max_grad_norm or math.inf)
    lr = scheduler.get_last_lr()[0]
    optimizer.step()
    scheduler.step()
    optimizer.zero_grad(set_to_none=True)
    return {"loss": total, "grad_norm": float(norm), "lr": lr}


def _log_eval(s: Setup, result: dict[str, Any], log: MetricsLog) -> None:
    r, b = result["held_out"], result["majority_baseline"]
    log.write(
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


def _save_final(s: Setup) -> Path:
    final = s.run_dir / "final"
    s.model.save_pretrained(final, safe_serialization=True)
    s.tokenizer.save_pretrained(final)
    (final / "labels.json").write_text(json.dumps({"labels": s.data.labels}, indent=2))
    (final / "tunesmith_config.yaml").write_text((s.run_dir / "config.yaml").read_text())
    return final


def run(cfg: ClassifyConfig, skip_preflight: bool = False) -> ClassifyResult:
    """Train, evaluate and save a classifier (no pre-flight checks apply to this method)."""
    s = setup(cfg)
    optimizer = build_optimizer(s.model, cfg.optim)
    scheduler = build_scheduler(optimizer, cfg.optim, s.total_steps)
    batches = step_batches(
        len(s.train), cfg.train.seed, cfg.train.micro_batch_size, cfg.train.grad_accum
    )
    log = open_metrics_log(s.run_dir, cfg, True)
    bar = tqdm(total=s.total_steps, desc="classify", unit="step", dynamic_ncols=True)
    loss = None
    for step in range(1, s.total_steps + 1):
        t0 = time.perf_counter()
        m = train_step(s, optimizer, scheduler, next(batches))
        loss = m["loss"]
        log.write({"step": step, "split": "train", **m, "step_seconds": time.perf_counter() - t0})
        bar.set_postfix(loss=f"{loss:.4f}", lr=f"{m['lr']:.2e}")
        bar.update(1)
        every = cfg.train.eval_every
        if every and step % every == 0 and step < s.total_steps and s.held_out:
            _log_eval(s, evaluate(s, step), log)
    bar.close()
    result = evaluate(s, s.total_steps) if s.held_out else {}
    if result:
        _log_eval(s, result, log)
        (s.run_dir / "eval.json").write_text(json.dumps(result, indent=2))
    log.close()
    final = _save_final(s)
    return ClassifyResult(s.run_dir, final, s.total_steps, loss, _summary(result))


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
