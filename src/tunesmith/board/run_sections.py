"""The HTML sections of the board's run and compare pages, built from a run directory.

Reuses the report's builders where they exist (tables, SVG line charts, the forgetting and
memorisation panels, the method panels' chart definitions); what is new here is what a live
page needs: chart placeholders the bundled JavaScript fills from server-sent events, the full
per-example eval predictions, the rejects browser and the lineage chain.
"""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Any
from urllib.parse import quote, urlencode

from tunesmith.board.layout import esc
from tunesmith.board.runs import RunSummary, config_diff, read_rejects
from tunesmith.report.html import table
from tunesmith.report.method_panels import PANELS

MAX_EXAMPLES = 200  # per task on the run page
REJECTS_PER_PAGE = 50

LOSS_SERIES = (("train", "loss", "train"), ("val", "val_loss", "val"), ("val", "loss", "val loss"))
# (chart id, title, [(split, key, label)]): the curves every run page offers
BASE_CHARTS: tuple[tuple[str, str, tuple[tuple[str, str, str], ...]], ...] = (
    # SFT-like methods log held-out loss as val_loss, DPO as the val split's loss
    ("loss", "Loss", LOSS_SERIES),
    ("lr", "Learning rate", (("train", "lr", "lr"),)),
    ("tokens_per_s", "Throughput (tokens/s)", (("train", "tokens_per_s", "tokens/s"),)),
    ("grad_norm", "Gradient norm", (("train", "grad_norm", "grad norm"),)),
)


def url_path(relative: str) -> str:
    """A run path for a URL (each segment percent-encoded, slashes kept)."""
    return quote(relative, safe="/")


def fmt(value: object) -> str:
    """Numbers to 4 significant digits, the rest as text; None as ``-``."""
    if value is None:
        return "-"
    if isinstance(value, float):
        return f"{value:.4g}"
    return str(value)


def when(stamp: float | None) -> str:
    """Epoch seconds as ``YYYY-MM-DD HH:MM`` (UTC), ``-`` when unknown."""
    return time.strftime("%Y-%m-%d %H:%M", time.gmtime(stamp)) if stamp else "-"


def best_text(run: RunSummary) -> str:
    return f"{run.best.label.removeprefix('best ')}: {run.best.value:.4g}" if run.best else "-"


def summary_table(run: RunSummary, note: str | None) -> str:
    """The run's one-line facts as a two-column table (``note``: a FAILED/PRUNED message)."""
    rows: list[tuple[str, object]] = [
        ("method", run.method),
        ("state", run.state),
        ("started (UTC)", when(run.started)),
        ("steps", run.steps),
        ("best", best_text(run)),
        ("tokens/s", fmt(run.tokens_per_s)),
        ("base model", run.base_model or "-"),
    ]
    if note:
        rows.append(("marker", note))
    cells = "".join(f"<tr><th>{esc(k)}</th><td>{esc(v)}</td></tr>" for k, v in rows)
    return f'<table class="facts">{cells}</table>'


def chart_specs(method: str) -> list[tuple[str, str, list[tuple[str, str, str]]]]:
    """The live charts of a run page: the base curves, then the method's evaluation panels
    (``report.method_panels.PANELS``; a key ending in ``*`` is expanded in the browser)."""
    specs = [(cid, title, list(series)) for cid, title, series in BASE_CHARTS]
    for panel in PANELS.get(method, ()):
        single = len(panel.series) == 1
        series = [(split, key, key if single or split == "val" else f"{key} ({split})")
                  for split, key in panel.series]  # fmt: skip
        specs.append((panel.chart_id, panel.title, series))
    return specs


def live_charts(relative: str, method: str) -> str:
    """Chart placeholders for ``board.js``: it opens the run's event stream and draws them."""
    divs = [
        f'<div class="live-chart" data-chart="{esc(cid)}" data-title="{esc(title)}" '
        f"data-series='{esc(json.dumps(series))}'></div>"
        for cid, title, series in chart_specs(method)
    ]
    source = f"/api/run/{url_path(relative)}/events"
    return (
        f'<div class="charts" id="live" data-events="{esc(source)}">'
        + "".join(divs)
        + '</div><p class="muted" id="live-status">connecting…</p>'
    )


def _example_row(example: dict[str, Any]) -> list[str]:
    scores = example.get("scores") or {}
    shown = ", ".join(f"{k}={fmt(v)}" for k, v in scores.items() if isinstance(v, int | float))
    return [
        str(example.get("id", "")),
        str(example.get("prompt", ""))[:300],
        str(example.get("reference", ""))[:200],
        str(example.get("prediction", ""))[:300],
        shown,
    ]


