"""``tunesmith prune``: score blocks on calibration texts, drop the least useful, save, report.

The pruned directory is reloaded with plain ``AutoModelForCausalLM`` before the "after"
perplexity is measured, so the report's numbers are those of the files a user gets.
"""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any

import torch
from transformers import AutoModelForCausalLM

from tunesmith.compress.calibration import read_texts, split_texts
from tunesmith.compress.prune import (
    checkpoint_bytes,
    choose_layers,
    layer_scores,
    param_count,
    remove_layers,
    save_atomic,
)
from tunesmith.merge.common import is_adapter, weights_dir
from tunesmith.models.load import load_causal_lm, load_tokenizer, pick_device, resolve_model
from tunesmith.report.html import bar_chart, page, table

MAX_TOKENS = 256


def _batches(tokenizer: Any, texts: list[str], device: torch.device, size: int = 8) -> list[dict]:
    out = []
    for start in range(0, len(texts), size):
        enc = tokenizer(
            texts[start : start + size],
            return_tensors="pt",
            padding=True,
            truncation=True,
            max_length=MAX_TOKENS,
        )
        out.append(
            {k: v.to(device) for k, v in enc.items() if k in ("input_ids", "attention_mask")}
        )
    return out


@torch.no_grad()
def perplexity(model: Any, batches: list[dict[str, torch.Tensor]]) -> float:
    """exp(token-weighted mean next-token NLL) over the real tokens of ``batches``."""
    model.eval()
    total, count = 0.0, 0
    for batch in batches:
        logits = model(**batch).logits[:, :-1].float()  # [B, T-1, V]
        target = batch["input_ids"][:, 1:]
        keep = batch["attention_mask"][:, 1:].bool()
        nll = torch.nn.functional.cross_entropy(logits.transpose(1, 2), target, reduction="none")
        total += float(nll[keep].sum())
        count += int(keep.sum())
    return math.exp(min(total / max(count, 1), 50.0))


def _source_dir(model: str) -> Path:
    path = Path(model).expanduser()
    if path.is_dir() and not (path / "config.json").is_file():
        path = weights_dir(path)  # a run dir: its final/
        if is_adapter(path):
            from tunesmith.compress.prune import PruneError

            raise PruneError(f"{model}: holds a LoRA adapter; `tunesmith merge` it first")
    return resolve_model(str(path)) if path.exists() else resolve_model(model)


def prune(
    model: str, drop: int, out: Path, calibration: Path | None = None, device: str = "auto"
) -> dict[str, Any]:
    """Drop ``drop`` blocks of ``model``, write the pruned model and its report at ``out``."""
    src = _source_dir(model)
    dev = pick_device(device)
    tokenizer = load_tokenizer(src)
    calib, held = split_texts(read_texts(calibration, tokenizer))
    lm = load_causal_lm(src, dtype=torch.float32, device=dev, attn_implementation="eager")
    calib_batches, held_batches = _batches(tokenizer, calib, dev), _batches(tokenizer, held, dev)
    scores = layer_scores(lm, calib_batches)
    dropped = choose_layers(scores, drop)
    before = {"params": param_count(lm), "bytes": checkpoint_bytes(src)}
    before["perplexity"] = perplexity(lm, held_batches)
    save_atomic(remove_layers(lm, dropped), tokenizer, out)
    reloaded = AutoModelForCausalLM.from_pretrained(str(out), dtype=torch.float32).to(dev)
    after = {"params": param_count(reloaded), "bytes": checkpoint_bytes(out)}
    after["perplexity"] = perplexity(reloaded, held_batches)
    report = {
        "kind": "prune",
        "rule": "ShortGPT: drop the blocks with the lowest mean angular distance",
        "model": str(src),
        "out": str(out),
        "calibration": str(calibration) if calibration else "built-in",
        "calibration_texts": len(calib),
        "held_out_texts": len(held),
        "layers_before": len(scores),
        "layers_after": len(scores) - len(dropped),
        "dropped": dropped,
        "scores": [{"layer": i, "angular_distance": s} for i, s in enumerate(scores)],
        "before": before,
        "after": after,
    }
    (out / "prune_report.json").write_text(json.dumps(report, indent=2) + "\n")
    (out / "prune_report.html").write_text(render(report))
    return report


def render(report: dict[str, Any]) -> str:
    """The prune report as one self-contained HTML page."""
    dropped = set(report["dropped"])
    rows = [
        [s["layer"], f"{s['angular_distance']:.4f}", "dropped" if s["layer"] in dropped else ""]
        for s in report["scores"]
    ]
    chart = bar_chart(
        [(f"layer {s['layer']}", s["angular_distance"]) for s in report["scores"]],
        title="Mean angular distance (input vs output of the block)",
        chart_id="layer-scores",
    )
    b, a = report["before"], report["after"]
    sizes = table(
        ["", "before", "after"],
        [
            ["layers", report["layers_before"], report["layers_after"]],
            ["parameters", b["params"], a["params"]],
            ["bytes", b["bytes"], a["bytes"]],
            ["held-out perplexity", f"{b['perplexity']:.3f}", f"{a['perplexity']:.3f}"],
        ],
    )
    return page(
        "Depth pruning report",
        [
            ("Size and quality", sizes),
            ("Layer scores", chart + table(["layer", "angular distance", ""], rows)),
        ],
        subtitle=f"{report['model']} -> {report['out']} ({report['rule']})",
    )
