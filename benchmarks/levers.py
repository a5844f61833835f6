"""Measure tunesmith's speed/memory levers one at a time on the compare_trl SFT job.

Every variant is the same job as ``compare_trl.py`` (SmolLM2-135M-Instruct, 512 synthetic
chats, max length 512, 8 examples per step, LoRA r=16 all-linear unless said otherwise), run
through the real CLI in its own process, and differs from the baseline in one setting only:

- ``baseline``: packed rows, bf16 autocast (what ``precision: auto`` picks here), the frozen
  base stored in bf16 (``model.dtype: auto`` under bf16 where bf16 is native), rows padded to
  bucket widths (``tunesmith.data.packing.bucket_width``);
- ``fp32-base``: ``model.dtype: float32``: the frozen base in fp32, so autocast re-casts every
  frozen weight to bf16 in every forward (the lever "frozen base stored in bf16", alone);
- ``dropout-0``: ``lora.dropout: 0`` (peft then applies ``nn.Identity``: no dropped copy of
  each adapted layer's input; the lever "no extra copy of x", alone);
- ``unpacked``: padded batches of exactly 8 examples (packing off);
- ``fp32``: no autocast;
- ``grad-ckpt``: ``train.gradient_checkpointing: true`` (memory for recomputation);
- ``threads-1`` vs the baseline's ``--threads`` (OpenMP/MKL threads of the process);
- ``compile-dynamic`` / ``compile-static``: ``train.compile: dynamic`` (torch.compile per decoder
  layer, one graph with symbolic shapes) and ``train.compile: static`` (``dynamic=False``: one
  graph per packed bucket shape), both against the eager baseline and against each other; the
  median excludes only step 1, so later compilations for new bucket shapes count against them
  (``recompiles`` counts them, from ``TORCH_LOGS=recompiles`` in the run's log). Compiled
  layers take the packed rows' dense block mask, the eager baseline per-segment attention
  (``tunesmith.engine.trainable``), so the ratio to the baseline includes that difference;
- ``full-fused`` / ``full-foreach``: full fine-tuning (every weight trains, so the optimizer
  step matters) with ``optim.implementation`` fused vs foreach; ``baseline/full-fused`` is the
  LoRA step against the full fine-tuning step on the same model and data (target <= 0.75).

Printed per variant: median step seconds (step 1 excluded), assistant tokens/s, peak RSS, and
the ratio to the baseline (or, for the optimizer pair, fused/foreach). Results go to
``benchmarks/results/levers.json``. Run on a quiet machine::

    python benchmarks/levers.py --steps 6 --threads 2
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import yaml

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))

from _child import run_child  # noqa: E402
from _machine import load_average, machine_info  # noqa: E402
from compare_trl import (  # noqa: E402
    GIB,
    Job,
    child_env,
    prepare_data,
    read_steps,
    summarise_run,
    tunesmith_config,
)

DEFAULT_OUT = HERE / "results" / "levers.json"

# name -> (layout, precision, threads override, config changes)
VARIANTS: dict[str, tuple[str, str, int | None, dict[str, dict[str, Any]]]] = {
    "baseline": ("packed", "bf16", None, {}),
    "unpacked": ("unpacked", "bf16", None, {}),
    "fp32-base": ("packed", "bf16", None, {"model": {"dtype": "float32"}}),
    "dropout-0": ("packed", "bf16", None, {"lora": {"dropout": 0.0}}),
    "fp32": ("packed", "fp32", None, {}),
    "grad-ckpt": ("packed", "bf16", None, {"train": {"gradient_checkpointing": True}}),
    "threads-1": ("packed", "bf16", 1, {}),
    "compile-dynamic": ("packed", "bf16", None, {"train": {"compile": "dynamic"}}),
    "compile-static": ("packed", "bf16", None, {"train": {"compile": "static"}}),
    "full-fused": (
        "packed",
        "bf16",
        None,
        {"adapter": {"type": "full"}, "optim": {"implementation": "fused", "lr": 1e-5}},
    ),
    "full-foreach": (
        "packed",
        "bf16",
        None,
        {"adapter": {"type": "full"}, "optim": {"implementation": "foreach", "lr": 1e-5}},
    ),
}


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--steps", type=int, default=6)
    p.add_argument("--threads", type=int, default=2, help="threads of every run but threads-1")
    p.add_argument("--variants", default=",".join(VARIANTS), help="comma list")
    p.add_argument("--out", type=Path, default=DEFAULT_OUT)
    p.add_argument("--workdir", type=Path, default=None)
    # the fields compare_trl's data and config helpers read
    p.add_argument("--examples", type=int, default=512)
    p.add_argument("--batch", type=int, default=8)
    p.add_argument("--packed-rows", type=int, default=0)
    p.add_argument("--max-length", type=int, default=512)
    p.add_argument("--lr", type=float, default=2e-4)
    p.add_argument("--seed", type=int, default=42)
    p.add_argument("--data-seed", type=int, default=1234)
    args = p.parse_args(argv)
    args.gradient_checkpointing = False
    return args


def _merge(cfg: dict[str, Any], changes: dict[str, dict[str, Any]]) -> dict[str, Any]:
    for section, values in changes.items():
        cfg.setdefault(section, {}).update(values)
    if cfg.get("adapter", {}).get("type") == "full":
        cfg.pop("lora", None)
    return cfg


def run_variant(args: argparse.Namespace, data: dict[str, Any], name: str, work: Path) -> dict:
    layout, precision, threads, changes = VARIANTS[name]
    job = Job("tunesmith", layout, precision, 0)
    cfg = _merge(tunesmith_config(args, data, job, work), changes)
    cfg["train"]["run_name"] = name
    path = work / f"{name}.yaml"
    path.write_text(yaml.safe_dump(cfg, sort_keys=False))
    run_dir = work / "runs" / name
    log = work / f"{name}.log"
    print(f"[levers] {name} ...", flush=True)
    cmd = [sys.executable, "-m", "tunesmith.cli", "train", str(path)]
    env = child_env(threads or args.threads)
    if name.startswith("compile"):
        env["TORCH_LOGS"] = "recompiles"  # each recompilation is logged: counted below
    child = run_child(cmd, log, env, watch=run_dir / "metrics.jsonl")
    if child.rc != 0:
        raise RuntimeError(f"{name} failed (exit {child.rc}); see {log}")
    steps = read_steps(run_dir / "metrics.jsonl")
    per_step = data["packed_examples_per_step"] if layout == "packed" else [args.batch] * len(steps)
    s = summarise_run(steps, per_step)
    result = {
        "config_changes": changes,
        "layout": layout,
        "precision": precision,
        "threads": threads or args.threads,
        "median_step_seconds": s["median_step_seconds"],
        "assistant_tokens_per_s": s["assistant_tokens_per_s"],
        "peak_rss_bytes": child.peak_rss_bytes,
        "step1_loss": s["losses"][0],
        "recompiles": _recompiles(log) if name.startswith("compile") else None,
        "load_before": child.load_before,
        "load_after": child.load_after,
    }
    print(
        f"[levers]   {s['median_step_seconds']:.2f} s/step, "
        f"{s['assistant_tokens_per_s']:.1f} assistant tok/s, "
        f"peak RSS {child.peak_rss_bytes / GIB:.2f} GiB",
        flush=True,
    )
    return result


def _recompiles(log: Path) -> int:
    """How many recompilations dynamo logged in a run's output (``TORCH_LOGS=recompiles``)."""
    text = log.read_text(errors="replace") if log.is_file() else ""
    return text.count("Recompiling function")


