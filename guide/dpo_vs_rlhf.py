"""DPO against a reward model + PPO on the same preference data (data/preference): wall time,
peak memory, held-out preference accuracy, and reply length (reward hacking shows up as longer
replies the reward model likes).

Recipes: configs/smollm2-135m-instruct/dpo_lora.yaml; reward_lora.yaml then ppo_lora.yaml
(``ppo.reward_model`` set to the reward run), all LoRA r=16, with shorter schedules
(:func:`plan`). Held-out preference accuracy: guide/preference_heldout.yaml (the 50 pairs of
data/preference/test.jsonl, each reply scored by the policy's own log-likelihood); reply length:
mean words of greedy replies to the held-out prompts.

    python guide/dpo_vs_rlhf.py [--tiny]
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from typing import Any

import _common as c

SLUG, TITLE = "dpo-vs-rlhf", "DPO against reward model + PPO"
SUITE = "guide/preference_heldout.yaml"
TEST = c.ROOT / "data" / "preference" / "test.jsonl"


def plan(g: c.Guide) -> dict[str, list[str]]:
    """Per stage: its recipe's overrides (shorter runs than the shipped recipes)."""
    steps = g.pick(24, 2)
    common = [f"train.max_steps={steps}", "train.eval_every=null",
              "train.early_stopping_patience=null"]  # fmt: skip
    return {
        "dpo": [*g.base_overrides("dpo"), *common],
        "reward": [*g.base_overrides("reward"), *common],
        "ppo": [*g.base_overrides("ppo"), f"train.max_steps={g.pick(8, 1)}",
                f"ppo.reward_model={g.work / 'runs' / 'reward'}",
                f"ppo.prompts_per_iteration={g.pick(8, 2)}", f"ppo.minibatch_size={g.pick(4, 2)}",
                f"ppo.max_new_tokens={g.pick(48, 6)}", f"data.max_val_examples={g.pick(16, 2)}",
                "train.eval_every=null"],
    }  # fmt: skip


def scored(model: str, n: int, max_new_tokens: int) -> dict[str, Any]:
    """Held-out preference accuracy and the mean reply length (words) of ``model``."""
    import tunesmith as ts

    acc = ts.evaluate(model, SUITE)  # a run dir keeps it as RUN/eval-preference-heldout.json
    prompts = [json.loads(x)["prompt"] for x in TEST.read_text().splitlines()[:n]]
    replies = ts.generate(model, prompts, max_new_tokens=max_new_tokens)
    words = [len(r.reply.split()) for r in replies]
    return {"preference_accuracy": acc.metrics["heldout-pairs/preference_accuracy"],
            "reply_words": sum(words) / len(words)}  # fmt: skip


def stage(config: str, over: list[str], n: int, new: int, score: bool) -> dict[str, Any]:
    row = c.train(config, over)
    row.pop("loss_curve")
    return {**row, **(scored(row["run_dir"], n, new) if score else {})}


def base_arm(model: str, n: int, new: int) -> dict[str, Any]:
    return scored(model, n, new)


def main(argv: Sequence[str] | None = None) -> int:
    g = c.start(SLUG, TITLE, argv)
    (g.work / "runs").mkdir(exist_ok=True)
    n, new, p = g.pick(24, 2), g.pick(64, 6), plan(g)
    base = c.arm(g, base_arm, g.model, n, new)
    dpo = c.arm(g, stage, g.recipe("dpo_lora.yaml"), p["dpo"], n, new, True)
    rm = c.arm(g, stage, g.recipe("reward_lora.yaml"), p["reward"], n, new, False)
    ppo = c.arm(g, stage, g.recipe("ppo_lora.yaml"), p["ppo"], n, new, True)
    rows = [
        {"arm": "base model (no training)", **base, "wall_seconds": None, "peak_rss_mib": None},
        {"arm": "DPO", **dpo},
        {"arm": "reward model + PPO", **ppo, "reward_model_seconds": rm["wall_seconds"],
         "wall_seconds": rm["wall_seconds"] + ppo["wall_seconds"],
         "peak_rss_mib": max(rm["peak_rss_mib"], ppo["peak_rss_mib"])},
    ]  # fmt: skip
    series = [(r["arm"], [(r["wall_seconds"] or 0.0, r["preference_accuracy"])]) for r in rows]
    c.finish(
        g,
        [("arm", "arm"), ("wall_seconds", "train wall (s)"), ("peak_rss_mib", "peak RSS (MiB)"),
         ("preference_accuracy", "held-out preference acc."),
         ("reply_words", f"reply words (mean, {n} prompts)")],
        rows, series, x_label="training wall time (s)",
        chart_title="held-out preference accuracy against training time",
        extra={"overrides": p},
    )  # fmt: skip
    return 0


if __name__ == "__main__":
    c.main_guard(main)
