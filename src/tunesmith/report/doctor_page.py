"""The pre-flight (``tunesmith doctor``) HTML page: checks, lengths, and examples as the model
sees them, trained tokens highlighted. Self-contained: no scripts, no external assets."""

from __future__ import annotations

import html
from collections.abc import Sequence
from dataclasses import dataclass, field

from tunesmith.checks.checks import Check
from tunesmith.checks.lengths import LengthStats
from tunesmith.checks.render import NEWLINE, RenderedExample
from tunesmith.data.templates import IGNORE_INDEX

_CSS = """
body{font-family:system-ui,sans-serif;margin:2em;max-width:70em;color:#222}
.seq{font-family:ui-monospace,monospace;white-space:pre-wrap;line-height:1.7;
 border:1px solid #ddd;padding:.6em;background:#fafafa}
.tok{border-right:1px solid #ccc}
.tr{background:#b7f0b1;color:#000;border-right-color:#5a5}
.ms{color:#888}
.nl{color:#bbb}
table{border-collapse:collapse}td,th{border:1px solid #ddd;padding:2px 6px;text-align:left}
.PASS{color:#1a7f37}.WARN{color:#9a6700}.FAIL{color:#cf222e;font-weight:bold}.SKIP{color:#888}
"""


@dataclass
class HtmlReport:
    """Everything the HTML page shows."""

    title: str
    settings: dict[str, str]
    checks: list[Check]
    examples: list[RenderedExample]
    lengths: LengthStats | None = None
    notes: list[str] = field(default_factory=list)


def _token_span(k: int, tok: int, label: int, piece: str) -> str:
    cls = "tr" if label != IGNORE_INDEX else "ms"
    title = f"#{k} id={tok} label={'trained' if label != IGNORE_INDEX else IGNORE_INDEX}"
    text = html.escape(piece).replace("\n", f'<span class="nl">{NEWLINE}</span>\n')
    return f'<span class="tok {cls}" title="{title}">{text}</span>'


def _example_html(ex: RenderedExample) -> str:
    spans = "".join(
        _token_span(k, t, lab, p)
        for k, (t, lab, p) in enumerate(zip(ex.input_ids, ex.labels, ex.pieces, strict=True))
    )
    rows = "".join(
        f"<tr><td>{k}</td><td>{t}</td><td><code>{html.escape(repr(p))}</code></td>"
        f'<td class="{"tr" if lab != IGNORE_INDEX else "ms"}">'
        f"{'trained' if lab != IGNORE_INDEX else lab}</td></tr>"
        for k, (t, lab, p) in enumerate(zip(ex.input_ids, ex.labels, ex.pieces, strict=True))
    )
    return (
        f"<h3>{html.escape(ex.header())}</h3><div class='seq'>{spans}</div>"
        "<details><summary>tokens and labels</summary><table><tr><th>pos</th><th>id</th>"
        f"<th>token</th><th>label</th></tr>{rows}</table></details>"
    )


def _lengths_html(stats: LengthStats) -> str:
    top = max([c for _, _, c in stats.histogram()] + [1])
    bars = "".join(
        f"<tr><td>{lo}–{hi - 1}</td><td><div style='background:"
        f"{'#f4a6a6' if hi - 1 > stats.max_length else '#9ac5f0'};width:{300 * c // top}px'>"
        f"&nbsp;</div></td><td>{c}</td></tr>"
        for lo, hi, c in stats.histogram()
    )
    return f"<h2>Lengths</h2><p>{html.escape(stats.summary())}</p><table>{bars}</table>"


def render_html(report: HtmlReport) -> str:
    """A self-contained HTML page (no scripts, no external assets)."""
    settings = "".join(
        f"<tr><th>{html.escape(k)}</th><td>{html.escape(v)}</td></tr>"
        for k, v in report.settings.items()
    )
    checks = "".join(
        f"<tr><td class='{c.status}'>{c.status}</td><td>{html.escape(c.name)}</td>"
        f"<td>{html.escape(c.detail)}</td></tr>"
        for c in report.checks
    )
    notes = "".join(f"<p>{html.escape(n)}</p>" for n in report.notes)
    parts: Sequence[str] = (
        f"<!doctype html><html><head><meta charset='utf-8'><title>{html.escape(report.title)}"
        f"</title><style>{_CSS}</style></head><body><h1>{html.escape(report.title)}</h1>",
        f"<table>{settings}</table><h2>Checks</h2><table>{checks}</table>{notes}",
        _lengths_html(report.lengths) if report.lengths else "",
        "<h2>Examples as the model sees them</h2><p>Trained tokens (loss) are "
        "<span class='tr'>green</span>; hover a token for its position, id and label.</p>",
        *(_example_html(ex) for ex in report.examples),
        "</body></html>",
    )
    return "".join(parts)
