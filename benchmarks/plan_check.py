"""Check `tunesmith plan`'s throughput estimate against measured and published figures.

Two kinds of reference, each compared with the estimate at the default MFU (0.40) and turned
into the MFU the figure implies under the estimate's FLOP count:

- the SmolLM2-135M CPU measurement in ``benchmarks/results/compare_trl_sft.json`` (tunesmith
  packed LoRA, real tokens/s), with the matmul peak measured in that same run as the device's
  peak (the CPU is an accelerator whose peak is measured, not looked up);
- published GPU figures from peers' documentation (URLs in ``PUBLISHED``).

Pure arithmetic over those files; runs in a second and writes
``benchmarks/results/plan_throughput.json``::

    python benchmarks/plan_check.py
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any

from tunesmith.plan.memory import TrainSetup
from tunesmith.plan.shapes import NAMED_SHAPES, ModelShape
from tunesmith.plan.throughput import (
    ACCELERATORS,
    DEFAULT_MFU,
    Accelerator,
    estimate_throughput,
    implied_mfu,
)

HERE = Path(__file__).resolve().parent
DEFAULT_OUT = HERE / "results" / "plan_throughput.json"
SMOLLM2 = ModelShape("SmolLM2-135M", 30, 576, 1536, 9, 3, 49152, True)
TORCHTUNE = "https://github.com/pytorch/torchtune/blob/0031bfb080bd35ec533c412df883cf2bf7bf7fe4/README.md#memory-and-training-speed"
LLAMA1 = "https://arxiv.org/abs/2302.13971"

# (label, model, method, accelerator, devices, tokens/s, seq len, micro batch, checkpointing, url)
PUBLISHED: list[tuple[str, str, str, str, int, float, int, int, bool, str]] = [
    ("torchtune Llama-3.1-8B LoRA, 1x RTX 4090", "8B", "lora", "rtx4090", 1, 3083, 2048, 2,
     False, TORCHTUNE),
    ("torchtune Llama-3.1-8B full, 1x RTX 4090", "8B", "full", "rtx4090", 1, 1650, 2048, 2,
     False, TORCHTUNE),
    ("torchtune Llama-3.1-70B LoRA, 8x A100 (total; Llama-2-70B's shape)", "70B", "lora",
     "a100-80gb", 8, 3497, 2048, 2, False, TORCHTUNE),
    ("torchtune Llama-3.1-8B LoRA, 1x RTX A6000", "8B", "lora", "a6000", 1, 4699, 2048, 2,
     False, TORCHTUNE),
    ("LLaMA-65B pre-training, per A100-80GB (Touvron et al. 2023, sec. 2.4)", "65B", "full",
     "a100-80gb", 1, 380, 2048, 1, False, LLAMA1),
]  # fmt: skip


def _row(
    label: str, shape: ModelShape, setup: TrainSetup, acc: Accelerator, devices: int, real: float
) -> dict[str, Any]:
    est = estimate_throughput(shape, setup, acc, devices, DEFAULT_MFU)
    return {
        "label": label,
        "model": shape.name,
        "method": setup.method,
        "accelerator": acc.name,
        "devices": devices,
        "seq_len": setup.seq_len,
        "micro_batch": setup.micro_batch,
        "checkpointing": setup.checkpointing,
        "reference_tokens_per_s": real,
        "estimate_tokens_per_s": est.tokens_per_s,
        "estimate_over_reference": est.tokens_per_s / real,
        "implied_mfu": implied_mfu(shape, setup, acc, real, devices),
        "gflop_per_token": est.flops_per_token / 1e9,
        "bound": est.bound,
    }


def cpu_rows(sft: dict[str, Any]) -> list[dict[str, Any]]:
    """SmolLM2 LoRA on the benchmark's CPU, its measured matmul peak as the device peak."""
    settings, rows = sft["settings"], []
    for precision in ("fp32", "bf16"):
        r = sft["results"].get(f"tunesmith-packed-{precision}")
        if r is None:
            continue
        peak = sft["matmul_peak_flops"][precision] / 1e12
        # bandwidth not measured: taken as unlimited, so the estimate is the compute roofline
        cpu = Accelerator(f"CPU ({settings['threads_per_run']} thread(s))", peak, peak, 1e9)
        setup = TrainSetup(
            method="lora",
            seq_len=settings["max_length"],
            micro_batch=settings["packed_micro_batch_rows"],
            precision=precision,  # type: ignore[arg-type]
            lora_rank=settings["lora"]["r"],
            device_type="cpu",
        )
        label = f"SmolLM2-135M LoRA packed {precision}, measured (compare_trl_sft.json)"
        rows.append(_row(label, SMOLLM2, setup, cpu, 1, r["real_tokens_per_s"]))
    return rows


def published_rows() -> list[dict[str, Any]]:
    rows = []
    for label, model, method, gpu, n, tps, seq, mb, ckpt, url in PUBLISHED:
        setup = TrainSetup(method=method, seq_len=seq, micro_batch=mb, checkpointing=ckpt)  # type: ignore[arg-type]
        row = _row(label, NAMED_SHAPES[model], setup, ACCELERATORS[gpu], n, tps)
        rows.append(row | {"source": url})
    return rows


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--sft", type=Path, default=HERE / "results" / "compare_trl_sft.json")
    p.add_argument("--out", type=Path, default=DEFAULT_OUT)
    args = p.parse_args(argv)
    sft = json.loads(args.sft.read_text())
    rows = cpu_rows(sft) + published_rows()
    report = {
        "command": "python benchmarks/plan_check.py",
        "mfu_assumed": DEFAULT_MFU,
        "cpu_measurement_command": sft.get("command"),
        "rows": rows,
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(report, indent=2) + "\n")
    for r in rows:
        print(
            f"[plan] {r['label']}: reference {r['reference_tokens_per_s']:,.0f} tok/s, "
            f"estimate {r['estimate_tokens_per_s']:,.0f} (x{r['estimate_over_reference']:.2f}), "
            f"implied MFU {r['implied_mfu']:.2f}"
        )
    print(f"[plan] wrote {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
