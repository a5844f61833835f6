"""GRPO on the arithmetic task (data/grpo): held-out accuracy and format reward as training
goes, and the fraction of groups whose rewards had zero variance (no learning signal).

Recipe: configs/smollm2-135m-instruct/grpo_lora.yaml (correctness reward 1.0 + format reward
0.5) with a shorter run (:func:`overrides`). Curves come from the run's metrics.jsonl: ``eval``
rows (greedy, held-out accuracy and mean format reward) and ``train`` rows (sampled rewards,
zero-variance group fraction).

    python guide/grpo_arithmetic.py [--tiny]
"""

from __future__ import annotations

import json
import statistics
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import _common as c

SLUG, TITLE = "grpo-arithmetic", "GRPO on arithmetic: accuracy, format reward, zero-variance groups"


def overrides(g: c.Guide) -> list[str]:
    return [
        f"train.max_steps={g.pick(12, 2)}", f"train.eval_every={g.pick(3, 1)}",
        f"data.max_val_examples={g.pick(40, 2)}", f"grpo.prompts_per_step={g.pick(8, 2)}",
        f"grpo.num_generations={g.pick(8, 2)}", f"grpo.max_new_tokens={g.pick(32, 4)}",
    ]  # fmt: skip


def grpo_arm(config: str, over: list[str]) -> dict[str, Any]:
    """Train; the eval and train rows of the run's metrics.jsonl."""
    row = c.train(config, over)
    log = [json.loads(x) for x in (Path(row["run_dir"]) / "metrics.jsonl").read_text().split("\n")
           if x.strip()]  # fmt: skip
    row["evals"] = [
        {"step": r["step"], "accuracy": r["accuracy"],
         "format_reward": r.get("reward/format_mean"), "reply_tokens": r.get("completion_length")}
        for r in log if r.get("split") == "eval"
    ]  # fmt: skip
    row["train_rows"] = [
        {"step": r["step"], "reward_mean": r.get("reward_mean"),
         "format_reward": r.get("reward/format_mean"), "math_reward": r.get("reward/math_mean"),
         "zero_variance_groups": r.get("zero_variance_groups")}
        for r in log if r.get("split") == "train" and "zero_variance_groups" in r
    ]  # fmt: skip
    return row


def main(argv: Sequence[str] | None = None) -> int:
    g = c.start(SLUG, TITLE, argv)
    run = c.arm(g, grpo_arm, g.recipe("grpo_lora.yaml"), [*g.base_overrides("grpo"),
                                                           *overrides(g)])  # fmt: skip
    train = run["train_rows"]
    zv = [r["zero_variance_groups"] for r in train]
    rows = [
        {**e, "zero_variance_groups": next(
            (t["zero_variance_groups"] for t in train if t["step"] == e["step"]), None)}
        for e in run["evals"]
    ]  # fmt: skip
    series = [
        ("held-out accuracy (greedy)", [(e["step"], e["accuracy"]) for e in run["evals"]]),
        ("held-out format reward", [(e["step"], e["format_reward"]) for e in run["evals"]
                                    if e["format_reward"] is not None]),
        ("sampled format reward", [(t["step"], t["format_reward"]) for t in train
                                   if t["format_reward"] is not None]),
        ("zero-variance groups", [(t["step"], t["zero_variance_groups"]) for t in train]),
    ]  # fmt: skip
    c.finish(
        g,
        [("step", "step"), ("accuracy", "held-out accuracy"),
         ("format_reward", "held-out format reward"), ("reply_tokens", "reply tokens"),
         ("zero_variance_groups", "zero-variance groups (that step)")],
        rows, series, x_label="step", chart_title="GRPO on arithmetic",
        extra={"zero_variance_mean": statistics.fmean(zv) if zv else None, "train_rows": train,
               "wall_seconds_train": run["wall_seconds"], "peak_rss_mib": run["peak_rss_mib"]},
        notes=[f"Zero-variance groups over all {len(zv)} steps: "
               f"{statistics.fmean(zv):.0%} on average." if zv else "No training rows."],
    )  # fmt: skip
    return 0


if __name__ == "__main__":
    c.main_guard(main)
