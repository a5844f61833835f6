"""Learning rate against forgetting: the held-out target loss and the forgetting probe (Austen
perplexity, 32 general questions) at three learning rates, without and with replay.

Recipes: configs/smollm2-135m-instruct/forgetting_full.yaml (no mitigation) and
forgetting_full_replay.yaml (20% general text replayed), full fine-tuning, with ``optim.lr``
set to each of :data:`LRS` and a shorter schedule (:func:`overrides`). The numbers come from
each run's ``forgetting.json`` (see docs/forgetting.md).

    python guide/lr_forgetting.py [--tiny]
"""

from __future__ import annotations

import json
import math
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import _common as c

SLUG, TITLE = "lr-forgetting", "Learning rate against forgetting, with and without replay"
LRS = (1e-5, 1e-4, 1e-3)
MITIGATIONS = {"none": "forgetting_full.yaml", "replay": "forgetting_full_replay.yaml"}


def overrides(g: c.Guide) -> list[str]:
    return [
        f"train.max_steps={g.pick(16, 2)}", "train.eval_every=null", "forgetting.every=null",
        f"forgetting.max_chunks={g.pick(8, 2)}", f"data.max_val_examples={g.pick(24, 4)}",
        "train.early_stopping_patience=null",
    ]  # fmt: skip


def forgetting_arm(config: str, over: list[str]) -> dict[str, Any]:
    """Train, then read the run's forgetting report."""
    row = c.train(config, over)
    report = json.loads((Path(row["run_dir"]) / "forgetting.json").read_text())
    row.pop("loss_curve")
    return {
        **row,
        "target_val_before": report.get("target_val"),
        "target_val_after": report.get("target_val_after"),
        "probe_ppl_before": report["before"].get("text_ppl"),
        "probe_ppl_after": report["after"].get("text_ppl"),
        "probe_ppl_pct": report["delta"].get("probe_ppl_pct"),
        "probe_acc_points": report["delta"].get("probe_acc_points"),
    }


def main(argv: Sequence[str] | None = None) -> int:
    g = c.start(SLUG, TITLE, argv)
    rows = []
    for mitigation, recipe in MITIGATIONS.items():
        for lr in g.pick(LRS, LRS[1:2]):
            over = [*g.base_overrides(f"{mitigation}-lr{lr:g}"), *overrides(g), f"optim.lr={lr}"]
            row = c.arm(g, forgetting_arm, g.recipe(recipe), over)
            rows.append({"lr": lr, "mitigation": mitigation, **row})
    series = [
        (f"{m}: probe perplexity change (%)",
         [(math.log10(r["lr"]), r["probe_ppl_pct"]) for r in rows
          if r["mitigation"] == m and r["probe_ppl_pct"] is not None])
        for m in MITIGATIONS
    ]  # fmt: skip
    c.finish(
        g,
        [("lr", "learning rate"), ("mitigation", "mitigation"),
         ("target_val_after", "target val loss"), ("probe_ppl_pct", "probe ppl change (%)"),
         ("probe_acc_points", "probe QA change (points)"), ("wall_seconds", "wall (s)")],
        rows, series, x_label="log10(learning rate)",
        chart_title="general-text perplexity change after training",
        notes=["EWC (configs/smollm2-135m-instruct/forgetting_full_ewc.yaml) is the other "
               "mitigation shipped; it is left out here to keep the run short."],
    )  # fmt: skip
    return 0


if __name__ == "__main__":
    c.main_guard(main)