def ratios(results: dict[str, dict[str, Any]]) -> dict[str, dict[str, float]]:
    """Each variant against the baseline; the optimizer pair against each other."""
    out: dict[str, dict[str, float]] = {}

    def ratio(a: str, b: str) -> dict[str, float]:
        x, y = results[a], results[b]
        return {
            "step_time": x["median_step_seconds"] / y["median_step_seconds"],
            "tokens_per_s": x["assistant_tokens_per_s"] / y["assistant_tokens_per_s"],
            "peak_rss": x["peak_rss_bytes"] / y["peak_rss_bytes"],
        }

    for name in results:
        if name not in ("baseline", "full-fused", "full-foreach") and "baseline" in results:
            out[f"{name}/baseline"] = ratio(name, "baseline")
    if "full-fused" in results and "full-foreach" in results:
        out["full-fused/full-foreach"] = ratio("full-fused", "full-foreach")
    if "compile-static" in results and "compile-dynamic" in results:
        out["compile-static/compile-dynamic"] = ratio("compile-static", "compile-dynamic")
    if "full-fused" in results and "baseline" in results:
        out["baseline/full-fused"] = ratio("baseline", "full-fused")  # LoRA step vs full step
    return out


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    names = [n.strip() for n in args.variants.split(",") if n.strip()]
    unknown = [n for n in names if n not in VARIANTS]
    if unknown:
        raise SystemExit(f"unknown variants {unknown}; choose from {list(VARIANTS)}")
    work = args.workdir or Path(tempfile.mkdtemp(prefix="levers-"))
    work.mkdir(parents=True, exist_ok=True)
    started, load = time.perf_counter(), load_average()
    data = prepare_data(args, work)
    results = {name: run_variant(args, data, name, work) for name in names}
    report = {
        "command": "python benchmarks/levers.py "
        + " ".join(sys.argv[1:] if argv is None else argv),
        "machine": machine_info(),
        "load_average_start": load,
        "wall_seconds": time.perf_counter() - started,
        "steps": args.steps,
        "results": results,
        "ratios": ratios(results),
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(report, indent=2) + "\n")
    for key, r in report["ratios"].items():
        print(
            f"[levers] {key}: step time x{r['step_time']:.2f}, tokens/s x{r['tokens_per_s']:.2f}, "
            f"peak RSS x{r['peak_rss']:.2f}"
        )
    print(f"[levers] wrote {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
