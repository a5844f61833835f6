#!/usr/bin/env python3
"""Retrieval before and after ``method: embed`` on the shipped FAQ set (data/embed/).

Trains all-MiniLM-L6-v2 with the two recipes (configs/all-minilm-l6-v2/embed_full.yaml and
embed_lora.yaml) and records each run's held-out recall@1/5/10, MRR@10 and nDCG@10 of the base
model ("before") and of final/ ("after") in ``benchmarks/results/embed_minilm.json``.

Usage: ``python benchmarks/embed_minilm.py [--max-steps N] [--out FILE]`` (``--max-steps 2``
is a smoke run; its numbers are not the recipe's).
"""

from __future__ import annotations

import argparse
import json
import tempfile
import time
from pathlib import Path

from tunesmith.config import load_config
from tunesmith.methods.embed import run

ROOT = Path(__file__).resolve().parents[1]
RECIPES = ("embed_full", "embed_lora")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--max-steps", type=int, help="cut each run short (smoke test)")
    ap.add_argument("--out", default=str(ROOT / "benchmarks/results/embed_minilm.json"))
    args = ap.parse_args()
    results = {}
    with tempfile.TemporaryDirectory() as tmp:
        for name in RECIPES:
            overrides = [
                f"data.train={ROOT / 'data/embed/train.jsonl'}",
                f"data.validation={ROOT / 'data/embed/test.jsonl'}",
                f"train.output_dir={tmp}",
            ]
            if args.max_steps:
                overrides.append(f"train.max_steps={args.max_steps}")
            cfg = load_config(ROOT / "configs/all-minilm-l6-v2" / f"{name}.yaml", overrides)
            t0 = time.perf_counter()
            result = run(cfg)
            results[name] = {
                "recipe": f"configs/all-minilm-l6-v2/{name}.yaml",
                "steps": result.steps,
                "wall_s": round(time.perf_counter() - t0, 1),
                "before": result.before,
                "after": result.after,
            }
    out = {"command": "python benchmarks/embed_minilm.py", "max_steps": args.max_steps, **results}
    Path(args.out).write_text(json.dumps(out, indent=2) + "\n")
    for name, r in results.items():
        b, a = r["before"], r["after"]
        print(f"{name}: " + ", ".join(f"{k} {b[k]:.3f} -> {a[k]:.3f}" for k in
                                      ("recall@1", "recall@10", "mrr@10", "ndcg@10")))  # fmt: skip


if __name__ == "__main__":
    main()
