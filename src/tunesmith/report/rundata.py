"""Everything a report shows about one run, read from its directory."""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from tunesmith.errors import UserError


class ReportError(UserError):
    """The path given is not a run directory, or one of its files cannot be read."""


@dataclass
class RunData:
    path: Path
    metrics: list[dict[str, Any]]
    config: dict[str, Any] = field(default_factory=dict)
    env: dict[str, Any] = field(default_factory=dict)
    evals: dict[str, dict[str, Any]] = field(default_factory=dict)  # file name -> results
    forgetting: dict[str, Any] | None = None

    @property
    def name(self) -> str:
        return self.path.name

    def rows(self, split: str) -> list[dict[str, Any]]:
        return [r for r in self.metrics if r.get("split", "train") == split]

    def series(self, split: str, key: str) -> list[tuple[float, float]]:
        """``(step, value)`` of every row of ``split`` that has a number under ``key``."""
        return [
            (float(r.get("step", 0)), float(r[key]))
            for r in self.rows(split)
            if isinstance(r.get(key), int | float) and not isinstance(r.get(key), bool)
        ]

    def keys(self, split: str) -> list[str]:
        """Numeric keys logged for ``split``, in first-seen order."""
        seen: dict[str, None] = {}
        for r in self.rows(split):
            for k, v in r.items():
                if isinstance(v, int | float) and not isinstance(v, bool):
                    seen.setdefault(k, None)
        return [k for k in seen if k not in ("step", "time")]


def _read_json(path: Path) -> Any:
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError) as e:
        raise ReportError(f"{path}: cannot read ({e})") from None


def _read_metrics(path: Path) -> list[dict[str, Any]]:
    rows = []
    for line_no, line in enumerate(path.read_text(encoding="utf-8").splitlines(), 1):
        if not line.strip():
            continue
        try:
            rows.append(json.loads(line))
        except ValueError:
            # a run killed mid-write leaves a partial last line; anything else is an error
            if line_no == len(path.read_text(encoding="utf-8").splitlines()):
                break
            raise ReportError(f"{path}:{line_no}: not a JSON line") from None
    return rows


def load_run(path: str | Path) -> RunData:
    """Read ``metrics.jsonl``, ``config.yaml``, ``env.json``, ``eval*.json`` and
    ``forgetting.json`` of a run dir (only ``metrics.jsonl`` is required)."""
    run = Path(path)
    metrics_file = run / "metrics.jsonl"
    if not metrics_file.is_file():
        raise ReportError(f"{run}: not a run directory (no metrics.jsonl)")
    config_file, env_file = run / "config.yaml", run / "env.json"
    config = yaml.safe_load(config_file.read_text()) if config_file.is_file() else {}
    env = _read_json(env_file) if env_file.is_file() else {}
    evals = {p.name: _read_json(p) for p in sorted(run.glob("eval*.json"))}
    forgetting_file = run / "forgetting.json"
    forgetting = _read_json(forgetting_file) if forgetting_file.is_file() else None
    return RunData(run, _read_metrics(metrics_file), config or {}, env, evals, forgetting)
