"""Every shipped training recipe evaluates at least 5 times over its run, for its own data, and
``train.eval_every`` given as a fraction of the run means what it says."""

from __future__ import annotations

from pathlib import Path

import pytest

from tunesmith.cli import recipes_dir
from tunesmith.config import ConfigError, load_config
from tunesmith.engine.trainable import due, total_steps

ROOT = recipes_dir().parent


def _recipes() -> list[Path]:
    return [p for p in sorted(recipes_dir().rglob("*.yaml")) if "prep" not in p.parts]


def _records(paths: list[str]) -> int:
    return sum(
        sum(1 for line in (ROOT / p).read_text().splitlines() if line.strip()) for p in paths
    )


def _train_items(cfg: object) -> int:
    """Training records of the recipe's data (its val_fraction share held out)."""
    data = cfg.data  # type: ignore[attr-defined]
    specs = data.train if isinstance(data.train, list) else [data.train]
    paths: list[str] = []
    for spec in specs:
        path = spec if isinstance(spec, str) else spec.path
        paths += [path] if isinstance(path, str) else path
    n = _records(paths)
    fraction = getattr(data, "val_fraction", None) or 0.0
    return n - round(n * fraction) if not getattr(data, "validation", None) else n


def evaluations(every: int | float | None, total: int) -> int:
    return sum(due(step, every, total) for step in range(1, total + 1))


@pytest.mark.parametrize("path", _recipes(), ids=lambda p: p.stem)
def test_recipe_evaluates_at_least_five_times(path: Path) -> None:
    cfg = load_config(path)
    total = total_steps(cfg.train, _train_items(cfg))
    n = evaluations(cfg.train.eval_every, total)
    assert n >= 5, f"{path.name}: {n} evaluations over {total} steps"


@pytest.mark.parametrize(("every", "total", "expected"), [(0.2, 34, 6), (0.2, 5, 5), (0.5, 3, 3)])
def test_fractional_eval_every_counts(every: float, total: int, expected: int) -> None:
    assert evaluations(every, total) == expected


def test_integer_eval_every_is_steps() -> None:
    assert [s for s in range(1, 35) if due(s, 10, 34)] == [10, 20, 30, 34]


@pytest.mark.parametrize("bad", ["1.5", "0.0", "0"])
def test_bad_eval_every_is_a_config_error(tmp_path: Path, bad: str) -> None:
    path = tmp_path / "c.yaml"
    path.write_text(f"data:\n  train: d.jsonl\ntrain:\n  eval_every: {bad}\n")
    with pytest.raises(ConfigError, match="eval_every"):
        load_config(path)
