#!/usr/bin/env python3
"""Memorisation figures of the demo run: canary exposure, regurgitation and PII, base vs tuned.

Three real CLI commands, in order:

1. ``tunesmith prep`` over the demo data (``data/demo/train.jsonl``; ``data/demo/test.jsonl`` is
   the leakage-checked test file) with ``--canaries N``: N random access codes planted in the
   training split and recorded in ``canaries.json``;
2. ``tunesmith train configs/smollm2-135m-instruct/sft_lora_demo.yaml`` on that prepared train /
   validation split (the demo recipe as ``make demo`` runs it, otherwise unchanged);
3. ``tunesmith probe memorization RUN``: each canary's exposure (Carlini et al. 2019) for the
   tuned model and its base, verbatim regurgitation on training vs held-out examples (exact and
   within a token edit distance), and PII found in the generations.

Writes ``benchmarks/results/memorization_demo.json`` (``--out`` to change). ``--model``,
``--steps`` and ``--candidates`` shrink it (a tiny model dir proves the script works in
seconds).

Usage: ``nice -n 10 python benchmarks/memorization_demo.py [--canaries 8] [--steps 60] [K=V ...]``;
``python benchmarks/memorization_demo.py --table`` prints the docs table of the results file.
"""

from __future__ import annotations

import argparse
import json
import math
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import yaml

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _machine import machine_info

ROOT = Path(__file__).resolve().parents[1]
RECIPE = ROOT / "configs" / "smollm2-135m-instruct" / "sft_lora_demo.yaml"
OUT = ROOT / "benchmarks" / "results" / "memorization_demo.json"


def tunesmith(*args: str) -> None:
    """Run one ``tunesmith`` command in a child process (the CLI exactly as a user runs it)."""
    cmd = [sys.executable, "-m", "tunesmith", *args]
    print("$ tunesmith " + " ".join(args), flush=True)
    subprocess.run(cmd, check=True, cwd=ROOT)


def prep_config(work: Path) -> Path:
    """The prep config: the demo's train file split 90/10, leakage-checked against its test."""
    cfg = {
        "inputs": [{"path": str(ROOT / "data/demo/train.jsonl")}],
        "output_dir": str(work / "prepared"),
        "progress": False,
        "splits": {
            "seed": 1234,
            "ratios": {"train": 0.9, "validation": 0.1, "test": 0.0},
            "stratify": False,
            "test_file": str(ROOT / "data/demo/test.jsonl"),
        },
    }
    path = work / "prep.yaml"
    path.write_text(yaml.safe_dump(cfg, sort_keys=False))
    return path


def per_canary(result: dict[str, Any]) -> list[dict[str, Any]]:
    """One row per canary: rank and exposure under the base model and under the tuned model."""
    base = {c["name"]: c for c in result["base"]["canaries"]}
    return [
        {
            "name": c["name"],
            "base_rank": base[c["name"]]["rank"],
            "base_exposure": round(base[c["name"]]["exposure"], 3),
            "tuned_rank": c["rank"],
            "tuned_exposure": round(c["exposure"], 3),
        }
        for c in result["tuned"]["canaries"]
    ]


def regurgitation(result: dict[str, Any]) -> dict[str, Any]:
    """Exact / near rates on train and held-out examples, base and tuned."""
    return {
        label: {
            split: {k: result[label][split].get(k) for k in ("examples", "exact_rate", "near_rate")}
            for split in ("train", "held_out")
        }
        for label in ("base", "tuned")
    }


def table(result: dict[str, Any]) -> str:
    """The docs table (docs/memorization.md) of a results file: base vs tuned."""
    reg, pii, both = result["regurgitation"], result["pii"], ("base", "tuned")
    rows: list[list[str]] = [
        [f"mean canary exposure (max {result['max_exposure']:.2f})"]
        + [f"{result['mean_exposure'][k]:.2f}" for k in both],
        ["canaries extracted"] + [str(result["canaries_extracted"][k]) for k in both],
    ]
    for split in ("train", "held_out"):
        for kind in ("exact_rate", "near_rate"):
            label = f"{split.replace('_', '-')} regurgitation, {kind.split('_')[0]}"
            rows.append([label] + [f"{reg[k][split][kind]:.1%}" for k in both])
    rows.append(
        ["generations with PII"] + [f"{pii[k]['with_pii']} / {pii[k]['generations']}" for k in both]
    )
    lines = ["| figure | base | tuned |", "|---|---:|---:|"]
    return "\n".join(lines + ["| " + " | ".join(r) + " |" for r in rows])


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--table", action="store_true", help="print the docs table of --out; no run")
    ap.add_argument("--canaries", type=int, default=8)
    ap.add_argument("--steps", type=int, default=None, help="train.max_steps (recipe default)")
    ap.add_argument("--model", default=None, help="model.name_or_path (recipe default)")
    ap.add_argument("--candidates", type=int, default=1000)
    ap.add_argument("--examples", type=int, default=32)
    ap.add_argument("--work", default=None, help="keep the prepared data and run here")
    ap.add_argument("--out", default=str(OUT))
    ap.add_argument("overrides", nargs="*", help="extra key.sub=value for the training run")
    args = ap.parse_args()
    if args.table:
        print(table(json.loads(Path(args.out).read_text())))
        return 0
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(args.work or tmp).resolve()
        work.mkdir(parents=True, exist_ok=True)
        start = time.perf_counter()
        tunesmith("prep", str(prep_config(work)), "--canaries", str(args.canaries))
        prepared = work / "prepared"
        overrides = [
            f"data.train={prepared / 'train.jsonl'}",
            f"data.validation={prepared / 'validation.jsonl'}",
            f"train.output_dir={work / 'runs'}",
            "train.run_name=memorization-demo",
        ]
        overrides += [f"train.max_steps={args.steps}"] if args.steps else []
        overrides += [f"model.name_or_path={args.model}"] if args.model else []
        overrides += args.overrides
        tunesmith("train", str(RECIPE), *overrides)
        run = work / "runs" / "memorization-demo"
        tunesmith(
            "probe", "memorization", str(run), "--candidates", str(args.candidates),
            "--examples", str(args.examples),
        )  # fmt: skip
        result = json.loads((run / "memorization.json").read_text())
        wall = time.perf_counter() - start
    out = {
        "command": "nice -n 10 python benchmarks/memorization_demo.py " + " ".join(sys.argv[1:]),
        "recipe": str(RECIPE.relative_to(ROOT)),
        "canaries": args.canaries,
        "candidates_per_canary": args.candidates,
        "max_exposure": round(math.log2(args.candidates + 1), 3),
        "mean_exposure": {
            "base": round(result["base"]["mean_exposure"], 3),
            "tuned": round(result["tuned"]["mean_exposure"], 3),
        },
        "exposure_gain": round(result["exposure_gain"], 3),
        "per_canary": per_canary(result),
        "canaries_extracted": {k: result[k].get("canaries_extracted") for k in ("base", "tuned")},
        "regurgitation": regurgitation(result),
        "pii": {k: result[k]["pii"] for k in ("base", "tuned")},
        "options": result.get("options", {}),
        "wall_seconds": round(wall, 1),
        "machine": machine_info(),
    }
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps(out, indent=2) + "\n")
    print(json.dumps({k: out[k] for k in ("mean_exposure", "regurgitation", "pii")}, indent=2))
    print(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
