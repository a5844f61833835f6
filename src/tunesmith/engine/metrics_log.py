"""Metrics: one JSON line per step or evaluation in ``metrics.jsonl``."""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Any


class MetricsLog:
    """Appends records to ``metrics.jsonl`` (appending keeps earlier lines on resume)."""

    def __init__(self, path: Path):
        self.path = path
        self._fh = path.open("a", encoding="utf-8")

    def write(self, record: dict[str, Any]) -> None:
        self._fh.write(json.dumps({"time": round(time.time(), 3), **record}) + "\n")
        self._fh.flush()

    def close(self) -> None:
        self._fh.close()


class NullLog(MetricsLog):
    """What ranks other than 0 log to: nothing."""

    def __init__(self) -> None:
        pass

    def write(self, record: dict[str, Any]) -> None:
        pass

    def close(self) -> None:
        pass


def read_metrics(path: Path) -> list[dict[str, Any]]:
    with path.open(encoding="utf-8") as fh:
        return [json.loads(line) for line in fh if line.strip()]


def rewrite_metrics(path: Path, rows: list[dict[str, Any]]) -> None:
    """Replace ``metrics.jsonl`` with ``rows`` (a resume drops what followed its checkpoint)."""
    tmp = path.with_name(f".{path.name}.tmp")
    with tmp.open("w", encoding="utf-8") as fh:
        for row in rows:
            fh.write(json.dumps(row) + "\n")
    tmp.replace(path)
