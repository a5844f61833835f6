"""A sweep's outputs: the table of trials, the best config as YAML, and the HTML report.

The report draws Optuna's optimisation history (each trial's objective and the best so far),
its parameter importances (``optuna.importance.get_param_importances``, Optuna's default
evaluator) and every
trial's held-out curve as the pruner saw it, with tunesmith's own inline-SVG charts
(:mod:`tunesmith.report`): ``optuna.visualization`` needs plotly, which tunesmith does not
install, and the page stays one offline file.
"""

from __future__ import annotations

import csv
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

from tunesmith.report.charts import line_chart
from tunesmith.report.html import bar_chart, page, table
from tunesmith.sweep.space import with_params


@dataclass
class SweepSummary:
    """What ``tunesmith sweep`` prints: the table, and where the best config and report went."""

    table: str
    best_config: Path | None
    report: Path
    counts: dict[str, int]
    best_value: float | None


def _state(trial: Any) -> str:
    state = trial.state.name
    return "INTERRUPTED" if state == "FAIL" and trial.user_attrs.get("interrupted") else state


def _wall(trial: Any) -> float | None:
    if trial.datetime_start is None or trial.datetime_complete is None:
        return None
    return round((trial.datetime_complete - trial.datetime_start).total_seconds(), 1)


def trial_rows(study: Any, keys: list[str]) -> list[list[Any]]:
    """One row per trial: number, state, objective, wall seconds, parameters, run dir."""
    rows = []
    for t in sorted(study.get_trials(deepcopy=False), key=lambda t: t.number):
        value: Any = t.value if t.value is not None else ""
        if t.state.name == "PRUNED" and t.intermediate_values:
            value = f"pruned at step {max(t.intermediate_values)}"
        if t.user_attrs.get("error"):
            value = str(t.user_attrs["error"])[:60]
        params = [t.params.get(k, "") for k in keys]
        rows.append([t.number, _state(t), value, _wall(t), *params, t.user_attrs.get("run_dir")])
    return rows


def text_table(header: list[str], rows: list[list[Any]]) -> str:
    """A plain aligned text table."""

    def cell(v: Any) -> str:
        if isinstance(v, float):
            return f"{v:.6g}"
        return "" if v is None else str(v)

    cells = [[cell(v) for v in row] for row in [header, *rows]]
    widths = [max(len(r[i]) for r in cells) for i in range(len(header))]
    lines = ["  ".join(c.ljust(w) for c, w in zip(r, widths, strict=True)) for r in cells]
    lines.insert(1, "  ".join("-" * w for w in widths))
    return "\n".join(line.rstrip() for line in lines)


def _charts(study: Any, direction: str) -> list[tuple[str, str]]:
    """History, importances and the per-trial held-out curves."""
    import optuna

    done = sorted(
        (t for t in study.get_trials(deepcopy=False) if t.state.name == "COMPLETE"),
        key=lambda t: t.number,
    )
    pick = max if direction == "maximize" else min
    best, running = [], None
    for t in done:
        running = t.value if running is None else pick(running, t.value)
        best.append((t.number, running))
    history = line_chart(
        [("objective", [(t.number, t.value) for t in done]), ("best so far", best)],
        title="optimisation history", chart_id="history", x_label="trial",
    )  # fmt: skip
    try:
        importance = optuna.importance.get_param_importances(study)
        imp_html = bar_chart(
            [(k, float(v)) for k, v in importance.items()], title="importance", chart_id="imp"
        )
    except (RuntimeError, ValueError) as err:  # too few finished trials, or a constant space
        imp_html = f"<p>no importances: {err}</p>"
    curves = [
        (f"trial {t.number} ({t.state.name.lower()})", sorted(t.intermediate_values.items()))
        for t in study.get_trials(deepcopy=False)
        if t.intermediate_values
    ]
    held_out = line_chart(curves, title="held-out value at each evaluation", chart_id="curves")
    return [
        ("Optimisation history", history),
        ("Parameter importance (Optuna)", imp_html),
        ("Held-out curves (what the pruner saw)", held_out),
    ]


def write_outputs(sweep: Any, study: Any) -> SweepSummary:
    """``trials.csv``, ``best.yaml`` (when a trial completed) and ``report.html`` in the sweep dir;
    returns the printed table and the counts by state."""
    out: Path = sweep.out
    keys = [p.key for p in sweep.space]
    header = ["trial", "state", "objective", "wall_s", *keys, "run_dir"]
    rows = trial_rows(study, keys)
    with (out / "trials.csv").open("w", newline="", encoding="utf-8") as fh:
        csv.writer(fh).writerows([header, *rows])
    counts: dict[str, int] = {}
    for row in rows:
        counts[row[1]] = counts.get(row[1], 0) + 1
    best_path, best_value = None, None
    if counts.get("COMPLETE"):
        best = study.best_trial
        best_value = float(best.value)
        best_path = out / "best.yaml"
        data = with_params(sweep.data, best.params)
        best_path.write_text(
            f"# tunesmith train {best_path.name}\n# best of sweep {out}: trial {best.number}, "
            f"{sweep.objective.name} = {best.value:.6g} ({sweep.objective.direction})\n"
            + yaml.safe_dump(data, sort_keys=False),
            encoding="utf-8",
        )
    objective = f"{sweep.objective.name} ({sweep.objective.direction})"
    sections = [("Trials", table(header, [[*r[:-1], r[-1] or ""] for r in rows]))]
    sections += _charts(study, sweep.objective.direction)
    report = out / "report.html"
    report.write_text(
        page(f"Sweep {out.name}", sections, subtitle=f"objective {objective}; {counts}"),
        encoding="utf-8",
    )
    return SweepSummary(text_table(header, rows), best_path, report, counts, best_value)
