"""Compare two models on the same suite: per-example pairs, win rate with a confidence interval,
and the examples where they differ most.

Each example is scored by its task's primary metric (generation: the first metric listed;
choice: accuracy; loss: the row's mean loss, lower is better). B *wins* an example when its score
is better than A's, *loses* when worse, and the pair is a *tie* when equal. Ties are reported on
their own and excluded from the win rate, which is over decisive pairs only:

    win_rate_b = wins_b / (wins_a + wins_b)

with the Wilson score interval (Wilson 1927) at confidence z (1.96 for 95%):

    centre = (p + z^2 / 2n) / (1 + z^2 / n)
    half   = z / (1 + z^2 / n) * sqrt(p (1 - p) / n + z^2 / 4n^2)

``win_rate_b_ties_half`` counts each tie as half a win over all n pairs, for readers who prefer it.
"""

from __future__ import annotations

import math
from typing import Any

Z95 = 1.959963984540054


def wilson_interval(successes: int, n: int, z: float = Z95) -> tuple[float, float] | None:
    """The Wilson score interval of a binomial proportion; None when ``n`` is 0."""
    if n <= 0:
        return None
    p = successes / n
    denom = 1 + z * z / n
    centre = (p + z * z / (2 * n)) / denom
    half = z / denom * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n))
    return max(0.0, centre - half), min(1.0, centre + half)


def _secondary(task: dict[str, Any], ex: dict[str, Any]) -> float:
    """A finer score to rank how different two examples are when the primary ties."""
    if "margin" in ex:
        return float(ex["margin"])
    scores = [v for k, v in ex.get("scores", {}).items() if k != task["primary"]]
    return sum(scores) / len(scores) if scores else 0.0


def _pair(name: str, task: dict[str, Any], ea: dict[str, Any], eb: dict[str, Any]) -> dict:
    primary, sign = task["primary"], 1.0 if task["higher_is_better"] else -1.0
    sa, sb = float(ea["scores"][primary]), float(eb["scores"][primary])
    delta = sign * (sb - sa)  # > 0: B is better
    winner = "b" if delta > 0 else "a" if delta < 0 else "tie"
    return {
        "task": name,
        "id": ea["id"],
        "prompt": ea.get("prompt"),
        "reference": ea.get("reference"),
        "prediction_a": ea.get("prediction"),
        "prediction_b": eb.get("prediction"),
        "metric": primary,
        "score_a": sa,
        "score_b": sb,
        "delta": delta,
        "secondary_delta": _secondary(task, eb) - _secondary(task, ea),
        "winner": winner,
    }


def pair_examples(res_a: dict[str, Any], res_b: dict[str, Any]) -> list[dict[str, Any]]:
    """One row per example present in both results (matched by task and id)."""
    pairs = []
    for name, task_a in res_a["tasks"].items():
        task_b = res_b["tasks"].get(name)
        if task_b is None:
            continue
        by_id = {e["id"]: e for e in task_b["examples"]}
        pairs += [
            _pair(name, task_a, ea, by_id[ea["id"]])
            for ea in task_a["examples"]
            if ea["id"] in by_id
        ]
    return pairs


def win_stats(pairs: list[dict[str, Any]]) -> dict[str, Any]:
    """Wins, losses, ties and B's win rate over decisive pairs with its 95% Wilson interval."""
    wins_b = sum(p["winner"] == "b" for p in pairs)
    wins_a = sum(p["winner"] == "a" for p in pairs)
    ties = len(pairs) - wins_a - wins_b
    decisive = wins_a + wins_b
    ci = wilson_interval(wins_b, decisive)
    return {
        "n": len(pairs),
        "wins_a": wins_a,
        "wins_b": wins_b,
        "ties": ties,
        "win_rate_b": wins_b / decisive if decisive else None,
        "win_rate_b_ci95": list(ci) if ci else None,
        "win_rate_b_ties_half": (wins_b + ties / 2) / len(pairs) if pairs else None,
    }


def most_different(pairs: list[dict[str, Any]], top: int = 5) -> list[dict[str, Any]]:
    """The ``top`` pairs that differ, by |primary delta| then |secondary delta|."""
    differ = [
        p
        for p in pairs
        if p["delta"] or p["secondary_delta"] or p["prediction_a"] != p["prediction_b"]
    ]
    differ.sort(key=lambda p: (abs(p["delta"]), abs(p["secondary_delta"])), reverse=True)
    return differ[:top]


def compare_results(res_a: dict[str, Any], res_b: dict[str, Any], top: int = 5) -> dict[str, Any]:
    """Everything ``tunesmith compare`` reports, JSON-ready."""
    pairs = pair_examples(res_a, res_b)
    tasks = {}
    for name in res_a["tasks"]:
        if name in res_b["tasks"]:
            tasks[name] = {
                "metrics_a": res_a["tasks"][name]["metrics"],
                "metrics_b": res_b["tasks"][name]["metrics"],
                **win_stats([p for p in pairs if p["task"] == name]),
            }
    return {
        "suite": res_a.get("suite"),
        "a": res_a.get("model"),
        "b": res_b.get("model"),
        "overall": win_stats(pairs),
        "tasks": tasks,
        "most_different": most_different(pairs, top),
        "examples": pairs,
    }


def _cut(text: Any, width: int) -> str:
    s = " ".join(str(text if text is not None else "").split())
    return s if len(s) <= width else s[: width - 1] + "…"


def _fmt(value: float | None) -> str:
    return "-" if value is None else f"{value:.3f}"


def render_table(cmp: dict[str, Any], width: int = 28) -> str:
    """A plain-text report: per-task win counts, then the examples that differ most."""
    lines = [f"A = {cmp['a']}", f"B = {cmp['b']}", ""]
    head = (
        f"{'task':<20} {'n':>4} {'A wins':>7} {'B wins':>7} {'ties':>5} {'B win rate':>10}  95% CI"
    )
    lines += [head, "-" * len(head)]
    for name, t in [*cmp["tasks"].items(), ("(all)", cmp["overall"])]:
        ci = t["win_rate_b_ci95"]
        ci_text = f"[{ci[0]:.3f}, {ci[1]:.3f}]" if ci else "-"
        lines.append(
            f"{_cut(name, 20):<20} {t['n']:>4} {t['wins_a']:>7} {t['wins_b']:>7} {t['ties']:>5} "
            f"{_fmt(t['win_rate_b']):>10}  {ci_text}"
        )
    lines += ["", "Examples that differ most:"]
    head = f"{'id':<18} {'metric':<11} {'A':>6} {'B':>6}  {'A output':<{width}}  B output"
    lines += [head, "-" * (len(head) + width)]
    for p in cmp["most_different"]:
        lines.append(
            f"{_cut(p['id'], 18):<18} {_cut(p['metric'], 11):<11} {p['score_a']:>6.3f} "
            f"{p['score_b']:>6.3f}  {_cut(p['prediction_a'], width):<{width}}  "
            f"{_cut(p['prediction_b'], width)}"
        )
    return "\n".join(lines)
