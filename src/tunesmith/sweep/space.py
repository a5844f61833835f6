"""The search space: a YAML file mapping config keys to distributions, checked against the method.

::

    optim.lr: {log_uniform: [1.0e-5, 1.0e-2]}   # sampled uniformly in log space
    optim.warmup_ratio: {uniform: [0.0, 0.1]}
    train.grad_accum: {int: [1, 4]}               # integers, both ends included
    lora.r: {choice: [4, 8, 16]}                  # categorical

A key the method's config does not have is an error naming the space file, the line and the
nearest valid key (the same suggestion ``tunesmith train`` gives for a config); every range end
and every choice is validated by building the config with it, so a value the config would refuse
fails before the first trial.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

from tunesmith.config import BaseRunConfig, ConfigError, load_config
from tunesmith.config.load import _model_in, _nearest, _yaml_lines, apply_override
from tunesmith.errors import UserError

KINDS = ("log_uniform", "uniform", "int", "choice")
# Keys the sweep sets itself for every trial.
RESERVED = frozenset({"train.output_dir", "train.run_name", "train.resume"})


class SpaceError(UserError):
    """A bad search space: the message names the space file, the line and the key."""


@dataclass(frozen=True)
class Param:
    """One dimension: ``key`` (dotted config key), ``kind`` and its ``low``/``high`` or
    ``choices``."""

    key: str
    kind: str
    low: float | None = None
    high: float | None = None
    choices: tuple[Any, ...] = ()

    def suggest(self, trial: Any) -> Any:
        """The value an Optuna trial proposes for this dimension."""
        if self.kind == "choice":
            return trial.suggest_categorical(self.key, list(self.choices))
        if self.kind == "int":
            return trial.suggest_int(self.key, int(self.low or 0), int(self.high or 0))
        log = self.kind == "log_uniform"
        return trial.suggest_float(self.key, float(self.low or 0), float(self.high or 0), log=log)

    def probes(self) -> list[Any]:
        """The values validated against the config before the sweep starts."""
        return list(self.choices) if self.kind == "choice" else [self.low, self.high]


def config_data(config: str | Path, overrides: list[str]) -> dict[str, Any]:
    """The training config as a mapping, with the sweep's fixed overrides applied."""
    from tunesmith.config.load import _read_yaml, parse_override

    data, _ = _read_yaml(config)
    for item in overrides:
        key, value = parse_override(item)
        apply_override(data, key, value)
    return data


def _check_key(key: str, cfg: BaseRunConfig, where: str) -> None:
    """``key`` names a field of the method's config, or an error naming the nearest one."""
    if key in RESERVED:
        raise SpaceError(f"{where}: '{key}' is set by the sweep for every trial; remove it")
    current: Any = type(cfg)
    parts = key.split(".")
    for depth, part in enumerate(parts):
        fields = list(current.model_fields) if current is not None else []
        if part not in fields:
            prefix = ".".join(parts[:depth])
            close = _nearest(part, fields)
            hint = f"; did you mean '{'.'.join([*parts[:depth], close[0]])}'?" if close else ""
            raise SpaceError(
                f"{where}: unknown key '{key}' for method {cfg.method}{hint} "
                f"(valid keys {'under ' + prefix if prefix else 'here'}: {', '.join(fields)})"
            )
        annotation = current.model_fields[part].annotation
        current = _model_in(annotation)
        if current is None and depth < len(parts) - 1:
            raise SpaceError(f"{where}: '{'.'.join(parts[: depth + 1])}' is a value, not a section")
    if current is not None:
        raise SpaceError(f"{where}: '{key}' is a section; name one of its keys")


def _param(key: str, spec: Any, where: str) -> Param:
    """Parse one ``{kind: values}`` entry."""
    if not isinstance(spec, dict) or len(spec) != 1 or next(iter(spec)) not in KINDS:
        raise SpaceError(
            f"{where}: '{key}' needs one distribution: {{log_uniform: [low, high]}}, "
            "{uniform: [low, high]}, {int: [low, high]} or {choice: [a, b, ...]}"
        )
    kind, values = next(iter(spec.items()))
    if not isinstance(values, list) or not values:
        raise SpaceError(f"{where}: '{key}': {kind} needs a list of values")
    if kind == "choice":
        return Param(key, kind, choices=tuple(values))
    numeric = all(isinstance(v, int | float) and not isinstance(v, bool) for v in values)
    if len(values) != 2 or not numeric or not values[0] < values[1]:
        raise SpaceError(f"{where}: '{key}': {kind} needs [low, high] numbers with low < high")
    if kind == "log_uniform" and values[0] <= 0:
        raise SpaceError(f"{where}: '{key}': log_uniform needs low > 0 (got {values[0]})")
    if kind == "int" and not all(isinstance(v, int) for v in values):
        raise SpaceError(f"{where}: '{key}': int needs integer bounds (got {values})")
    return Param(key, kind, low=values[0], high=values[1])


def with_params(data: dict[str, Any], params: dict[str, Any]) -> dict[str, Any]:
    """A copy of the config mapping with each dotted key set to its value."""
    out = yaml.safe_load(yaml.safe_dump(data))
    for key, value in params.items():
        apply_override(out, key.split("."), value)
    return out


def load_space(path: str | Path, data: dict[str, Any]) -> list[Param]:
    """Read and validate the space file against the config ``data`` describes."""
    p = Path(path)
    if not p.is_file():
        raise SpaceError(f"{path}: space file not found")
    text = p.read_text(encoding="utf-8")
    try:
        raw = yaml.safe_load(text)
    except yaml.YAMLError as err:
        raise SpaceError(f"{path}: invalid YAML: {err}") from None
    if not isinstance(raw, dict) or not raw:
        raise SpaceError(f"{path}: expected a mapping of config keys to distributions")
    lines = _yaml_lines(text)
    cfg = load_config(None, base=data)
    params = []
    for key, spec in raw.items():
        where = f"{path}:{lines.get((str(key),), '?')}"
        _check_key(str(key), cfg, where)
        param = _param(str(key), spec, where)
        for value in param.probes():
            try:
                load_config(None, base=with_params(data, {param.key: value}))
            except ConfigError as err:
                detail = str(err).replace("invalid config:\n  <config>: ", "")
                raise SpaceError(f"{where}: {key}={value!r} is refused: {detail}") from None
        params.append(param)
    return params
