#!/usr/bin/env python3
"""A few-trial ``tunesmith sweep`` on SmolLM2-135M-Instruct (the demo LoRA recipe): the trials
table (learning rate, LoRA rank, held-out loss, state, wall time) and the best trial.

Runs ``configs/smollm2-135m-instruct/sft_lora_demo.yaml`` with ``--trials`` trials of ``--steps``
steps each over ``optim.lr`` (log-uniform) and ``lora.r`` (choice), TPE + median pruning, and
writes ``benchmarks/results/sweep_smollm2.json`` (``--out`` to change). ``--model`` /
``--steps`` / ``--trials`` shrink it (a tiny model dir proves the script works in seconds).

Usage: ``python benchmarks/sweep_smollm2.py [--trials 6] [--steps 30] [--model DIR] [K=V ...]``
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _machine import machine_info

from tunesmith.sweep import SweepSpec, run_sweep

ROOT = Path(__file__).resolve().parents[1]
RECIPE = ROOT / "configs" / "smollm2-135m-instruct" / "sft_lora_demo.yaml"
SPACE = "optim.lr: {log_uniform: [1.0e-5, 3.0e-3]}\nlora.r: {choice: [4, 8, 16]}\n"


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--trials", type=int, default=6)
    ap.add_argument("--steps", type=int, default=30)
    ap.add_argument("--model", default="smollm2-135m-instruct")
    ap.add_argument("overrides", nargs="*", help="extra key.sub=value for every trial")
    ap.add_argument("--out", default=str(ROOT / "benchmarks" / "results" / "sweep_smollm2.json"))
    args = ap.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        space = Path(tmp) / "space.yaml"
        space.write_text(SPACE)
        overrides = [
            f"model.name_or_path={args.model}",
            f"train.max_steps={args.steps}",
            f"data.train={ROOT / 'data/demo/train.jsonl'}",
            "train.save_every=1000",
            *args.overrides,
        ]
        spec = SweepSpec(str(RECIPE), overrides, str(space), args.trials, str(Path(tmp) / "s"))
        start = time.perf_counter()
        summary = run_sweep(spec)
        rows = [line for line in (Path(tmp) / "s" / "trials.csv").read_text().splitlines()]
    print(summary.table)
    result: dict[str, Any] = {
        "command": "python benchmarks/sweep_smollm2.py " + " ".join(sys.argv[1:]),
        "recipe": str(RECIPE.relative_to(ROOT)),
        "space": SPACE,
        "steps_per_trial": args.steps,
        "model": args.model,
        "trials_csv": rows,
        "counts": summary.counts,
        "best_val_loss": summary.best_value,
        "seconds": round(time.perf_counter() - start, 1),
        "machine": machine_info(),
    }
    Path(args.out).write_text(json.dumps(result, indent=2) + "\n")
    print(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
