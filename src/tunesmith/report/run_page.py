"""The HTML of a run report (one run) or a comparison report (several runs)."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

import yaml

from tunesmith.engine.tracking import scalars
from tunesmith.report.charts import line_chart
from tunesmith.report.html import bar_chart, esc, page, table
from tunesmith.report.memorization_panel import memorization_section
from tunesmith.report.method_panels import best_rows, method_charts
from tunesmith.report.rundata import RunData, load_run

KNOWN_TRAIN = ("loss", "lr", "tokens_per_s", "grad_norm")
COUNTERS = frozenset({"real_tokens", "slots", "rows", "trained_tokens", "step_seconds"})
MAX_EXTRA_CHARTS = 8


def _charts(items: Sequence[str]) -> str:
    return '<div class="charts">' + "\n".join(i for i in items if i) + "</div>"


def _memory_keys(run: RunData) -> list[str]:
    return [k for k in run.keys("train") if "mem" in k.lower()]


def _summary_rows(run: RunData) -> list[tuple[str, object]]:
    train, final = run.rows("train"), run.rows("final")
    cfg = run.config
    rows: list[tuple[str, object]] = [
        ("run", str(run.path)),
        ("method", cfg.get("method", "?")),
        ("base model", run.env.get("base_model") or cfg.get("model", {}).get("name_or_path", "?")),
        ("steps", int(train[-1].get("step", 0)) if train else 0),
        ("last train loss", train[-1].get("loss", "-") if train else "-"),
        *best_rows(run),
    ]
    if final and final[-1].get("val_loss") is not None:
        rows.append(("final val loss", final[-1]["val_loss"]))
    if "trainable_params" in run.env:
        rows.append(("trainable params", run.env["trainable_params"]))
        rows.append(("total params", run.env.get("total_params", "-")))
    return rows


def _training_section(run: RunData) -> str:
    loss = [("train", run.series("train", "loss")), ("val", run.series("val", "val_loss"))]
    items = [
        line_chart(loss, title="Loss", chart_id="loss"),
        line_chart([("lr", run.series("train", "lr"))], title="Learning rate", chart_id="lr"),
        line_chart(
            [("tokens/s", run.series("train", "tokens_per_s"))],
            title="Throughput (trained tokens/s)",
            chart_id="tokens_per_s",
        ),
    ]
    if run.series("train", "grad_norm"):
        grad = [("grad norm", run.series("train", "grad_norm"))]
        items.append(line_chart(grad, title="Gradient norm", chart_id="grad_norm"))
    memory = [(k, run.series("train", k)) for k in _memory_keys(run)]
    if memory:
        items.append(line_chart(memory, title="Memory", chart_id="memory"))
    return _charts(items)


def _extra_section(run: RunData) -> str:
    skip = set(KNOWN_TRAIN) | COUNTERS | set(_memory_keys(run)) | {"padding_waste"}
    keys = [k for k in run.keys("train") if k not in skip][:MAX_EXTRA_CHARTS]
    return _charts(
        [line_chart([(k, run.series("train", k))], title=k, chart_id=f"train-{k}") for k in keys]
    )


def _short(label: str, width: int = 24) -> str:
    """Bar labels fit the chart's label column: keep the end (the metric name)."""
    return label if len(label) <= width else "…" + label[-(width - 1) :]


def _eval_block(name: str, result: dict[str, Any]) -> str:
    summary = result.get("summary") or {
        k: v for k, v in scalars(result) if not k.startswith("tasks/")
    }
    rows = [(k, v) for k, v in summary.items() if isinstance(v, int | float)]
    unit = [(_short(k), float(v)) for k, v in rows if 0.0 <= v <= 1.0]
    parts = [f"<h3>{esc(name)}</h3>", f"<p>suite: {esc(result.get('suite', '?'))}</p>"]
    parts.append(table(["metric", "value"], rows))
    if unit:
        parts.append(bar_chart(unit, title=f"{name}: scores in [0, 1]", chart_id=f"eval-{name}"))
    for task, data in (result.get("tasks") or {}).items():
        examples = data.get("examples") or []
        if examples:
            shown = [
                (e.get("id", ""), str(e.get("prompt", ""))[:80], str(e.get("reference", ""))[:60],
                 str(e.get("prediction", ""))[:60], ", ".join(
                     f"{k}={v:.3g}" for k, v in (e.get("scores") or {}).items()))
                for e in examples[:5]
            ]  # fmt: skip
            parts.append(f"<p>{esc(task)}: first {len(shown)} of {len(examples)} examples</p>")
            parts.append(table(["id", "prompt", "reference", "prediction", "scores"], shown))
    return "\n".join(parts)


def _flat(value: Any) -> dict[str, float]:
    return dict(scalars(value)) if isinstance(value, dict) else {}


