"""Finding run directories under the runs folder and summarising each one (pure functions).

A run directory holds ``metrics.jsonl``, ``config.yaml`` or a ``FAILED`` marker; the scan goes
three levels deep so a sweep's trials (``<sweep>/trials/<name>``) are found, and never descends
into a run directory (its ``checkpoints/step-N`` hold a ``config.yaml`` too) or follows a
symlink out of the folder.

A run's state comes from the markers :mod:`tunesmith.engine.run` writes:

* ``failed``: a ``FAILED`` marker (a start refused for its data);
* ``pruned``: a ``PRUNED`` marker (a sweep's pruner stopped it);
* ``finished``: ``final/`` exists (every method exports it atomically as its last act);
* ``running``: none of those, and the process the board's Launch page recorded for it is alive
  or (a run started elsewhere) ``metrics.jsonl`` / ``config.yaml`` changed within
  :data:`RUNNING_WINDOW_S` seconds;
* ``stopped``: none of those: killed or interrupted (resumable with ``train.resume=true`` when it
  holds a checkpoint).
"""

from __future__ import annotations

import json
import math
import os
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from tunesmith.report.method_panels import BEST, DEFAULT_BEST

RUNNING_WINDOW_S = 120.0
SCAN_DEPTH = 3
STATES = ("running", "finished", "failed", "pruned", "stopped")
NOT_RUNS = frozenset({"checkpoints", "final", "best", "data", "__pycache__"})
LAUNCH_DIR = ".launch"  # the Launch page's records of the runs it started
THROUGHPUT_ROWS = 20  # tokens/s: the mean over the last this many train rows


@dataclass(frozen=True)
class BestValue:
    """The method's headline held-out metric: its label, value and direction."""

    label: str
    value: float
    higher_is_better: bool


@dataclass(frozen=True)
class RunSummary:
    """One row of the runs list; ``path`` is relative to the runs folder."""

    path: str
    method: str
    state: str
    started: float | None  # epoch seconds
    steps: int
    best: BestValue | None
    tokens_per_s: float | None
    base_model: str | None


def is_run(path: Path) -> bool:
    """``path`` is a run directory: it holds ``metrics.jsonl`` or ``config.yaml``, or the
    ``FAILED`` marker of a start refused for its data (beside its ``rejects.jsonl``)."""
    return any((path / name).is_file() for name in ("metrics.jsonl", "config.yaml", "FAILED"))


def find_runs(root: Path, depth: int = SCAN_DEPTH) -> list[Path]:
    """Every run directory under ``root`` (``depth`` levels), sorted, symlinks out skipped."""
    real_root = root.resolve()
    found: list[Path] = []

    def walk(folder: Path, level: int) -> None:
        try:
            children = sorted(p for p in folder.iterdir() if p.is_dir())
        except OSError:
            return
        for child in children:
            real = child.resolve()
            hidden = child.name.startswith(".") or child.name in NOT_RUNS
            if hidden or (real != real_root and real_root not in real.parents):
                continue
            if is_run(child):
                found.append(child)
            elif level < depth:
                walk(child, level + 1)

    if root.is_dir():
        walk(root, 1)
    return found


def read_metrics(path: Path) -> list[dict[str, Any]]:
    """The rows of a ``metrics.jsonl``; a line that is not JSON (a partial last write) is
    skipped, so a live run always reads."""
    if not path.is_file():
        return []
    rows = []
    for line in path.read_text(encoding="utf-8", errors="replace").splitlines():
        try:
            row = json.loads(line)
        except ValueError:
            continue
        if isinstance(row, dict):
            rows.append(row)
    return rows


def read_config(run: Path) -> dict[str, Any]:
    """``config.yaml`` of ``run`` as a dict ({} when absent or unreadable)."""
    import yaml

    try:
        data = yaml.safe_load((run / "config.yaml").read_text(encoding="utf-8"))
    except (OSError, yaml.YAMLError):
        return {}
    return data if isinstance(data, dict) else {}


def _number(value: Any) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool) and math.isfinite(value)


def series(rows: list[dict[str, Any]], split: str, key: str) -> list[float]:
    """The values of ``key`` in the rows of ``split`` (rows without a split are ``train``)."""
    return [r[key] for r in rows if r.get("split", "train") == split and _number(r.get(key))]


def best_value(method: str, rows: list[dict[str, Any]]) -> BestValue | None:
    """The first of the method's best-value metrics (``report.method_panels.BEST``) it logged,
    picked in the metric's direction; None when it logged none of them."""
    for best in BEST.get(method, DEFAULT_BEST):
        values = series(rows, best.split, best.key)
        if values:
            return BestValue(best.label, float(best.pick(values)), best.pick is max)
    return None


