"""LoRA rank 2 / 8 / 32 / 128 on the demo task (JSON profile extraction).

Recipe: configs/smollm2-135m-instruct/sft_lora_demo.yaml with ``lora.r=R lora.alpha=2R`` (the
scale alpha/r stays 2) and the short schedule of ``lora_vs_full.py``. Per rank: held-out
exact-JSON score, trainable parameters, peak RSS, step time, validation loss.

    python guide/lora_rank.py [--tiny]
"""

from __future__ import annotations

from collections.abc import Sequence

import _common as c
from lora_vs_full import shared

SLUG, TITLE = "lora-rank", "LoRA rank 2 / 8 / 32 / 128"
RANKS = (2, 8, 32, 128)


def main(argv: Sequence[str] | None = None) -> int:
    g = c.start(SLUG, TITLE, argv)
    n, new = g.pick(20, 3), g.pick(48, 8)
    rows, series = [], []
    for r in g.pick(RANKS, (2, 8)):  # the tiny model's layers allow r <= 32
        over = [*g.base_overrides(f"rank{r}"), *shared(g), f"lora.r={r}", f"lora.alpha={2 * r}"]
        row = c.arm(g, c.train_and_score, g.recipe("sft_lora_demo.yaml"), over, n, new)
        rows.append({"rank": r, **row})
        series.append((f"r={r}", row.pop("loss_curve")))
    c.finish(
        g,
        [("rank", "rank"), ("demo_score", f"held-out exact JSON ({n} ex.)"),
         ("trainable_params", "trainable params"), ("peak_rss_mib", "peak RSS (MiB)"),
         ("median_step_seconds", "step (s)"), ("val_loss", "val loss")],
        rows, series, x_label="step", chart_title="training loss by LoRA rank",
        extra={"held_out_examples": n,
               "recipe": "configs/smollm2-135m-instruct/sft_lora_demo.yaml"},
    )  # fmt: skip
    return 0


if __name__ == "__main__":
    c.main_guard(main)