def eval_section(run_dir: Path) -> str | None:
    """Every ``eval*.json`` of the run: suite, metrics, and each task's predictions."""
    parts = []
    for file in sorted(run_dir.glob("eval*.json")):
        try:
            result = json.loads(file.read_text(encoding="utf-8"))
        except (OSError, ValueError):
            parts.append(f"<h3>{esc(file.name)}</h3><p>cannot be read as JSON</p>")
            continue
        parts.append(f"<h3>{esc(file.name)}</h3><p>suite: {esc(result.get('suite', '?'))}</p>")
        for task, data in (result.get("tasks") or {}).items():
            metrics = [(k, fmt(v)) for k, v in (data.get("metrics") or {}).items()
                       if isinstance(v, int | float)]  # fmt: skip
            examples = data.get("examples") or []
            parts.append(f"<h4>{esc(task)}</h4>" + table(["metric", "value"], metrics))
            if examples:
                rows = [_example_row(e) for e in examples[:MAX_EXAMPLES]]
                head = ["id", "prompt", "reference", "prediction", "scores"]
                parts.append(
                    f"<details class='examples'><summary>{len(rows)} of {len(examples)} "
                    f"predictions</summary>{table(head, rows)}</details>"
                )
    return "\n".join(parts) or None


def rejects_table(run_dir: Path, relative: str, page_no: int) -> str | None:
    """One page of ``rejects.jsonl``: record, rule / reason, file:line; with page links."""
    rows, total = read_rejects(run_dir / "rejects.jsonl", page_no, REJECTS_PER_PAGE)
    if total == 0:
        return "<p>no rejected records</p>" if (run_dir / "rejects.jsonl").is_file() else None
    shown = []
    for r in rows:
        where = f"{r.get('source', '?')}:{r.get('line', '?')}"
        rule = " / ".join(str(r[k]) for k in ("rule", "field", "reason") if r.get(k))
        record = r.get("record", r.get("raw", ""))
        text = record if isinstance(record, str) else json.dumps(record, ensure_ascii=False)
        shown.append([where, rule, text[:400]])
    last = (total - 1) // REJECTS_PER_PAGE
    links = []
    base = f"/run/{url_path(relative)}"
    if page_no > 0:
        links.append(f'<a href="{base}?{urlencode({"rejects": page_no - 1})}#rejects">previous</a>')
    if page_no < last:
        links.append(f'<a href="{base}?{urlencode({"rejects": page_no + 1})}#rejects">next</a>')
    head = f"<p>{total} rejected record(s); page {page_no + 1} of {last + 1} {' '.join(links)}</p>"
    return head + table(["file:line", "rule / reason", "record"], shown)


def preflight_section(run_dir: Path, relative: str) -> str:
    """Links to the ``tunesmith doctor`` reports in the run dir or the folder it sits in, and a
    button that runs the pre-flight checks on the run's config now (into the run dir)."""
    reports = sorted(run_dir.glob("doctor-*.html")) + sorted(run_dir.parent.glob("doctor-*.html"))
    action = f"/run/{url_path(relative)}/preflight"
    button = (
        f'<form method="post" action="{esc(action)}"><button type="submit">'
        "run the pre-flight checks on this run's config</button></form>"
    )
    if not reports:
        return button + (
            "<p>no pre-flight report yet: <code>tunesmith doctor CONFIG</code> writes one to "
            "<code>train.output_dir</code>; every training run also runs the cheap checks and "
            "refuses to start on a FAIL.</p>"
        )
    items = []
    for r in reports:
        where = "run" if r.parent == run_dir else "folder"
        href = f"/preflight/{url_path(relative)}?{urlencode({'name': r.name, 'where': where})}"
        items.append(f'<li><a href="{esc(href)}">{esc(r.name)}</a> ({where})</li>')
    return button + "<ul>" + "".join(items) + "</ul>"


def lineage_section(run_dir: Path) -> str | None:
    """The lineage chain ``tunesmith lineage RUN`` prints, once the run recorded one."""
    from tunesmith.engine.lineage import read_lineage
    from tunesmith.engine.lineage_verify import format_chain

    try:
        node = read_lineage(run_dir)
        return f"<pre>{esc(format_chain(node))}</pre>" if node else None
    except (OSError, ValueError, KeyError, TypeError):
        return "<p>lineage.json cannot be read</p>"


def diff_table(labels: list[str], configs: list[dict[str, Any]]) -> str:
    """The flattened config keys that differ between runs, one column per run."""
    rows = [[key, *(fmt(v) for v in values)] for key, values in config_diff(configs)]
    return table(["key", *labels], rows) if rows else "<p>the configs are identical</p>"