def forgetting_section(run: RunData) -> str:
    """Before/after/delta of the forgetting probes, the flipped examples, the curves."""
    f = run.forgetting or {}
    before, after, delta = _flat(f.get("before")), _flat(f.get("after")), _flat(f.get("delta"))
    names = list(dict.fromkeys([*before, *after, *delta]))
    parts = []
    if "target_gain" in f:
        gain = f["target_gain"]
        text = ", ".join(f"{k}={v:.4g}" for k, v in _flat(gain).items()) or str(gain)
        parts.append(f"<p>target gain: {esc(text)}</p>")
    if names:
        rows = [(n, before.get(n, "-"), after.get(n, "-"), delta.get(n, "-")) for n in names]
        parts.append(table(["probe", "before", "after", "delta"], rows))
    if delta:
        parts.append(
            bar_chart(
                [(k, abs(v)) for k, v in delta.items()],
                title="|delta| per probe (after - before)",
                chart_id="forgetting-delta",
            )
        )
    flipped = f.get("flipped") or []
    if flipped:
        parts.append(f"<p>{len(flipped)} flipped example(s); first {min(len(flipped), 20)}:</p>")
        parts.append(_records_table(flipped[:20]))
    keys = run.keys("forgetting")[:MAX_EXTRA_CHARTS]
    curves = [
        line_chart([(k, run.series("forgetting", k))], title=k, chart_id=f"forgetting-{k}")
        for k in keys
    ]
    parts.append(_charts(curves))
    return "\n".join(parts)


def _records_table(items: list[Any]) -> str:
    if all(isinstance(i, dict) for i in items):
        cols = list(dict.fromkeys(k for i in items for k in i))[:6]
        return table(cols, [[str(i.get(c, ""))[:80] for c in cols] for i in items])
    return table(["item"], [[str(i)[:160]] for i in items])


def run_page(run: RunData) -> str:
    sections = [
        ("Summary", table(["", ""], _summary_rows(run))),
        ("Training", _training_section(run)),
    ]
    if curves := method_charts(run):
        sections.append(("Evaluation curves", _charts(curves)))
    extra = _extra_section(run)
    if "<svg" in extra:
        sections.append(("Other training metrics", extra))
    if run.evals:
        sections.append(("Evaluation", "\n".join(_eval_block(n, r) for n, r in run.evals.items())))
    if run.forgetting is not None or run.rows("forgetting"):
        sections.append(("Forgetting", forgetting_section(run)))
    if (memorization := memorization_section(run.path)) is not None:
        sections.append(("Memorization", memorization))
    if run.config:
        config = yaml.safe_dump(run.config, sort_keys=False)
        sections.append(("Config", f"<pre>{esc(config)}</pre>"))
    return page(f"tunesmith run {run.name}", sections, subtitle=str(run.path))


def run_labels(runs: Sequence[RunData]) -> list[str]:
    """A distinct label per run: its name, else parent/name, else its position and name."""
    for label in (lambda r: r.name, lambda r: f"{r.path.parent.name}/{r.name}"):
        labels = [label(r) for r in runs]
        if len(set(labels)) == len(labels):
            return labels
    return [f"{i + 1}:{r.name}" for i, r in enumerate(runs)]


def _overlay(
    runs: Sequence[RunData], labels: list[str], split: str, key: str, title: str, chart_id: str
) -> str:
    series = [(name, r.series(split, key)) for name, r in zip(labels, runs, strict=True)]
    return line_chart(series, title=title, chart_id=chart_id)


def _eval_comparison(runs: Sequence[RunData], labels: list[str]) -> str:
    metrics: dict[str, dict[str, float]] = {}
    for name, r in zip(labels, runs, strict=True):
        for fname, result in r.evals.items():
            for k, v in (result.get("summary") or {}).items():
                if isinstance(v, int | float):
                    metrics.setdefault(f"{fname}: {k}", {})[name] = v
    rows = [[m, *(vals.get(n, "-") for n in labels)] for m, vals in metrics.items()]
    return table(["metric", *labels], rows) if rows else "<p>no eval results</p>"


def comparison_page(runs: Sequence[RunData]) -> str:
    labels = run_labels(runs)
    summary = [dict(_summary_rows(r)) for r in runs]
    cols = ["method", "steps", "last train loss", "best", "trainable params"]
    for s, r in zip(summary, runs, strict=True):
        s["best"] = "; ".join(f"{k.removeprefix('best ')} {v}" for k, v in best_rows(r))
    rows = [[n, *(s.get(c, "-") for c in cols)] for n, s in zip(labels, summary, strict=True)]
    curves = _charts(
        [
            _overlay(runs, labels, "train", "loss", "Train loss", "loss"),
            _overlay(runs, labels, "val", "val_loss", "Validation loss", "val_loss"),
            _overlay(runs, labels, "train", "lr", "Learning rate", "lr"),
            _overlay(
                runs, labels, "train", "tokens_per_s", "Throughput (tokens/s)", "tokens_per_s"
            ),
        ]
    )
    sections = [("Runs", table(["run", *cols], rows)), ("Training", curves)]
    sections.append(("Evaluation", _eval_comparison(runs, labels)))
    deltas = [_flat((r.forgetting or {}).get("delta")) for r in runs]
    if any(deltas):
        probes = list(dict.fromkeys(k for d in deltas for k in d))
        frows = [[p, *(d.get(p, "-") for d in deltas)] for p in probes]
        sections.append(("Forgetting (delta)", table(["probe", *labels], frows)))
    return page(f"tunesmith comparison: {', '.join(labels)}", sections)


def write_report(runs: Sequence[str | Path], out: str | Path | None = None) -> Path:
    """Write one run's page (default ``RUN/report.html``) or a comparison of several runs
    (default ``./report-compare.html``); returns the path written."""
    data = [load_run(r) for r in runs]
    if out is None:
        out = data[0].path / "report.html" if len(data) == 1 else Path("report-compare.html")
    html = run_page(data[0]) if len(data) == 1 else comparison_page(data)
    path = Path(out)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(html, encoding="utf-8")
    return path
