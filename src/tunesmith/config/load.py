"""Typed configuration: YAML + ``key.sub=value`` overrides, validated once at load.

Sections are small pydantic models composed per method (``method: sft`` picks :class:`SFTConfig`).
Unknown keys are errors that name the file, the line and the nearest valid key; the resolved
config (every default filled in) is written beside every checkpoint.
"""

from __future__ import annotations

import difflib
import importlib
from collections.abc import Callable
from pathlib import Path
from typing import Any, TypeVar, get_args, get_origin

import yaml
from pydantic import BaseModel, ValidationError

from tunesmith.config.sections import BaseRunConfig

# method name -> "module:ConfigClass": each method's config lives in config/<method>.py and
# imports no training loop, so `tunesmith validate` loads only configuration code.
METHODS: dict[str, str] = {
    "sft": "tunesmith.config.sft:SFTConfig",
    "dpo": "tunesmith.config.dpo:DPOConfig",
    "reward": "tunesmith.config.reward:RewardConfig",
    "ppo": "tunesmith.config.ppo:PPOConfig",
    "grpo": "tunesmith.config.grpo:GRPOConfig",
    "classify": "tunesmith.config.classify:ClassifyConfig",
    "embed": "tunesmith.config.embed:EmbedConfig",
    "distill": "tunesmith.config.distill:DistillConfig",
}


def method_config_class(method: str) -> type[BaseRunConfig]:
    """The config class registered for ``method`` (see :data:`METHODS`)."""
    module, _, name = METHODS[method].partition(":")
    cls = getattr(importlib.import_module(module), name)
    assert issubclass(cls, BaseRunConfig)
    return cls


class ConfigError(ValueError):
    """A config problem, naming the file, the line and the field."""


# ----------------------------------------------------------------------------- loading


def parse_override(text: str) -> tuple[list[str], Any]:
    """``a.b=3`` -> (["a", "b"], 3); the value is parsed as YAML so types come out right."""
    if "=" not in text:
        raise ConfigError(f"override '{text}': expected key.sub=value")
    key, _, raw = text.partition("=")
    path = [p for p in key.strip().split(".") if p]
    if not path:
        raise ConfigError(f"override '{text}': empty key")
    try:
        value = yaml.safe_load(raw) if raw.strip() else ""
    except yaml.YAMLError as e:
        raise ConfigError(f"override '{text}': value is not valid YAML ({e})") from None
    return path, value


def apply_override(data: dict[str, Any], path: list[str], value: Any) -> None:
    """Set ``value`` at ``path`` (``["tasks", "0", "limit"]``): missing mappings are created, a
    numeric part indexes into an existing list (``tasks.0.limit`` changes the first task)."""
    node: Any = data
    for depth, part in enumerate(path):
        last = depth == len(path) - 1
        if isinstance(node, list):
            if not part.isdigit() or int(part) >= len(node):
                where = ".".join(path[:depth])
                raise ConfigError(
                    f"override '{'.'.join(path)}': {where} is a list of {len(node)} item(s); "
                    f"'{part}' is not an index in it (use 0 to {len(node) - 1})"
                )
            if last:
                node[int(part)] = value
                return
            node = node[int(part)]
            continue
        if last:
            node[part] = value
            return
        child = node.get(part)
        if not isinstance(child, dict | list):
            child = {}
            node[part] = child
        node = child


def _yaml_lines(text: str) -> dict[tuple[str, ...], int]:
    """Map every key path of a YAML mapping document to its 1-based line."""
    lines: dict[tuple[str, ...], int] = {}

    def walk(node: yaml.Node, prefix: tuple[str, ...]) -> None:
        if isinstance(node, yaml.MappingNode):
            for k, v in node.value:
                path = (*prefix, str(k.value))
                lines[path] = k.start_mark.line + 1
                walk(v, path)
        elif isinstance(node, yaml.SequenceNode):
            for i, item in enumerate(node.value):
                path = (*prefix, str(i))
                lines[path] = item.start_mark.line + 1
                walk(item, path)

    root = yaml.compose(text)
    if root is not None:
        walk(root, ())
    return lines


def _section_class(cls: type[BaseModel], loc: tuple[Any, ...]) -> type[BaseModel] | None:
    """The pydantic class that owns the last element of ``loc``."""
    current: type[BaseModel] = cls
    for part in loc[:-1]:
        if isinstance(part, int):  # an item of a list of sections: same class
            continue
        field = current.model_fields.get(str(part))
        ann = getattr(field, "annotation", None) if field else None
        current_ann = _model_in(ann)
        if current_ann is None:
            return None
        current = current_ann
    return current


