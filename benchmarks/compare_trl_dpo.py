#!/usr/bin/env python3
"""tunesmith DPO vs TRL ``DPOTrainer`` on the same job, alternating, each run its own process.

Job: DPO (sigmoid loss, beta 0.1) with LoRA r=16 (alpha 32, dropout 0.05) on all linear layers
of SmolLM2-135M-Instruct, the shipped preference set ``data/preference/train.jsonl``, 8 pairs
per optimizer step (one micro-batch: 16 sequences, chosen and rejected in one forward), max
length 256, AdamW lr 2e-4 cosine, fp32, ``--steps`` steps. Variants:

* ``tunesmith-live``: reference = the policy with its adapter disabled, run every step; pairs
  in tunesmith's default layout (``dpo.layout: auto``: each prompt once with both replies after
  it, one pair per row);
* ``tunesmith-precompute``: ``dpo.precompute_ref=true`` (reference log-probs computed once,
  before the first step, and cached in the run dir);
* ``tunesmith_padded-live`` / ``-precompute``: the same with ``dpo.layout: padded`` (2B padded
  rows, TRL's layout): the shared-prompt lever measured alone;
* ``trl-live`` / ``trl-precompute``: TRL 1.16 ``DPOTrainer`` with ``peft_config`` (reference =
  adapter disabled) and ``precompute_ref_log_probs`` off / on (``_trl_dpo_worker.py``).

Per run: median step time with step 1 skipped as warm-up (both tools time data collation +
forward/backward + optimizer; any precompute pass is outside the steps, and reported in the
run's wall time), steps/s, median CPU-seconds per step, peak RSS of the child (``ru_maxrss``).
Runs alternate between variants (``--repeats`` rounds), so slow drift of a shared machine hits
all of them alike; the load average before and after each run is recorded.

Usage::

    python benchmarks/compare_trl_dpo.py [--steps 10] [--repeats 2] [--threads N]
        [--variants tunesmith-live,tunesmith-precompute,trl-live,trl-precompute]
        [--out benchmarks/results/compare_trl_dpo.json]
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

from _child import Child, run_child  # noqa: E402
from _machine import load_average, machine_info  # noqa: E402
from compare_trl import child_env  # noqa: E402

MODEL = "smollm2-135m-instruct"
DATA = REPO / "data" / "preference" / "train.jsonl"
DEFAULT_OUT = HERE / "results" / "compare_trl_dpo.json"
VARIANTS = (
    "tunesmith-live",
    "tunesmith-precompute",
    "tunesmith_padded-live",
    "tunesmith_padded-precompute",
    "trl-live",
    "trl-precompute",
)


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--steps", type=int, default=10)
    p.add_argument("--repeats", type=int, default=1)
    p.add_argument("--batch", type=int, default=8, help="pairs per optimizer step")
    p.add_argument("--max-length", type=int, default=256)
    p.add_argument("--lr", type=float, default=2e-4)
    p.add_argument("--beta", type=float, default=0.1)
    p.add_argument("--seed", type=int, default=42)
    p.add_argument("--threads", type=int, default=None, help="OMP/MKL threads per child")
    p.add_argument("--pairs", type=int, default=0, help="use the first N pairs (0 = all)")
    p.add_argument("--variants", default=",".join(VARIANTS))
    p.add_argument("--out", type=Path, default=DEFAULT_OUT)
    p.add_argument("--precision", choices=["fp32", "bf16"], default="fp32", help="both tools")
    p.add_argument(
        "--gradient-checkpointing",
        action="store_true",
        help="on in both tools (TRL's DPOConfig default is on, tunesmith's off; the default "
        "here is off in both, so both do the same computation)",
    )
    return p.parse_args(argv)


def data_file(args: argparse.Namespace, work: Path) -> Path:
    """The shipped train pairs, or their first ``--pairs`` (for smoke runs)."""
    if not args.pairs:
        return DATA
    path = work / "pairs.jsonl"
    path.write_text("".join(DATA.read_text().splitlines(keepends=True)[: args.pairs]))
    return path


def tunesmith_config(
    args: argparse.Namespace, name: str, precompute: bool, layout: str, work: Path
) -> dict:
    return {
        "method": "dpo",
        "model": {"name_or_path": MODEL},
        "data": {
            "train": str(data_file(args, work)),
            "max_length": args.max_length,
            "val_fraction": 0.0,
        },
        "train": {
            "output_dir": str(work / "runs"),
            "run_name": name,
            "max_steps": args.steps,
            "micro_batch_size": args.batch,
            "grad_accum": 1,
            "precision": args.precision,
            "seed": args.seed,
            "log_every": 1,
            "gradient_checkpointing": args.gradient_checkpointing,
        },
        "optim": {"lr": args.lr, "schedule": "cosine", "warmup_steps": 0, "max_grad_norm": 1.0},
        "adapter": {"type": "lora"},
        "lora": {"r": 16, "alpha": 32, "dropout": 0.05, "target_modules": "all-linear"},
        "dpo": {
            "loss": "sigmoid",
            "beta": args.beta,
            "precompute_ref": precompute,
            "layout": layout,
        },
    }


def _steps(path: Path) -> list[dict[str, Any]]:
    rows = [json.loads(x) for x in path.read_text().splitlines() if x.strip()]
    return [r for r in rows if r.get("split") == "train"]


def _check(child: Child, log: Path) -> None:
    if child.rc != 0:
        tail = log.read_text()[-3000:]
        raise SystemExit(f"child failed (rc {child.rc}); log {log}:\n{tail}")


def run_variant(args: argparse.Namespace, variant: str, repeat: int, work: Path) -> dict:
    tool, mode = variant.split("-")
    name = f"{variant}-r{repeat}"
    log = work / f"{name}.log"
    env = child_env(args.threads)
    if tool.startswith("tunesmith"):
        cfg_path = work / f"{name}.yaml"
        layout = "padded" if tool == "tunesmith_padded" else "auto"
        cfg = tunesmith_config(args, name, mode == "precompute", layout, work)
        cfg_path.write_text(yaml.safe_dump(cfg, sort_keys=False))
        metrics = work / "runs" / name / "metrics.jsonl"
        cmd = [sys.executable, "-m", "tunesmith.cli", "train", str(cfg_path)]
        child = run_child(cmd, log, env, watch=metrics)
        _check(child, log)
        steps = _steps(metrics)
        for row, cpu in zip(steps, child.step_cpu_seconds, strict=False):
            row["step_cpu_seconds"] = cpu
    else:
        from tunesmith.models.load import resolve_model

        out = work / name
        spec = {
            "model_dir": str(resolve_model(MODEL)),
            "data": str(data_file(args, work)),
            "out_dir": str(out),
            "steps": args.steps,
            "micro_batch_size": args.batch,
            "grad_accum": 1,
            "lr": args.lr,
            "beta": args.beta,
            "max_length": args.max_length,
            "precision": args.precision,
            "precompute_ref": mode == "precompute",
            "seed": args.seed,
            "gradient_checkpointing": args.gradient_checkpointing,
        }
        spec_path = work / f"{name}.json"
        spec_path.write_text(json.dumps(spec))
        cmd = [sys.executable, str(HERE / "_trl_dpo_worker.py"), str(spec_path)]
        child = run_child(cmd, log, env)
        _check(child, log)
        steps = _steps(out / "metrics.jsonl")
    return {"variant": variant, "repeat": repeat, "child": child, "steps": steps}


def summarise(run: dict) -> dict[str, Any]:
    timed = run["steps"][1:] or run["steps"]  # step 1 is warm-up
    median = statistics.median(r["step_seconds"] for r in timed)
    cpu = [r["step_cpu_seconds"] for r in timed if r.get("step_cpu_seconds") is not None]
    child: Child = run["child"]
    return {
        "variant": run["variant"],
        "repeat": run["repeat"],
        "steps": len(run["steps"]),
        "median_step_seconds": median,
        "steps_per_second": 1.0 / median,
        "median_step_cpu_seconds": statistics.median(cpu) if cpu else None,
        "wall_seconds": child.wall_seconds,
        "peak_rss_gib": child.peak_rss_bytes / 2**30,
        "first_loss": run["steps"][0].get("loss"),
        "input_positions_per_step": statistics.mean(
            r.get("input_positions", 0) for r in run["steps"]
        )
        or None,
        "load_before": child.load_before,
        "load_after": child.load_after,
    }


def aggregate(rows: list[dict[str, Any]]) -> dict[str, dict[str, Any]]:
    out: dict[str, dict[str, Any]] = {}
    for variant in dict.fromkeys(r["variant"] for r in rows):
        mine = [r for r in rows if r["variant"] == variant]
        median = statistics.median(r["median_step_seconds"] for r in mine)
        out[variant] = {
            "runs": len(mine),
            "median_step_seconds": median,
            "steps_per_second": 1.0 / median,
            "peak_rss_gib": max(r["peak_rss_gib"] for r in mine),
            "wall_seconds": statistics.median(r["wall_seconds"] for r in mine),
        }
    return out


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    variants = [v.strip() for v in args.variants.split(",") if v.strip()]
    unknown = sorted(set(variants) - set(VARIANTS))
    if unknown:
        raise SystemExit(f"unknown variants {unknown}; choose from {VARIANTS}")
    rows = []
    with tempfile.TemporaryDirectory(prefix="dpo-bench-") as tmp:
        work = Path(tmp)
        for repeat in range(args.repeats):
            order = variants if repeat % 2 == 0 else variants[::-1]  # alternate the order
            for variant in order:
                rows.append(summarise(run_variant(args, variant, repeat, work)))
                print(json.dumps(rows[-1]), flush=True)
    result = {
        "job": {
            "model": MODEL,
            "data": str(DATA.relative_to(REPO)),
            "pairs": args.pairs or None,
            "pairs_per_step": args.batch,
            "steps": args.steps,
            "max_length": args.max_length,
            "lora": "r=16 alpha=32 dropout=0.05 all-linear",
            "loss": f"sigmoid beta={args.beta}",
            "precision": args.precision,
            "threads": args.threads,
            "gradient_checkpointing": args.gradient_checkpointing,
            "command": "python benchmarks/compare_trl_dpo.py " + " ".join(sys.argv[1:]),
        },
        "machine": {**machine_info(), "load_at_end": load_average()},
        "runs": rows,
        "summary": aggregate(rows),
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=2))
    print(json.dumps(result["summary"], indent=2))
    print(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
