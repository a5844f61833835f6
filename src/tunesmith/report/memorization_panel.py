"""The run report's memorisation panel, from ``<run>/memorization.json``
(``tunesmith probe memorization RUN``): exposure per canary and regurgitation / PII per split,
tuned beside base."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from tunesmith.report.html import esc, table


def _num(value: Any) -> str:
    return f"{value:.3f}" if isinstance(value, float) else esc(value)


def _canaries(result: dict[str, Any]) -> str:
    tuned, base = result.get("tuned", {}), result.get("base", {})
    rows = []
    for i, c in enumerate(tuned.get("canaries", [])):
        b = base.get("canaries", [])[i] if i < len(base.get("canaries", [])) else {}
        rows.append([c["name"], c["rank"], _num(c["exposure"]), b.get("rank", ""),
                     _num(b.get("exposure", ""))])  # fmt: skip
    if not rows:
        return "<p>no canaries (plant them with <code>tunesmith prep --canaries N</code>)</p>"
    return table(["canary", "rank (tuned)", "exposure (tuned)", "rank (base)", "exposure (base)"],
                 rows)  # fmt: skip


def _splits(result: dict[str, Any]) -> str:
    rows = []
    for label in ("tuned", "base"):
        r = result.get(label)
        if r is None:
            continue
        row: list[object] = [label, _num(r.get("mean_exposure", ""))]
        for split in ("train", "held_out"):
            s = r.get(split, {})
            row += [_num(s.get("exact_rate", "")), _num(s.get("near_rate", ""))]
        row.append(f"{r['pii']['with_pii']} / {r['pii']['generations']}")
        rows.append(row)
    header = ["model", "mean exposure", "train exact", "train near", "held-out exact",
              "held-out near", "generations with PII"]  # fmt: skip
    return table(header, rows)


def memorization_section(run_dir: Path) -> str | None:
    """The panel's HTML, or None when the run has no ``memorization.json``."""
    path = Path(run_dir) / "memorization.json"
    if not path.is_file():
        return None
    result = json.loads(path.read_text())
    return _splits(result) + "\n" + _canaries(result)
