"""QLoRA (NF4 base) against LoRA (bf16/fp32 base) on the demo task: memory and quality.

Recipes: configs/smollm2-135m-instruct/sft_lora_demo.yaml and sft_qlora.yaml (r=16, all linear
layers both) at the short schedule of ``lora_vs_full.py``. Per arm: base weight memory, peak RSS,
step time, held-out exact-JSON score, validation loss. QLoRA needs bitsandbytes
(``pip install 'tunesmith[quant]'``).

    python guide/qlora_vs_lora.py [--tiny]
"""

from __future__ import annotations

from collections.abc import Sequence

import _common as c
from lora_vs_full import shared

SLUG, TITLE = "qlora-vs-lora", "QLoRA against LoRA: memory and quality"
ARMS = {"LoRA r=16": "sft_lora_demo.yaml", "QLoRA r=16 (NF4 base)": "sft_qlora.yaml"}


def main(argv: Sequence[str] | None = None) -> int:
    g = c.start(SLUG, TITLE, argv)
    n, new = g.pick(20, 3), g.pick(48, 8)
    rows, series = [], []
    for i, (name, recipe) in enumerate(ARMS.items()):
        over = [*g.base_overrides(f"arm{i}"), *shared(g), "optim.lr=5e-4"]
        row = c.arm(g, c.train_and_score, g.recipe(recipe), over, n, new)
        rows.append({"arm": name, "recipe": f"configs/smollm2-135m-instruct/{recipe}", **row})
        series.append((name, row.pop("loss_curve")))
    c.finish(
        g,
        [("arm", "arm"), ("base_weight_mib", "base weights (MiB)"),
         ("peak_rss_mib", "peak RSS (MiB)"), ("median_step_seconds", "step (s)"),
         ("demo_score", f"held-out exact JSON ({n} ex.)"), ("val_loss", "val loss")],
        rows, series, x_label="step", chart_title="training loss",
        extra={"held_out_examples": n},
    )  # fmt: skip
    return 0


if __name__ == "__main__":
    c.main_guard(main)