def _model_in(ann: Any) -> type[BaseModel] | None:
    """The section class in an annotation: ``X``, ``list[X]`` or ``X | None``."""
    if get_origin(ann) is list:
        ann = get_args(ann)[0]
    if isinstance(ann, type) and issubclass(ann, BaseModel):
        return ann
    models = [a for a in get_args(ann) if isinstance(a, type) and issubclass(a, BaseModel)]
    return models[0] if len(models) == 1 else None


def _nearest(key: str, options: list[str]) -> list[str]:
    close = difflib.get_close_matches(key, options, n=1, cutoff=0.5)
    return close or [o for o in options if key.startswith(o) or o.startswith(key)][:1]


def _for_method(cls: type[BaseModel]) -> str:
    """`` for method classify`` when ``cls`` is a method's config (its keys differ per method)."""
    field = cls.model_fields.get("method")
    method = getattr(field, "default", None) if field is not None else None
    return f" for method {method} (it does not read this key)" if isinstance(method, str) else ""


def _describe_error(
    err: dict[str, Any],
    cls: type[BaseModel],
    lines: dict[tuple[str, ...], int],
    source: str,
    overridden: dict[tuple[str, ...], str],
) -> str:
    loc = tuple(str(p) for p in err["loc"])
    dotted = ".".join(loc) or "(top level)"
    line = lines.get(loc)
    where = f"{source}:{line}" if line else source
    if loc in overridden:
        where = f"override '{overridden[loc]}'"
    if err["type"] == "extra_forbidden":
        owner = _section_class(cls, err["loc"])
        options = list(owner.model_fields) if owner else []
        close = _nearest(loc[-1], options)
        hint = f"; did you mean '{'.'.join((*loc[:-1], close[0]))}'?" if close else ""
        valid = f" (valid keys here: {', '.join(options)})" if options else ""
        return f"{where}: unknown key '{dotted}'{_for_method(cls)}{hint}{valid}"
    msg = err["msg"]
    if "input" in err and err["type"] != "missing":
        msg += f" (got {err['input']!r})"
    return f"{where}: field '{dotted}': {msg}"


def _read_yaml(path: str | Path) -> tuple[dict[str, Any], str]:
    source = str(path)
    p = Path(path)
    if not p.is_file():
        raise ConfigError(f"{source}: config file not found")
    text = p.read_text(encoding="utf-8")
    try:
        data = yaml.safe_load(text) or {}
    except yaml.YAMLError as e:
        raise ConfigError(f"{source}: invalid YAML: {e}") from None
    if not isinstance(data, dict):
        raise ConfigError(f"{source}: the top level must be a mapping of sections")
    return data, text


M = TypeVar("M", bound=BaseModel)


def load_model(
    cls: type[M] | Callable[[dict[str, Any], str], type[M]],
    path: str | Path | None,
    overrides: list[str] | None = None,
    base: dict[str, Any] | None = None,
) -> M:
    """Read YAML at ``path`` (or start from ``base``), apply ``key.sub=value`` overrides and
    validate once against ``cls`` (or the class ``cls(data, source)`` picks). Every error names
    the file, the line (or the override) and the field, with the nearest valid key."""
    source = str(path) if path is not None else "<config>"
    data, text = _read_yaml(path) if path is not None else (dict(base or {}), "")
    overridden: dict[tuple[str, ...], str] = {}
    for item in overrides or []:
        key, value = parse_override(item)
        apply_override(data, key, value)
        overridden[tuple(key)] = item
    model_cls = cls if isinstance(cls, type) else cls(data, source)
    try:
        return model_cls.model_validate(data)
    except ValidationError as e:
        lines = _yaml_lines(text) if text else {}
        msgs = [
            _describe_error(dict(err), model_cls, lines, source, overridden) for err in e.errors()
        ]
        raise ConfigError("invalid config:\n  " + "\n  ".join(msgs)) from None


def _method_class(data: dict[str, Any], source: str) -> type[BaseRunConfig]:
    method = data.get("method", "sft")
    if method not in METHODS:
        close = _nearest(str(method), list(METHODS))
        hint = f"; did you mean '{close[0]}'?" if close else ""
        raise ConfigError(
            f"{source}: field 'method': unknown method '{method}'{hint} "
            f"(known: {', '.join(METHODS)})"
        )
    return method_config_class(method)


def load_config(
    path: str | Path | None, overrides: list[str] | None = None, base: dict[str, Any] | None = None
) -> BaseRunConfig:
    """A training config: the method's config class, validated once."""
    return load_model(_method_class, path, overrides, base)


def dump_config(cfg: BaseModel) -> str:
    """The resolved config as YAML (every default filled in)."""
    return yaml.safe_dump(cfg.model_dump(mode="json"), sort_keys=False)
