"""Self-contained HTML reports: inline SVG bar charts and histograms, no JavaScript, no CDN.

The pages open offline in any browser and survive being mailed or archived. Every chart is an
``<svg class="chart ...">`` with a ``data-chart`` name; every bar is a ``<rect class="bar">`` with
``data-label`` and ``data-value`` and a ``<title>`` tooltip, so tests (and people) can read the
numbers back.
"""

from __future__ import annotations

import html
from collections.abc import Sequence

PALETTE: tuple[str, ...] = ("#4C78A8", "#F58518", "#54A24B", "#E45756", "#72B7B2", "#B279A2")

_CSS = """
body { font-family: system-ui, -apple-system, Segoe UI, Roboto, sans-serif; margin: 2rem auto;
       max-width: 960px; color: #222; padding: 0 1rem; }
h1 { font-size: 1.6rem; } h2 { font-size: 1.2rem; margin-top: 2rem;
     border-bottom: 1px solid #ddd; padding-bottom: .3rem; }
table { border-collapse: collapse; margin: .5rem 0; font-size: .9rem; }
th, td { border: 1px solid #ddd; padding: .25rem .6rem; text-align: right; }
th:first-child, td:first-child { text-align: left; }
th { background: #f4f4f4; }
svg.chart { display: block; margin: .5rem 0 1rem; }
svg.chart text { font-size: 12px; fill: #333; }
pre { background: #f7f7f7; padding: .8rem; overflow-x: auto; font-size: .8rem; }
.charts { display: flex; flex-wrap: wrap; gap: 1rem; }
"""


def esc(value: object) -> str:
    """HTML-escaped text of ``value``."""
    return html.escape(str(value), quote=True)


def _fmt(value: float) -> str:
    return f"{value:,.0f}" if float(value).is_integer() else f"{value:,.3g}"


def bar_chart(
    data: Sequence[tuple[str, float]],
    *,
    title: str,
    chart_id: str,
    width: int = 640,
    color: str = PALETTE[0],
) -> str:
    """A horizontal bar chart, one labelled bar per ``(label, value)``, as inline SVG."""
    row_h, top, label_w, value_w = 22, 28, 170, 70
    plot_w = max(width - label_w - value_w, 50)
    height = top + row_h * max(len(data), 1) + 8
    peak = max((v for _, v in data), default=0) or 1
    parts = [
        f'<svg class="chart bar-chart" data-chart="{esc(chart_id)}" role="img" '
        f'aria-label="{esc(title)}" xmlns="http://www.w3.org/2000/svg" width="{width}" '
        f'height="{height}" viewBox="0 0 {width} {height}">',
        f'<text x="0" y="16" font-weight="bold">{esc(title)}</text>',
    ]
    if not data:
        parts.append(f'<text x="{label_w}" y="{top + 15}">no data</text>')
    for i, (label, value) in enumerate(data):
        y = top + i * row_h
        w = plot_w * value / peak
        parts += [
            f'<text x="{label_w - 8}" y="{y + 15}" text-anchor="end">{esc(label)}</text>',
            f'<rect class="bar" data-label="{esc(label)}" data-value="{value:g}" x="{label_w}" '
            f'y="{y + 3}" width="{w:.1f}" height="{row_h - 6}" fill="{color}">'
            f"<title>{esc(label)}: {_fmt(value)}</title></rect>",
            f'<text x="{label_w + w + 6:.1f}" y="{y + 15}">{_fmt(value)}</text>',
        ]
    parts.append("</svg>")
    return "\n".join(parts)


def histogram(
    edges: Sequence[float],
    counts: Sequence[int],
    *,
    title: str,
    chart_id: str,
    x_label: str,
    width: int = 460,
    height: int = 240,
    color: str = PALETTE[0],
) -> str:
    """A histogram of precomputed bins (``len(edges) == len(counts) + 1``) as inline SVG."""
    if len(edges) != len(counts) + 1:
        raise ValueError(f"need len(edges) == len(counts) + 1, got {len(edges)}, {len(counts)}")
    left, right, top, bottom = 48, 12, 28, 40
    plot_w, plot_h = width - left - right, height - top - bottom
    peak = max(counts, default=0) or 1
    parts = [
        f'<svg class="chart histogram" data-chart="{esc(chart_id)}" role="img" '
        f'aria-label="{esc(title)}" xmlns="http://www.w3.org/2000/svg" width="{width}" '
        f'height="{height}" viewBox="0 0 {width} {height}">',
        f'<text x="0" y="16" font-weight="bold">{esc(title)}</text>',
        f'<line x1="{left}" y1="{top + plot_h}" x2="{left + plot_w}" y2="{top + plot_h}" '
        'stroke="#888"/>',
        f'<line x1="{left}" y1="{top}" x2="{left}" y2="{top + plot_h}" stroke="#888"/>',
        f'<text x="{left - 6}" y="{top + 10}" text-anchor="end">{_fmt(peak)}</text>',
        f'<text x="{left - 6}" y="{top + plot_h}" text-anchor="end">0</text>',
    ]
    if not counts or sum(counts) == 0:
        parts.append(f'<text x="{left + 10}" y="{top + plot_h / 2}">no data</text>')
    bin_w = plot_w / max(len(counts), 1)
    for i, count in enumerate(counts):
        h = plot_h * count / peak
        lo, hi = edges[i], edges[i + 1]
        parts.append(
            f'<rect class="bar" data-label="{lo:g}-{hi:g}" data-value="{count}" '
            f'x="{left + i * bin_w + 0.5:.1f}" y="{top + plot_h - h:.1f}" '
            f'width="{max(bin_w - 1, 0.5):.1f}" height="{h:.1f}" fill="{color}">'
            f"<title>{lo:g}-{hi:g}: {count}</title></rect>"
        )
    if len(edges) >= 2:
        for x, value in ((left, edges[0]), (left + plot_w, edges[-1])):
            parts.append(
                f'<text x="{x}" y="{top + plot_h + 14}" text-anchor="middle">{_fmt(value)}</text>'
            )
    parts.append(
        f'<text x="{left + plot_w / 2}" y="{height - 6}" text-anchor="middle">{esc(x_label)}</text>'
    )
    parts.append("</svg>")
    return "\n".join(parts)


def table(header: Sequence[str], rows: Sequence[Sequence[object]]) -> str:
    """An HTML table; numbers are formatted with thousands separators."""

    def cell(value: object, tag: str) -> str:
        text = (
            _fmt(value) if isinstance(value, int | float) and not isinstance(value, bool) else value
        )
        return f"<{tag}>{esc(text)}</{tag}>"

    head = "".join(cell(h, "th") for h in header)
    body = "\n".join("<tr>" + "".join(cell(v, "td") for v in row) + "</tr>" for row in rows)
    return f"<table>\n<tr>{head}</tr>\n{body}\n</table>"


def page(title: str, sections: Sequence[tuple[str, str]], subtitle: str = "") -> str:
    """A complete HTML document: ``sections`` are ``(heading, html)`` pairs, shown in order."""
    body = "\n".join(
        f"<section>\n<h2>{esc(h)}</h2>\n{content}\n</section>" for h, content in sections
    )
    sub = f"<p>{esc(subtitle)}</p>" if subtitle else ""
    return (
        '<!DOCTYPE html>\n<html lang="en">\n<head>\n<meta charset="utf-8">\n'
        f"<title>{esc(title)}</title>\n<style>{_CSS}</style>\n</head>\n<body>\n"
        f"<h1>{esc(title)}</h1>\n{sub}\n{body}\n</body>\n</html>\n"
    )
