#!/usr/bin/env python3
"""Wall time of head-only classification, live backbone vs cached frozen features (issue 21).

The job is issue 21's: ``configs/all-minilm-l6-v2/classify_head.yaml`` (MiniLM, ``mode: head``)
on the SpamAssassin e-mails (``python scripts/make_spam_corpus.py`` writes ``data/spam/``) with
``data.max_length=256`` for 3 epochs, micro-batch 16. It runs twice on the same data, with
``classify.cache_features: none`` (the backbone runs every step) and ``memory`` (it runs once),
and writes the wall time of each run, the seconds per step and the held-out accuracy / macro-F1
to ``benchmarks/results/classify_cached.json``.

    python benchmarks/classify_cached.py                 # the real job (CPU: ~30 min uncached)
    python benchmarks/classify_cached.py --only cached   # one run; a later --only live with the
                                                         # same settings joins the same file
    python benchmarks/classify_cached.py --limit 200 --epochs 1 --max-length 64   # a quick check

Each run records ``os.getloadavg()`` at its start and end and the CPU seconds of the process: on
a shared machine the wall times are only as good as the load they ran under. ``seconds_per_step``
is the wall time over the steps (the one-time encoding included); ``train_step_seconds_mean`` is
the optimizer steps alone (``step_seconds`` in ``metrics.jsonl``).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import resource
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
CACHE = {"cached": "memory", "live": "none"}  # --only name -> classify.cache_features
SETTINGS = ("limit", "max_length", "epochs", "device", "threads")
NOT_MEASURED = "not measured this session"


def _subset(src: Path, dst: Path, limit: int | None) -> Path:
    lines = [x for x in src.read_text(encoding="utf-8").splitlines() if x.strip()]
    dst.write_text("\n".join(lines[:limit]) + "\n", encoding="utf-8")
    return dst


def _cpu_seconds() -> float:
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


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
    load_start = os.getloadavg()
    cpu0 = _cpu_seconds()
    t0 = time.perf_counter()
    result = run(cfg)
    wall = time.perf_counter() - t0
    cpu = _cpu_seconds() - cpu0
    rows = [json.loads(x) for x in (result.run_dir / "metrics.jsonl").read_text().splitlines()]
    steps = [r["step_seconds"] for r in rows if r.get("split") == "train" and "step_seconds" in r]
    return {
        "cache_features": cache,
        "loadavg_start": [round(x, 2) for x in load_start],
        "loadavg_end": [round(x, 2) for x in os.getloadavg()],
        "wall_seconds": round(wall, 2),
        "steps": result.steps,
        "seconds_per_step": round(wall / max(1, result.steps), 4),  # encoding included
        "train_step_seconds_mean": round(sum(steps) / max(1, len(steps)), 4),  # steps alone
        "cpu_seconds": round(cpu, 1),  # this process, every thread: steadier than wall time
        "train_examples": sum(1 for _ in train.open()),
        "held_out_accuracy": result.eval.get("accuracy"),
        "held_out_macro_f1": result.eval.get("macro_f1"),
        "majority_accuracy": result.eval.get("majority_accuracy"),
    }


def _previous(out: Path, settings: dict[str, Any]) -> dict[str, dict[str, Any]]:
    """The runs of an earlier results file made with the same settings, by cache mode."""
    if not out.is_file():
        return {}
    old = json.loads(out.read_text())
    if old.get("settings") != settings:
        return {}
    return {r["cache_features"]: r for r in old.get("runs", []) if "wall_seconds" in r}


def _speedup(runs: list[dict[str, Any]]) -> float | str:
    walls = {r["cache_features"]: r.get("wall_seconds") for r in runs}
    if walls.get("memory") is None or walls.get("none") is None:
        return NOT_MEASURED
    return round(walls["none"] / max(walls["memory"], 1e-9), 1)


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--train", type=Path, default=ROOT / "data" / "spam" / "train.jsonl")
    p.add_argument("--test", type=Path, default=ROOT / "data" / "spam" / "test.jsonl")
    p.add_argument("--limit", type=int, help="first N train rows (N/4 held-out): a quick check")
    p.add_argument("--max-length", type=int, default=256)
    p.add_argument("--epochs", type=float, default=3.0)
    p.add_argument("--device", default="auto")
    p.add_argument("--threads", type=int, help="torch threads (default: torch's)")
    p.add_argument("--only", choices=sorted(CACHE), help="one run; keeps the other's result")
    p.add_argument("--out", type=Path, default=OUT)
    args = p.parse_args(argv)
    if not args.train.is_file():
        raise SystemExit(f"{args.train} missing: run python scripts/make_spam_corpus.py first")
    if args.threads:
        torch.set_num_threads(args.threads)
    settings = {k: getattr(args, k) for k in SETTINGS}
    done = _previous(args.out, settings) if args.only else {}
    with tempfile.TemporaryDirectory() as tmp:
        for name in [args.only] if args.only else ["cached", "live"]:
            work = Path(tmp) / name
            work.mkdir()
            done[CACHE[name]] = one_run(args, CACHE[name], work)
            print(json.dumps(done[CACHE[name]]), flush=True)
    runs = [
        done.get(c, {"cache_features": c, "wall_seconds": None, "note": NOT_MEASURED})
        for c in ("memory", "none")
    ]
    command = "python benchmarks/classify_cached.py" + "".join(
        f" --{k.replace('_', '-')} {v}" for k, v in settings.items() if v is not None
    )
    result = {
        "command": command,
        "settings": settings,
        "machine": {
            "cpu": platform.processor() or platform.machine(),
            "cores": os.cpu_count(),
            "torch_threads": torch.get_num_threads(),
            "cuda": torch.cuda.get_device_name(0) if torch.cuda.is_available() else None,
        },
        "runs": runs,
        "speedup": _speedup(runs),
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=2) + "\n")
    print(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
