"""What a run report shows per training method: its evaluation curves and its best values.

Each method logs different held-out metrics (``metrics.jsonl``); :data:`PANELS` names, per
method, the charts of those curves (split and key of each series; a key ending in ``*`` takes
every key with that prefix, such as GRPO's ``reward/<function>_mean``), and :data:`BEST` the
summary rows of best values (the metric's best over the run, higher or lower is better).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass

from tunesmith.report.charts import line_chart
from tunesmith.report.rundata import RunData


@dataclass(frozen=True)
class Panel:
    title: str
    series: tuple[tuple[str, str], ...]  # (split, key); key may end in "*"
    chart_id: str


@dataclass(frozen=True)
class Best:
    label: str
    split: str
    key: str
    pick: Callable[[Sequence[float]], float]


PANELS: dict[str, tuple[Panel, ...]] = {
    "dpo": (
        Panel("Held-out reward accuracy", (("val", "accuracy"),), "dpo-accuracy"),
        Panel("Held-out reward margin", (("val", "margin"),), "dpo-margin"),
        Panel(
            "Held-out log-prob per sequence (chosen, rejected)",
            (("val", "logps/chosen"), ("val", "logps/rejected")),
            "dpo-logps",
        ),
        Panel(
            "Log-prob change since the first evaluation",
            (("val", "logps/chosen_change"), ("val", "logps/rejected_change")),
            "dpo-logps-change",
        ),
    ),
    "reward": (
        Panel("Held-out pairwise accuracy", (("val", "val_accuracy"),), "reward-accuracy"),
        Panel("Held-out reward margin", (("val", "val_reward_margin"),), "reward-margin"),
    ),
    "grpo": (
        Panel("Held-out accuracy", (("eval", "accuracy"),), "grpo-accuracy"),
        Panel("Reward per function (train)", (("train", "reward/*"),), "grpo-rewards"),
        Panel("Zero-variance groups", (("train", "zero_variance_groups"),), "grpo-zero-variance"),
        Panel("KL to the reference", (("train", "kl"),), "grpo-kl"),
    ),
    "ppo": (
        Panel("Reward", (("val", "reward_mean"), ("train", "reward_mean")), "ppo-reward"),
        Panel("KL to the reference", (("train", "kl"),), "ppo-kl"),
        Panel("KL coefficient beta", (("train", "kl_coef"),), "ppo-beta"),
        Panel(
            "Reply length (tokens)",
            (("val", "completion_length"), ("train", "response_length")),
            "ppo-length",
        ),
    ),
    "classify": (
        Panel(
            "Held-out accuracy and macro-F1",
            (("val", "accuracy"), ("val", "macro_f1"), ("val", "majority_accuracy")),
            "classify-scores",
        ),
    ),
}

BEST: dict[str, tuple[Best, ...]] = {
    "dpo": (
        Best("best held-out loss", "val", "loss", min),
        Best("best reward accuracy", "val", "accuracy", max),
    ),
    "reward": (
        Best("best pairwise accuracy", "val", "val_accuracy", max),
        Best("best val loss", "val", "val_loss", min),
    ),
    "grpo": (Best("best held-out accuracy", "eval", "accuracy", max),),
    "ppo": (Best("best held-out reward", "val", "reward_mean", max),),
    "classify": (
        Best("best macro-F1", "val", "macro_f1", max),
        Best("best accuracy", "val", "accuracy", max),
    ),
}
DEFAULT_BEST = (Best("best val loss", "val", "val_loss", min),)


def best_rows(run: RunData) -> list[tuple[str, object]]:
    """The method's best-value rows (``-`` where the run logged none)."""
    rows: list[tuple[str, object]] = []
    for b in BEST.get(str(run.config.get("method", "")), DEFAULT_BEST):
        values = [v for _, v in run.series(b.split, b.key)]
        rows.append((b.label, b.pick(values) if values else "-"))
    return rows


def _expand(run: RunData, split: str, key: str) -> list[str]:
    if not key.endswith("*"):
        return [key]
    prefix = key[:-1]
    return [k for k in run.keys(split) if k.startswith(prefix) and k.endswith("_mean")]


def method_charts(run: RunData) -> list[str]:
    """The method's evaluation charts, each with the series the run logged (none: no chart)."""
    charts = []
    for panel in PANELS.get(str(run.config.get("method", "")), ()):
        series = []
        for split, key in panel.series:
            for k in _expand(run, split, key):
                points = run.series(split, k)
                if points:
                    label = k if len(panel.series) == 1 or split == "val" else f"{k} ({split})"
                    series.append((label, points))
        if series:
            charts.append(line_chart(series, title=panel.title, chart_id=panel.chart_id))
    return charts


__all__ = ["BEST", "PANELS", "best_rows", "method_charts"]
