"""Should I fine-tune at all? What ``tunesmith plan --advise`` says for three situations, and
few-shot prompting of the base model against a LoRA-tuned model on the demo task.

Recipe: configs/smollm2-135m-instruct/sft_lora_demo.yaml at the short schedule of
``lora_vs_full.py``. Few-shot: the first k training examples as earlier chat turns before each
held-out request (k = 0, 1, 3), greedy, exact-JSON score (the demo's metric).

    python guide/should_i_finetune.py [--tiny]
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import _common as c
from lora_vs_full import shared

SLUG, TITLE = "should-i-finetune", "Should I fine-tune at all?"
SHOTS = (0, 1, 3)
SITUATIONS: dict[str, dict[str, Any]] = {
    "500 labelled examples of a fixed output format, a held-out set": {
        "examples": 500, "format_only": True, "eval_set": True},
    "facts that change weekly, 2,000 examples, a held-out set": {
        "examples": 2000, "knowledge_changes_often": True, "eval_set": True},
    "30 examples, no held-out set, low latency needed": {
        "examples": 30, "eval_set": False, "low_latency": True},
}  # fmt: skip


def advice() -> list[dict[str, Any]]:
    """The advisor's recommendation (and the rules that fired) per situation."""
    import tunesmith as ts

    out = []
    for name, facts in SITUATIONS.items():
        result = ts.plan(advise=True, facts=ts.AdviceFacts(**facts))
        a = result.advice or {}
        out.append({"situation": name, "facts": facts, "recommendation": a.get("recommendation"),
                    "rules": [r["name"] for r in a.get("rules", [])]})  # fmt: skip
    return out


def fewshot(model: str, n: int, new: int) -> dict[str, Any]:
    return {f"shots_{k}": c.demo_score(model, n, shots=k, max_new_tokens=new) for k in SHOTS}


def main(argv: Sequence[str] | None = None) -> int:
    g = c.start(SLUG, TITLE, argv)
    n, new = g.pick(20, 2), g.pick(48, 6)
    base = c.arm(g, fewshot, g.model, n, new)
    over = [*g.base_overrides("lora"), *shared(g)]
    tuned = c.arm(g, c.train_and_score, g.recipe("sft_lora_demo.yaml"), over, n, new)
    rows: list[dict[str, Any]] = [
        {"approach": f"base model, {k}-shot prompt", "demo_score": base[f"shots_{k}"],
         "train_seconds": 0.0} for k in SHOTS
    ]  # fmt: skip
    rows.append(
        {
            "approach": f"LoRA-tuned ({tuned['steps']} steps), 0-shot",
            "demo_score": tuned["demo_score"],
            "train_seconds": tuned["wall_seconds"],
        }
    )
    said = advice()
    series = [
        ("few-shot prompting", [(k, base[f"shots_{k}"]) for k in SHOTS]),
        ("LoRA-tuned, 0-shot", [(0, tuned["demo_score"]), (max(SHOTS), tuned["demo_score"])]),
    ]
    c.finish(
        g,
        [("approach", "approach"), ("demo_score", f"held-out exact JSON ({n} ex.)"),
         ("train_seconds", "training wall (s)")],
        rows, series, x_label="examples in the prompt", chart_title="few-shot against tuned",
        notes=[f"`tunesmith plan --advise`, {a['situation']}: **{a['recommendation']}** "
               f"(rules: {', '.join(a['rules'])})." for a in said],
        extra={"advice": said, "held_out_examples": n},
    )  # fmt: skip
    return 0


if __name__ == "__main__":
    c.main_guard(main)
