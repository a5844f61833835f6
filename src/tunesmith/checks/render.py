"""Examples as the model sees them, trained tokens highlighted: terminal text and an HTML page."""

from __future__ import annotations

import html
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

from tunesmith.checks.checks import Check
from tunesmith.checks.lengths import LengthStats
from tunesmith.data.templates import IGNORE_INDEX, Encoded

RESET = "\x1b[0m"
# Alternating styles make token boundaries visible: trained = black on green, masked = grey.
TRAINED_STYLES = ("\x1b[30;42m", "\x1b[30;102m")
MASKED_STYLES = ("\x1b[90m", "\x1b[37m")
STATUS_STYLES = {"PASS": "\x1b[32m", "WARN": "\x1b[33m", "FAIL": "\x1b[1;31m", "SKIP": "\x1b[90m"}
OPEN, CLOSE = "[[", "]]"
NEWLINE = "↵"


@dataclass(frozen=True)
class RenderedExample:
    """One encoded example with its per-token text."""

    name: str
    input_ids: list[int]
    labels: list[int]
    pieces: list[str]
    truncated: bool

    @property
    def n_trained(self) -> int:
        return sum(label != IGNORE_INDEX for label in self.labels)

    def header(self) -> str:
        cut = ", truncated" if self.truncated else ""
        return f"{self.name}: {len(self.input_ids)} tokens, {self.n_trained} trained{cut}"


def rendered(enc: Encoded, tokenizer: Any, name: str) -> RenderedExample:
    pieces = [tokenizer.decode([t], clean_up_tokenization_spaces=False) for t in enc.input_ids]
    return RenderedExample(name, list(enc.input_ids), list(enc.labels), pieces, enc.truncated)


def _ansi(text: str, style: str) -> str:
    """Style ``text`` line by line (a style must not run into the next line's indent)."""
    return "\n".join(f"{style}{part}{RESET}" if part else "" for part in text.split("\n"))


def render_terminal(ex: RenderedExample, color: bool) -> str:
    """The example's text with newlines shown as ↵; trained tokens in green (``color``) or
    between ``[[`` and ``]]``. Token boundaries alternate shades in colour."""
    out: list[str] = []
    trained_before = False
    for k, (piece, label) in enumerate(zip(ex.pieces, ex.labels, strict=True)):
        text = piece.replace("\n", NEWLINE + "\n")
        trained = label != IGNORE_INDEX
        if color:
            styles = TRAINED_STYLES if trained else MASKED_STYLES
            out.append(_ansi(text, styles[k % 2]))
        else:
            if trained != trained_before:
                out.append(OPEN if trained else CLOSE)
            out.append(text)
        trained_before = trained
    if trained_before and not color:
        out.append(CLOSE)
    return ("  " + "".join(out).replace("\n", "\n  ")).rstrip()


def status_word(check: Check, color: bool) -> str:
    word = f"{check.status:<4}"
    return f"{STATUS_STYLES[check.status]}{word}{RESET}" if color else word


def check_line(check: Check, color: bool) -> str:
    return f"{status_word(check, color)}  {check.name:<13} {check.detail}"


# ----------------------------------------------------------------------------- HTML

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
