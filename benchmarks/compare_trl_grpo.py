#!/usr/bin/env python3
"""tunesmith GRPO vs TRL GRPOTrainer on the same job: step time and generated tokens/s.

The job: LoRA r=16 (all linear layers, dropout 0) on ``--model`` (default SmolLM2-135M-Instruct),
the arithmetic prompts of ``data/grpo/train.jsonl`` (``scripts/make_arithmetic_data.py``), G = 8
completions for each of 4 prompts per step, ``--new-tokens`` max new tokens, temperature 1,
exact-answer reward, lr 5e-4 constant, beta 0.04 (k3 KL to the adapter-free base), token-level
loss normalisation (TRL ``loss_type="dapo"``), one optimizer step per generation batch, fp32.
Each tool runs in its own subprocess (``benchmarks/_child.py``: wall time, CPU time, peak RSS);
tunesmith through its CLI, TRL through ``_trl_grpo_worker.py``.

Reported per tool: median step time (step 1 skipped as warm-up), generated tokens per step and
generated tokens per second of step time (generation + scoring + update), peak RSS; and the
tunesmith/TRL ratio of each. Sampling is random in both, so completion lengths (hence the work
per step) differ between the tools: compare tokens/s, not only step time.

Usage (on a shared machine keep ``--threads 1``)::

    python benchmarks/compare_trl_grpo.py [--steps 6] [--model smollm2-135m-instruct]
        [--threads 1] [--out benchmarks/results/compare_trl_grpo.json]
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import tempfile
from pathlib import Path
from typing import Any

import yaml

HERE = Path(__file__).resolve().parent
REPO = HERE.parent
sys.path.insert(0, str(HERE))

from _child import run_child  # noqa: E402
from _machine import load_average, machine_info  # noqa: E402
from compare_trl import child_env  # noqa: E402

from tunesmith.models.load import resolve_model  # noqa: E402

G, PROMPTS, LORA_R, LR, BETA, SEED = 8, 4, 16, 5e-4, 0.04, 42


def _data(work: Path, n: int) -> Path:
    rows = (REPO / "data" / "grpo" / "train.jsonl").read_text().splitlines()[:n]
    path = work / "prompts.jsonl"
    path.write_text("\n".join(rows) + "\n")
    return path


def run_tunesmith(args: argparse.Namespace, model: Path, data: Path, work: Path) -> dict:
    cfg = {
        "method": "grpo",
        "model": {"name_or_path": str(model)},
        "data": {"train": str(data)},
        "train": {
            "output_dir": str(work / "runs"),
            "run_name": "tunesmith",
            "max_steps": args.steps,
            "micro_batch_size": G * PROMPTS,
            "precision": "fp32",
            "seed": SEED,
        },
        "optim": {"lr": LR, "schedule": "constant"},
        "lora": {"r": LORA_R, "alpha": 2 * LORA_R, "dropout": 0.0},
        "grpo": {
            "num_generations": G,
            "prompts_per_step": PROMPTS,
            "max_new_tokens": args.new_tokens,
            "beta": BETA,
            "loss_norm": "token",
            "eval_before": False,
        },
        "rewards": [{"name": "math"}],
    }
    path = work / "tunesmith.yaml"
    path.write_text("# tunesmith train\n" + yaml.safe_dump(cfg))
    metrics = work / "runs" / "tunesmith" / "metrics.jsonl"
    cmd = [sys.executable, "-m", "tunesmith", "train", str(path)]
    child = run_child(cmd, work / "tunesmith.log", child_env(args.threads))
    if child.rc != 0:
        raise SystemExit(f"tunesmith failed, see {work / 'tunesmith.log'}")
    rows = [json.loads(x) for x in metrics.read_text().splitlines()]
    steps = [
        {
            "step": r["step"],
            "step_seconds": r["step_seconds"],
            "gen_tokens": r["completion_length"] * G * PROMPTS,
            "gen_only_tokens_per_s": r["gen_tokens_per_s"],
        }
        for r in rows
        if r.get("split") == "train"
    ]
    return {"steps": steps, "peak_rss_bytes": child.peak_rss_bytes, "wall": child.wall_seconds}


def run_trl(args: argparse.Namespace, model: Path, data: Path, work: Path) -> dict:
    spec = {
        "model": str(model),
        "data": str(data),
        "out": str(work / "trl"),
        "num_generations": G,
        "prompts_per_step": PROMPTS,
        "max_new_tokens": args.new_tokens,
        "lr": LR,
        "beta": BETA,
        "steps": args.steps,
        "seed": SEED,
        "lora_r": LORA_R,
    }
    path = work / "trl_spec.json"
    path.write_text(json.dumps(spec))
    cmd = [sys.executable, str(HERE / "_trl_grpo_worker.py"), str(path)]
    child = run_child(cmd, work / "trl.log", child_env(args.threads))
    if child.rc != 0:
        raise SystemExit(f"TRL failed, see {work / 'trl.log'}")
    rows = [json.loads(x) for x in (work / "trl" / "metrics.jsonl").read_text().splitlines()]
    return {"steps": rows, "peak_rss_bytes": child.peak_rss_bytes, "wall": child.wall_seconds}


def summarise(run: dict[str, Any]) -> dict[str, Any]:
    timed = [s for s in run["steps"] if s["step"] > 1 and s["step_seconds"]] or run["steps"]
    seconds = sum(s["step_seconds"] for s in timed)
    tokens = sum(s["gen_tokens"] for s in timed)
    return {
        "median_step_seconds": statistics.median(s["step_seconds"] for s in timed),
        "gen_tokens_per_step": tokens / len(timed),
        "gen_tokens_per_step_second": tokens / seconds,
        "peak_rss_mib": run["peak_rss_bytes"] / 2**20,
        "timed_steps": len(timed),
    }


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--steps", type=int, default=6)
    ap.add_argument("--new-tokens", type=int, default=32)
    ap.add_argument("--model", default="smollm2-135m-instruct")
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--out", default=str(HERE / "results" / "compare_trl_grpo.json"))
    args = ap.parse_args()
    model = resolve_model(args.model)
    load_before = load_average()
    with tempfile.TemporaryDirectory(prefix="tunesmith-grpo-bench-") as tmp:
        work = Path(tmp)
        data = _data(work, 256)
        runs = {
            "tunesmith": run_tunesmith(args, model, data, work),
            "trl": run_trl(args, model, data, work),
        }
    results = {name: summarise(r) for name, r in runs.items()}
    ratios = {
        k: results["tunesmith"][k] / results["trl"][k]
        for k in ("median_step_seconds", "gen_tokens_per_step_second", "peak_rss_mib")
    }
    out = {
        "job": {
            "model": args.model,
            "G": G,
            "prompts_per_step": PROMPTS,
            "steps": args.steps,
            "max_new_tokens": args.new_tokens,
            "lora_r": LORA_R,
            "beta": BETA,
        },
        "machine": machine_info(),
        "load_before": load_before,
        "load_after": load_average(),
        "results": results,
        "tunesmith_over_trl": ratios,
        "raw": runs,
    }
    Path(args.out).write_text(json.dumps(out, indent=2) + "\n")
    print(json.dumps({"results": results, "tunesmith_over_trl": ratios}, indent=2))


if __name__ == "__main__":
    main()
