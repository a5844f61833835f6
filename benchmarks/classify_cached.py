#!/usr/bin/env python3
"""Wall time of head-only classification, live backbone vs cached frozen features (issue 21).

The job is issue 21's: ``configs/all-minilm-l6-v2/classify_head.yaml`` (MiniLM, ``mode: head``)
on the SpamAssassin e-mails (``python scripts/make_spam_corpus.py`` writes ``data/spam/``) with
``data.max_length=256`` for 3 epochs, micro-batch 16. It runs twice on the same data, with
``classify.cache_features: none`` (the backbone runs every step) and ``memory`` (it runs once),
and writes the wall time of each run, the seconds per step and the held-out accuracy / macro-F1
to ``benchmarks/results/classify_cached.json``.

    python benchmarks/classify_cached.py                 # the real job (CPU: ~30 min uncached)
    python benchmarks/classify_cached.py --limit 200 --epochs 1 --max-length 64   # a quick check
"""

from __future__ import annotations

import argparse
import json
import platform
import tempfile
import time
from pathlib import Path
from typing import Any

import torch

from tunesmith.config import load_config
from tunesmith.methods.classify import run

ROOT = Path(__file__).resolve().parents[1]
RECIPE = ROOT / "configs" / "all-minilm-l6-v2" / "classify_head.yaml"
OUT = ROOT / "benchmarks" / "results" / "classify_cached.json"


def _subset(src: Path, dst: Path, limit: int | None) -> Path:
    lines = [x for x in src.read_text(encoding="utf-8").splitlines() if x.strip()]
    dst.write_text("\n".join(lines[:limit]) + "\n", encoding="utf-8")
    return dst


def one_run(args: argparse.Namespace, cache: str, work: Path) -> dict[str, Any]:
    train = _subset(args.train, work / "train.jsonl", args.limit)
    test = _subset(args.test, work / "test.jsonl", args.limit and max(1, args.limit // 4))
    overrides = [
        f"data.train=[{train}]",
        f"data.validation={test}",
        f"data.max_length={args.max_length}",
        f"train.epochs={args.epochs}",
        f"train.output_dir={work / 'runs'}",
        f"train.run_name={cache}",
        f"train.device={args.device}",
        f"classify.cache_features={cache}",
    ]
    cfg = load_config(RECIPE, overrides)
    t0 = time.perf_counter()
    result = run(cfg)
    wall = time.perf_counter() - t0
    return {
        "cache_features": cache,
        "wall_seconds": round(wall, 2),
        "steps": result.steps,
        "seconds_per_step": round(wall / max(1, result.steps), 4),
        "train_examples": sum(1 for _ in train.open()),
        "held_out_accuracy": result.eval.get("accuracy"),
        "held_out_macro_f1": result.eval.get("macro_f1"),
        "majority_accuracy": result.eval.get("majority_accuracy"),
    }


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--train", type=Path, default=ROOT / "data" / "spam" / "train.jsonl")
    p.add_argument("--test", type=Path, default=ROOT / "data" / "spam" / "test.jsonl")
    p.add_argument("--limit", type=int, help="first N train rows (N/4 held-out): a quick check")
    p.add_argument("--max-length", type=int, default=256)
    p.add_argument("--epochs", type=float, default=3.0)
    p.add_argument("--device", default="auto")
    p.add_argument("--threads", type=int, help="torch threads (default: torch's)")
    p.add_argument("--out", type=Path, default=OUT)
    args = p.parse_args(argv)
    if not args.train.is_file():
        raise SystemExit(f"{args.train} missing: run python scripts/make_spam_corpus.py first")
    if args.threads:
        torch.set_num_threads(args.threads)
    runs = []
    with tempfile.TemporaryDirectory() as tmp:
        for cache in ("memory", "none"):
            work = Path(tmp) / cache
            work.mkdir()
            runs.append(one_run(args, cache, work))
            print(json.dumps(runs[-1]), flush=True)
    command = "python benchmarks/classify_cached.py" + "".join(
        f" --{k.replace('_', '-')} {v}"
        for k, v in vars(args).items()
        if k in {"limit", "max_length", "epochs", "device", "threads"} and v is not None
    )
    result = {
        "command": command,
        "machine": {
            "cpu": platform.processor() or platform.machine(),
            "torch_threads": torch.get_num_threads(),
            "cuda": torch.cuda.get_device_name(0) if torch.cuda.is_available() else None,
        },
        "runs": runs,
        "speedup": round(runs[1]["wall_seconds"] / max(runs[0]["wall_seconds"], 1e-9), 1),
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=2) + "\n")
    print(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
