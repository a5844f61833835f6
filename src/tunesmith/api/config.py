"""Configs from Python: a path, a dict or a config object in, a validated config out; ``prep``."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from pydantic import BaseModel

ConfigLike = str | Path | dict[str, Any] | BaseModel


def load_config(path_or_dict: ConfigLike, overrides: list[str] | None = None) -> Any:
    """A validated training config (the method's config class) from a YAML path, a dict, or a
    config object, with ``key.sub=value`` overrides applied; errors name the file, line, field."""
    from tunesmith.config import load_config as _load

    if isinstance(path_or_dict, BaseModel):
        if not overrides:
            return path_or_dict
        return _load(None, overrides, base=path_or_dict.model_dump(mode="json"))
    if isinstance(path_or_dict, dict):
        return _load(None, overrides, base=path_or_dict)
    return _load(path_or_dict, overrides)


@dataclass
class PrepResult:
    """What ``prep`` wrote: the output directory and the headline counts."""

    output_dir: Path
    counts: dict[str, Any]
    splits: dict[str, Any]
    removed_by_rule: dict[str, int]
    leakage_moved: int
    summary: dict[str, Any] = field(repr=False)


def prep(config: ConfigLike, overrides: list[str] | None = None) -> PrepResult:
    """Dedup, filter, scrub PII and split raw data (a prep config: path, dict or object)."""
    from tunesmith.config import load_model
    from tunesmith.prep import PrepConfig, run_prep

    if isinstance(config, PrepConfig) and not overrides:
        cfg = config
    elif isinstance(config, BaseModel | dict):
        base = config.model_dump(mode="json") if isinstance(config, BaseModel) else config
        cfg = load_model(PrepConfig, None, overrides, base=dict(base))
    else:
        cfg = load_model(PrepConfig, config, overrides)
    result = run_prep(cfg)
    summary = result.summary()
    counts = {k: v for k, v in result.report["counts"].items()}
    return PrepResult(
        output_dir=Path(summary["output_dir"]),
        counts=counts,
        splits=summary["splits"],
        removed_by_rule=summary["removed_by_rule"],
        leakage_moved=summary["leakage_moved"],
        summary=summary,
    )
