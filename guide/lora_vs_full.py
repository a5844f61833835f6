"""LoRA vs full fine-tuning vs the top 4 layers on the demo task (JSON profile extraction).

Recipes: configs/smollm2-135m-instruct/sft_lora_demo.yaml, sft_full.yaml, sft_top_layers.yaml,
each at the same short schedule (:data:`SHARED`). Per arm: held-out exact-JSON score, trainable
parameters, peak RSS (its own process), median step time; plot: training loss per step.

    python guide/lora_vs_full.py [--tiny]
"""

from __future__ import annotations

from collections.abc import Sequence

import _common as c

SLUG, TITLE = "lora-vs-full", "LoRA vs full fine-tuning vs top-N layers"
ARMS = {
    "LoRA r=16 (all linear)": "sft_lora_demo.yaml",
    "full fine-tuning": "sft_full.yaml",
    "top 4 layers": "sft_top_layers.yaml",
}


def shared(g: c.Guide) -> list[str]:
    """The same schedule and data for every arm; each recipe keeps its own learning rate."""
    return [
        f"train.max_steps={g.pick(30, 2)}", "train.micro_batch_size=8", "train.grad_accum=1",
        "train.eval_every=0.5", "data.max_length=128", "data.val_fraction=0.1",
        f"data.max_val_examples={g.pick(24, 4)}", "optim.warmup_steps=3",
        "train.early_stopping_patience=null",
    ]  # fmt: skip


def main(argv: Sequence[str] | None = None) -> int:
    g = c.start(SLUG, TITLE, argv)
    n, new = g.pick(20, 3), g.pick(48, 8)
    rows, series = [], []
    for i, (name, recipe) in enumerate(ARMS.items()):
        over = [*g.base_overrides(f"arm{i}"), *shared(g)]
        if "top" in recipe and g.tiny:
            over.append("train.trainable_top_layers=1")  # the tiny model has 2 layers
        row = c.arm(g, c.train_and_score, g.recipe(recipe), over, n, new)
        rows.append({"arm": name, "recipe": f"configs/smollm2-135m-instruct/{recipe}", **row})
        series.append((name, row.pop("loss_curve")))
    c.finish(
        g,
        [("arm", "arm"), ("demo_score", f"held-out exact JSON ({n} ex.)"),
         ("trainable_params", "trainable params"), ("peak_rss_mib", "peak RSS (MiB)"),
         ("median_step_seconds", "step (s)"), ("val_loss", "val loss")],
        rows, series, x_label="step", chart_title="training loss",
        extra={"held_out_examples": n, "steps": g.pick(30, 2)},
    )  # fmt: skip
    return 0


if __name__ == "__main__":
    c.main_guard(main)
