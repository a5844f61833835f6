"""Line charts as inline SVG (no JavaScript, no network), in the style of ``report_html``.

Every chart is an ``<svg class="chart line-chart" data-chart=NAME>``; every series a
``<polyline class="series" data-series=NAME data-points=N>`` (a single point is a ``<circle>``),
so tests and people can read the plotted numbers back.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

from tunesmith.report.html import PALETTE, esc

Series = tuple[str, Sequence[tuple[float, float]]]


def nice_ticks(lo: float, hi: float, count: int = 5) -> list[float]:
    """Round tick values covering [lo, hi], about ``count`` of them, spaced 1, 2 or 5 x 10^k."""
    if not (math.isfinite(lo) and math.isfinite(hi)):
        return [0.0, 1.0]
    if hi <= lo:
        pad = abs(lo) * 0.05 or 0.5
        lo, hi = lo - pad, hi + pad
    raw = (hi - lo) / max(count, 1)
    mag = 10 ** math.floor(math.log10(raw))
    step = next(m * mag for m in (1, 2, 5, 10) if m * mag >= raw)
    first = math.floor(lo / step) * step
    ticks = []
    value = first
    while value < hi + step * 0.999:
        ticks.append(round(value, 12))
        value += step
    return ticks


def _label(value: float) -> str:
    if value == 0:
        return "0"
    if abs(value) >= 1e4 or abs(value) < 1e-3:
        return f"{value:.1e}"
    return f"{value:.4g}"


def _frame(
    x_ticks: list[float], y_ticks: list[float], box: tuple[float, float, float, float]
) -> list[str]:
    """Axes, grid lines and tick labels; ``box`` = (left, top, width, height)."""
    left, top, w, h = box
    x0, x1, y0, y1 = x_ticks[0], x_ticks[-1], y_ticks[0], y_ticks[-1]
    parts = [f'<rect x="{left}" y="{top}" width="{w}" height="{h}" fill="none" stroke="#888"/>']
    for t in y_ticks:
        y = top + h - (t - y0) / (y1 - y0) * h
        parts.append(
            f'<line x1="{left}" y1="{y:.1f}" x2="{left + w}" y2="{y:.1f}" stroke="#eee"/>'
            f'<text x="{left - 5}" y="{y + 4:.1f}" text-anchor="end">{_label(t)}</text>'
        )
    for t in x_ticks:
        x = left + (t - x0) / (x1 - x0) * w
        parts.append(
            f'<text x="{x:.1f}" y="{top + h + 14}" text-anchor="middle">{_label(t)}</text>'
        )
    return parts


def _series_svg(
    index: int,
    name: str,
    points: Sequence[tuple[float, float]],
    scale: tuple[float, float, float, float, float, float, float, float],
) -> str:
    left, top, w, h, x0, x1, y0, y1 = scale
    color = PALETTE[index % len(PALETTE)]
    xy = [(left + (x - x0) / (x1 - x0) * w, top + h - (y - y0) / (y1 - y0) * h) for x, y in points]
    attrs = f'class="series" data-series="{esc(name)}" data-points="{len(points)}"'
    if len(xy) == 1:
        (x, y), (px, py) = xy[0], points[0]
        return (
            f'<circle {attrs} cx="{x:.1f}" cy="{y:.1f}" r="3.5" fill="{color}">'
            f"<title>{esc(name)}: {_label(px)}, {_label(py)}</title></circle>"
        )
    coords = " ".join(f"{x:.1f},{y:.1f}" for x, y in xy)
    last = points[-1]
    return (
        f'<polyline {attrs} points="{coords}" fill="none" stroke="{color}" stroke-width="1.6">'
        f"<title>{esc(name)}: last {_label(last[0])}, {_label(last[1])}</title></polyline>"
    )


def line_chart(
    series: Sequence[Series],
    *,
    title: str,
    chart_id: str,
    x_label: str = "step",
    width: int = 460,
    height: int = 260,
) -> str:
    """One or more ``(name, [(x, y), ...])`` series on shared axes, with a legend."""
    finite = [
        (name, [(float(x), float(y)) for x, y in pts if math.isfinite(x) and math.isfinite(y)])
        for name, pts in series
    ]
    finite = [(n, p) for n, p in finite if p]
    legend_rows = math.ceil(len(finite) / 3) if len(finite) > 1 else 0
    left, right, top, bottom = 58, 14, 28 + 16 * legend_rows, 40
    w, h = width - left - right, height - top - bottom
    parts = [
        f'<svg class="chart line-chart" data-chart="{esc(chart_id)}" role="img" '
        f'aria-label="{esc(title)}" xmlns="http://www.w3.org/2000/svg" width="{width}" '
        f'height="{height}" viewBox="0 0 {width} {height}">',
        f'<text x="0" y="16" font-weight="bold">{esc(title)}</text>',
    ]
    if not finite:
        parts += [f'<text x="{left}" y="{top + 20}">no data</text>', "</svg>"]
        return "\n".join(parts)
    xs = [x for _, pts in finite for x, _ in pts]
    ys = [y for _, pts in finite for _, y in pts]
    x_ticks, y_ticks = nice_ticks(min(xs), max(xs)), nice_ticks(min(ys), max(ys))
    parts += _frame(x_ticks, y_ticks, (left, top, w, h))
    scale = (left, top, w, h, x_ticks[0], x_ticks[-1], y_ticks[0], y_ticks[-1])
    for i, (name, pts) in enumerate(finite):
        parts.append(_series_svg(i, name, pts, scale))
        if legend_rows:
            lx, ly = (i % 3) * (width // 3), 24 + 16 * (i // 3)
            parts.append(
                f'<rect x="{lx}" y="{ly}" width="10" height="10" '
                f'fill="{PALETTE[i % len(PALETTE)]}"/><text x="{lx + 14}" y="{ly + 9}">'
                f"{esc(name[:40])}</text>"
            )
    parts.append(
        f'<text x="{left + w / 2}" y="{height - 6}" text-anchor="middle">{esc(x_label)}</text>'
    )
    parts.append("</svg>")
    return "\n".join(parts)
