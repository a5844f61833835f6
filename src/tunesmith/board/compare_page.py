"""``/compare?run=A&run=B[&run=C]``: overlaid curves, the config diff, eval metrics side by side
and ``tunesmith compare``'s win rate (with its 95% Wilson interval) of each run against the first,
for every eval result file the two share on the same suite."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from tunesmith.board import run_sections as sec
from tunesmith.board.context import BoardContext
from tunesmith.board.layout import esc, page
from tunesmith.board.runs import read_config, summarize
from tunesmith.report.charts import line_chart
from tunesmith.report.html import table
from tunesmith.report.method_panels import BEST, DEFAULT_BEST
from tunesmith.report.run_page import run_labels
from tunesmith.report.rundata import RunData, load_run

CURVES = (
    ("train", "loss", "Train loss", "loss"),
    ("val", "val_loss", "Validation loss", "val_loss"),
    ("train", "lr", "Learning rate", "lr"),
    ("train", "tokens_per_s", "Throughput (tokens/s)", "tokens_per_s"),
)


def _evals(run_dir: Path) -> dict[str, dict[str, Any]]:
    out = {}
    for file in sorted(run_dir.glob("eval*.json")):
        try:
            data = json.loads(file.read_text(encoding="utf-8"))
        except (OSError, ValueError):
            continue
        if isinstance(data, dict) and isinstance(data.get("tasks"), dict):
            out[file.name] = data
    return out


def curves(runs: list[RunData], labels: list[str]) -> str:
    """One overlay chart per curve any run logged: the base curves, then each method's
    headline held-out metrics."""
    wanted = list(CURVES)
    for r in runs:
        for b in BEST.get(str(r.config.get("method", "")), DEFAULT_BEST):
            item = (b.split, b.key, f"{b.label.removeprefix('best ')} ({b.split})", b.key)
            if all(w[:2] != item[:2] for w in wanted):
                wanted.append(item)
    charts = []
    for split, key, title, chart_id in wanted:
        series = [(name, r.series(split, key)) for name, r in zip(labels, runs, strict=True)]
        if any(points for _, points in series):
            charts.append(line_chart(series, title=title, chart_id=chart_id))
    return '<div class="charts">' + "".join(charts) + "</div>"


def eval_side_by_side(evals: list[dict[str, dict[str, Any]]], labels: list[str]) -> str:
    """Each task metric of each eval file, one column per run (``-`` where a run lacks it)."""
    metrics: dict[str, dict[str, float]] = {}
    for name, results in zip(labels, evals, strict=True):
        for fname, result in results.items():
            for task, data in result["tasks"].items():
                for k, v in (data.get("metrics") or {}).items():
                    if isinstance(v, int | float):
                        metrics.setdefault(f"{fname}: {task}/{k}", {})[name] = v
    rows = [[m, *(sec.fmt(vals.get(n)) for n in labels)] for m, vals in metrics.items()]
    return table(["metric", *labels], rows) if rows else "<p>no eval results</p>"


def win_rates(evals: list[dict[str, dict[str, Any]]], labels: list[str]) -> str:
    """``compare_results`` of the first run (A) against each other run (B) on each eval file
    both hold for the same suite: B's win rate over decisive examples and its interval."""
    from tunesmith.eval.compare import compare_results

    rows = []
    first = evals[0] if evals else {}
    for name, other in zip(labels[1:], evals[1:], strict=True):
        for fname, res_a in first.items():
            res_b = other.get(fname)
            if res_b is None or res_a.get("suite") != res_b.get("suite"):
                continue
            overall = compare_results(res_a, res_b)["overall"]
            ci = overall["win_rate_b_ci95"]
            interval = f"[{ci[0]:.3f}, {ci[1]:.3f}]" if ci else "-"
            rows.append([fname, f"{labels[0]} vs {name}", overall["n"], overall["wins_a"],
                         overall["wins_b"], overall["ties"], sec.fmt(overall["win_rate_b"]),
                         interval])  # fmt: skip
    if not rows:
        return "<p>no eval result of the same suite in the first run and another one</p>"
    head = ["file", "A vs B", "examples", "A wins", "B wins", "ties", "B win rate", "95% CI"]
    return table(head, rows)


def compare_page(ctx: BoardContext, run_dirs: list[Path]) -> str:
    """The whole comparison page (fewer than two runs: a note and the picker's hint)."""
    if len(run_dirs) < 2:
        body = (
            "<p>Pick two or more runs on the <a href='/'>runs page</a> (tick them, then "
            "<em>compare selected</em>), or open <code>/compare?run=A&amp;run=B</code>.</p>"
        )
        return page("Compare", body)
    root = ctx.runs_dir.resolve()
    data = [load_run(d) for d in run_dirs]
    labels = run_labels(data)
    summaries = [summarize(root, d) for d in run_dirs]
    rows = [[label, s.method, s.state, s.steps, sec.best_text(s), sec.fmt(s.tokens_per_s)]
            for label, s in zip(labels, summaries, strict=True)]  # fmt: skip
    evals = [_evals(d) for d in run_dirs]
    sections = [
        ("Runs", table(["run", "method", "state", "steps", "best", "tokens/s"], rows)),
        ("Curves", curves(data, labels)),
        ("Config diff", sec.diff_table(labels, [read_config(d) for d in run_dirs])),
        ("Evaluation", eval_side_by_side(evals, labels)),
        ("Win rate (tunesmith compare)", win_rates(evals, labels)),
    ]
    body = "".join(f"<section><h2>{esc(t)}</h2>{h}</section>" for t, h in sections)
    return page("Compare " + ", ".join(labels), body)