def launched_pid(run: Path) -> int | None:
    """The process id the board's Launch page recorded for ``run`` (``<runs>/.launch/<name>.json``
    beside it), or None when the board did not start it."""
    try:
        job = json.loads((run.parent / LAUNCH_DIR / f"{run.name}.json").read_text("utf-8"))
    except (OSError, ValueError):
        return None
    pid = job.get("pid") if isinstance(job, dict) else None
    return pid if isinstance(pid, int) and pid > 0 else None


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # it exists, owned by another user
        return True
    return True


def run_state(run: Path, now: float | None = None) -> str:
    """One of :data:`STATES`, from the markers the run lifecycle writes (see module doc)."""
    if (run / "FAILED").is_file():
        return "failed"
    if (run / "PRUNED").is_file():
        return "pruned"
    if (run / "final").is_dir():
        return "finished"
    if (pid := launched_pid(run)) is not None:  # started by the board: its process says
        return "running" if _alive(pid) else "stopped"
    now = time.time() if now is None else now
    stamps = [p.stat().st_mtime for p in (run / "metrics.jsonl", run / "config.yaml") if p.exists()]
    if stamps and now - max(stamps) <= RUNNING_WINDOW_S:
        return "running"
    return "stopped"


def _started(run: Path, rows: list[dict[str, Any]]) -> float | None:
    times = [r["time"] for r in rows[:5] if _number(r.get("time"))]
    if times:
        return float(min(times))
    config = run / "config.yaml"
    return config.stat().st_mtime if config.is_file() else None


def _base_model(run: Path, config: dict[str, Any]) -> str | None:
    try:
        env = json.loads((run / "env.json").read_text(encoding="utf-8"))
    except (OSError, ValueError):
        env = {}
    model = config.get("model")
    name = model.get("name_or_path") if isinstance(model, dict) else None
    found = (env.get("base_model") if isinstance(env, dict) else None) or name
    return str(found) if found else None


def summarize(root: Path, run: Path, now: float | None = None) -> RunSummary:
    """The runs-list row of ``run`` (a directory under ``root``)."""
    rows = read_metrics(run / "metrics.jsonl")
    config = read_config(run)
    method = str(config.get("method") or "?")
    steps = [int(r["step"]) for r in rows if _number(r.get("step"))]
    speed = series(rows, "train", "tokens_per_s")[-THROUGHPUT_ROWS:]
    return RunSummary(
        path=run.relative_to(root).as_posix(),
        method=method,
        state=run_state(run, now),
        started=_started(run, rows),
        steps=max(steps, default=0),
        best=best_value(method, rows),
        tokens_per_s=sum(speed) / len(speed) if speed else None,
        base_model=_base_model(run, config),
    )


def list_runs(
    root: Path, method: str | None = None, state: str | None = None, now: float | None = None
) -> list[RunSummary]:
    """Every run under ``root``, newest first, keeping only ``method`` / ``state`` if given."""
    rows = [summarize(root, r, now) for r in find_runs(root)]
    rows = [
        r for r in rows if (not method or r.method == method) and (not state or r.state == state)
    ]
    return sorted(rows, key=lambda r: (r.started or 0.0, r.path), reverse=True)


def flat(data: Any, prefix: str = "") -> dict[str, Any]:
    """``{"train": {"lr": 1}}`` -> ``{"train.lr": 1}`` (lists stay whole values)."""
    if not isinstance(data, dict):
        return {prefix: data}
    out: dict[str, Any] = {}
    for key, value in data.items():
        out.update(flat(value, f"{prefix}.{key}" if prefix else str(key)))
    return out


def config_diff(configs: list[dict[str, Any]]) -> list[tuple[str, list[Any]]]:
    """The flattened keys whose values differ between ``configs``, with each one's value
    (``None`` where a config lacks the key), sorted by key."""
    flats = [flat(c) for c in configs]
    keys = sorted(set().union(*flats)) if flats else []
    out = []
    for key in keys:
        values = [f.get(key) for f in flats]
        if any(v != values[0] for v in values[1:]):
            out.append((key, values))
    return out


def read_rejects(path: Path, page: int, per_page: int = 50) -> tuple[list[dict[str, Any]], int]:
    """Rows ``page * per_page`` onwards of a ``rejects.jsonl`` (a line that is not a JSON object
    is shown as ``{"raw": line}``) and the file's row count."""
    rows: list[dict[str, Any]] = []
    total = 0
    start = page * per_page
    if not path.is_file():
        return rows, 0
    with path.open(encoding="utf-8", errors="replace") as fh:
        for line in fh:
            if not line.strip():
                continue
            if start <= total < start + per_page:
                try:
                    row = json.loads(line)
                except ValueError:
                    row = None
                rows.append(row if isinstance(row, dict) else {"raw": line.rstrip("\n")})
            total += 1
    return rows, total
