"""The ``tunesmith prep`` HTML page: what was kept, dropped and why, lengths, tags."""

from __future__ import annotations

from typing import Any

import yaml

from tunesmith.report import html as rh


def _summary_html(report: dict[str, Any]) -> str:
    counts = report["counts"]
    rows: list[list[object]] = [["input rows", counts["input"]], ["kept", counts["kept"]]]
    rows += [[f"kept in {name}", n] for name, n in report["splits"].items()]
    rows += [["rejected", counts["rejected"]], ["token counter", report["token_counter"]]]
    leak = report["leakage"]
    rows += [
        ["leakage: records moved", leak["moved_total"]],
        ["leakage: removed (test file overlap)", leak["removed_test_overlap"]],
    ]
    return rh.table(["", "count"], rows)


def _histograms_html(report: dict[str, Any]) -> str:
    charts = [
        rh.histogram(
            stats["histogram"]["edges"],
            stats["histogram"]["counts"],
            title=f"{name} ({stats['count']} records)",
            chart_id=f"tokens-{name}",
            x_label="tokens per example",
            color=rh.PALETTE[i % len(rh.PALETTE)],
        )
        for i, (name, stats) in enumerate(report["token_lengths"].items())
    ]
    return f'<div class="charts">{"".join(charts)}</div>'


def _tags_html(report: dict[str, Any]) -> str:
    tags = report["tags"]
    if not tags:
        return "<p>no records</p>"
    columns = list(next(iter(tags.values())))
    table = rh.table(["tag", *columns], [[t, *c.values()] for t, c in sorted(tags.items())])
    chart = rh.bar_chart(
        [(t, c["kept"]) for t, c in sorted(tags.items())],
        title="kept records per tag",
        chart_id="tags",
        color=rh.PALETTE[2],
    )
    return chart + table


def render_html(report: dict[str, Any]) -> str:
    """The report as one self-contained HTML page with inline SVG plots."""
    rules = list(report["removed_by_rule"].items())
    pii = report["pii"]
    pii_note = (
        f"<p>scrubbed fields: {rh.esc(', '.join(pii['fields']))}; records with PII: "
        f"{pii['records_with_pii']}</p>"
        if pii["fields"]
        else "<p>PII scrubbing off</p>"
    )
    sections = [
        ("Summary", _summary_html(report)),
        (
            "Removed records per rule",
            rh.bar_chart(
                rules, title="removed records per rule", chart_id="rules", color=rh.PALETTE[3]
            ),
        ),
        ("Token length per split", _histograms_html(report)),
        ("Tags", _tags_html(report)),
        (
            "PII replaced",
            pii_note
            + rh.bar_chart(
                list(pii["replaced"].items()),
                title="placeholders by type",
                chart_id="pii",
                color=rh.PALETTE[4],
            ),
        ),
        ("Config", f"<pre>{rh.esc(yaml.safe_dump(report['config'], sort_keys=False))}</pre>"),
    ]
    subtitle = f"{report['counts']['input']} rows in {report['seconds']} s"
    return rh.page("tunesmith prep report", sections, subtitle=subtitle)
