"""Forgetting arithmetic: before/after deltas, the budget test, and the items that flipped.

    probe_ppl_pct    = 100 * (ppl_now / ppl_before - 1)      (> 0: general text got harder)
    probe_acc_points = 100 * (acc_now - acc_before)          (< 0: general questions lost)

A probe result is a dict with ``text_ppl`` (when the probe has text) and ``task_acc`` and
``task_correct`` (a list of bools, when it has tasks).
"""

from __future__ import annotations

from typing import Any


def deltas(before: dict[str, Any], now: dict[str, Any]) -> dict[str, float | None]:
    """``probe_ppl_pct`` and ``probe_acc_points`` of ``now`` against ``before`` (None when the
    probe has no text / no tasks)."""
    ppl = acc = None
    if before.get("text_ppl") is not None and now.get("text_ppl") is not None:
        ppl = 100.0 * (now["text_ppl"] / before["text_ppl"] - 1.0)
    if before.get("task_acc") is not None and now.get("task_acc") is not None:
        acc = 100.0 * (now["task_acc"] - before["task_acc"])
    return {"probe_ppl_pct": ppl, "probe_acc_points": acc}


def over_budget(delta: dict[str, float | None], budget: Any) -> list[str]:
    """Why ``delta`` breaks ``budget`` (a ForgettingBudget or None); empty when within it."""
    if budget is None:
        return []
    reasons = []
    ppl, acc = delta.get("probe_ppl_pct"), delta.get("probe_acc_points")
    limit = budget.max_ppl_increase_pct
    if limit is not None and ppl is not None and ppl > limit:
        reasons.append(f"probe perplexity +{ppl:.2f}% > {limit}%")
    limit = budget.max_acc_drop_points
    if limit is not None and acc is not None and -acc > limit:
        reasons.append(f"probe accuracy {acc:+.2f} points < -{limit}")
    return reasons


def flipped(
    before: dict[str, Any], now: dict[str, Any], prompts: list[str]
) -> list[dict[str, Any]]:
    """Task items right before and wrong now, with their index and prompt."""
    was, isnow = before.get("task_correct") or [], now.get("task_correct") or []
    return [
        {"index": i, "prompt": prompts[i]}
        for i, (a, b) in enumerate(zip(was, isnow, strict=False))
        if a and not b
    ]
