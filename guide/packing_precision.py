"""Packing and mixed precision: tokens/s and memory, read from the levers benchmark.

This page runs no training of its own: it reads ``benchmarks/results/levers.json`` (written by
the command stored in that file, ``python benchmarks/levers.py --steps 5 --threads 2``: SFT
steps of SmolLM2 on the demo data, each lever in its own process) and tabulates packed against
unpacked rows, bf16 against fp32, and gradient checkpointing.

    python guide/packing_precision.py [--tiny]   # --tiny: same table, written to a temp folder
"""

from __future__ import annotations

import json
from collections.abc import Sequence

import _common as c

SLUG, TITLE = "packing-precision", "Packing and mixed precision: tokens/s and memory"
SOURCE = c.ROOT / "benchmarks" / "results" / "levers.json"
LEVERS = {
    "baseline": "packed, bf16",
    "unpacked": "unpacked (padded), bf16",
    "fp32": "packed, fp32",
    "grad-ckpt": "packed, bf16, gradient checkpointing",
}


def main(argv: Sequence[str] | None = None) -> int:
    g = c.start(SLUG, TITLE, argv, trains=False)
    bench = json.loads(SOURCE.read_text())
    base = bench["results"]["baseline"]
    rows, series = [], []
    for key, name in LEVERS.items():
        r = bench["results"].get(key)
        if r is None:
            continue
        rows.append({
            "setting": name, "lever": key, "layout": r["layout"], "precision": r["precision"],
            "tokens_per_s": r["assistant_tokens_per_s"],
            "speedup": r["assistant_tokens_per_s"] / base["assistant_tokens_per_s"],
            "median_step_seconds": r["median_step_seconds"],
            "peak_rss_mib": round(r["peak_rss_bytes"] / 2**20),
        })  # fmt: skip
        series.append((name, [(r["peak_rss_bytes"] / 2**30, r["assistant_tokens_per_s"])]))
    c.finish(
        g,
        [("setting", "setting"), ("tokens_per_s", "trained tokens/s"),
         ("speedup", "vs packed bf16"), ("median_step_seconds", "step (s)"),
         ("peak_rss_mib", "peak RSS (MiB)")],
        rows, series, x_label="peak RSS (GiB)", chart_title="trained tokens/s against memory",
        notes=[f"Source: `benchmarks/results/levers.json`, written by `{bench['command']}` on "
               f"{bench['machine']['date_utc'][:10]} ({bench['steps']} steps per lever)."],
        extra={"source": "benchmarks/results/levers.json", "source_command": bench["command"]},
    )  # fmt: skip
    return 0


if __name__ == "__main__":
    c.main_guard(main)
