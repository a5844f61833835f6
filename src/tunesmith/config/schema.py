"""The config explains itself: JSON Schemas for editors and ``tunesmith explain KEY``.

Both are generated from the pydantic models registered in :data:`tunesmith.config.load.METHODS`
(plus the ``prep`` config), so a new method gets them without code here. Configuration code
only: no torch, no training loop.
"""

from __future__ import annotations

import importlib
import json
import types
import typing
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal, get_args, get_origin

from pydantic import BaseModel
from pydantic.fields import FieldInfo
from pydantic_core import PydanticUndefined

from tunesmith.config.load import METHODS, ConfigError, _model_in, _nearest, method_config_class

# Configs that are not training methods but have recipes of their own.
OTHER_CONFIGS: dict[str, str] = {"prep": "tunesmith.prep.config:PrepConfig"}

SCHEMA_DRAFT = "https://json-schema.org/draft/2020-12/schema"
MODELINE = "# yaml-language-server: $schema="


def schema_names() -> list[str]:
    """Every config that has a schema: the training methods, then the others (prep)."""
    return [*METHODS, *OTHER_CONFIGS]


def config_class(name: str) -> type[BaseModel]:
    """The pydantic class of a method (or of ``prep``); an error listing the known names."""
    if name in METHODS:
        return method_config_class(name)
    if name in OTHER_CONFIGS:
        module, _, attr = OTHER_CONFIGS[name].partition(":")
        cls = getattr(importlib.import_module(module), attr)
        assert issubclass(cls, BaseModel)
        return cls
    close = _nearest(name, schema_names())
    hint = f"; did you mean '{close[0]}'?" if close else ""
    raise ConfigError(f"unknown method '{name}'{hint} (known: {', '.join(schema_names())})")


def json_schema(name: str) -> dict[str, Any]:
    """The JSON Schema (draft 2020-12) of a method's config, from its pydantic model."""
    cls = config_class(name)
    schema = cls.model_json_schema()
    _widen_before_validated(cls, schema)
    schema["title"] = f"tunesmith {name} config"
    return {"$schema": SCHEMA_DRAFT, **schema}


def _sections(cls: type[BaseModel], seen: dict[str, type[BaseModel]]) -> dict[str, type[BaseModel]]:
    """``cls`` and every section class under it, by class name."""
    seen[cls.__name__] = cls
    for info in cls.model_fields.values():
        sub = _model_in(info.annotation)
        if sub is not None and sub.__name__ not in seen:
            _sections(sub, seen)
    return seen


def _widen_before_validated(cls: type[BaseModel], schema: dict[str, Any]) -> None:
    """A field with a ``mode="before"`` validator that declares no ``json_schema_input_type``
    accepts more than its type says; the config idiom is a single path for a list of them, so
    such a field also accepts a string (declare the input type to be exact)."""
    for name, section in _sections(cls, {}).items():
        target = schema if section is cls else schema.get("$defs", {}).get(name)
        if target is None:
            continue
        for deco in section.__pydantic_decorators__.field_validators.values():
            declared = deco.info.json_schema_input_type is not PydanticUndefined
            if deco.info.mode != "before" or declared:
                continue
            for field in deco.info.fields:
                prop = target.get("properties", {}).get(field)
                if prop is None:
                    continue
                keep = {k: prop.pop(k) for k in ("default", "description", "title") if k in prop}
                target["properties"][field] = {"anyOf": [prop, {"type": "string"}], **keep}


def schema_text(name: str) -> str:
    """:func:`json_schema` as the committed file holds it (sorted keys, trailing newline)."""
    return json.dumps(json_schema(name), indent=2, sort_keys=True, ensure_ascii=False) + "\n"


def write_schemas(out_dir: Path, names: list[str] | None = None) -> list[Path]:
    """Write ``<out_dir>/<name>.schema.json`` for ``names`` (default: all)."""
    out_dir.mkdir(parents=True, exist_ok=True)
    written = []
    for name in names or schema_names():
        path = out_dir / f"{name}.schema.json"
        path.write_text(schema_text(name), encoding="utf-8")
        written.append(path)
    return written


# ----------------------------------------------------------------------------- explain


@dataclass
class FieldHelp:
    """What ``tunesmith explain`` prints for one key."""

    key: str
    method: str
    type: str
    default: Any
    allowed: list[Any] | None
    description: str
    constraints: dict[str, Any]
    fields: list[str] | None  # a section: its keys

    def render(self) -> str:
        lines = [f"{self.key}  (method {self.method})", f"  type:        {self.type}"]
        if self.fields is None:
            lines.append(f"  default:     {json.dumps(self.default, default=str)}")
        if self.allowed:
            lines.append(f"  allowed:     {', '.join(json.dumps(a) for a in self.allowed)}")
        for name, value in self.constraints.items():
            lines.append(f"  {name + ':':<12} {value}")
        if self.fields:
            lines.append(f"  keys:        {', '.join(self.fields)}")
        if self.description:
            lines.append(f"  {self.description}")
        return "\n".join(lines)


def _type_name(ann: Any) -> str:
    if ann is None or ann is type(None):
        return "null"
    if get_origin(ann) is Literal:
        return " | ".join(sorted({type(v).__name__ for v in get_args(ann)}))
    if isinstance(ann, type):
        return ann.__name__
    if get_args(ann) and get_origin(ann) in (typing.Union, types.UnionType):
        return " | ".join(_type_name(a) for a in get_args(ann))
    return str(ann).replace("typing.", "")


def _allowed(ann: Any) -> list[Any] | None:
    """The values of a ``Literal`` (also inside ``X | None``)."""
    if get_origin(ann) is Literal:
        return list(get_args(ann))
    for arg in get_args(ann):
        if get_origin(arg) is Literal:
            values = list(get_args(arg))
            return [*values, None] if type(None) in get_args(ann) else values
    return None


def _constraints(info: FieldInfo) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for meta in info.metadata:
        for name in ("gt", "ge", "lt", "le", "min_length", "max_length"):
            value = getattr(meta, name, None)
            if value is not None:
                out[name] = value
    return out


def _default(info: FieldInfo) -> Any:
    if info.default is not PydanticUndefined:
        value = info.default
    elif info.default_factory is not None:
        value = info.default_factory()  # type: ignore[call-arg]
    else:
        return "(required)"
    return value.model_dump(mode="json") if isinstance(value, BaseModel) else value


def _lookup(cls: type[BaseModel], key: str) -> FieldInfo:
    """The field at dotted ``key`` (sections, optional sections and lists of sections)."""
    current: type[BaseModel] | None = cls
    parts = key.split(".")
    info: FieldInfo | None = None
    for depth, part in enumerate(parts):
        if current is None:
            raise ConfigError(f"'{'.'.join(parts[:depth])}' has no keys under it")
        if part not in current.model_fields:
            close = _nearest(part, list(current.model_fields))
            where = ".".join(parts[:depth]) or "the top level"
            hint = f"; did you mean '{'.'.join([*parts[:depth], close[0]])}'?" if close else ""
            raise ConfigError(
                f"unknown key '{key}'{hint} (keys of {where}: {', '.join(current.model_fields)})"
            )
        info = current.model_fields[part]
        current = _model_in(info.annotation)
    assert info is not None
    return info


def explain(key: str, method: str | None = None) -> FieldHelp:
    """Type, default, allowed values, limits and description of ``key`` for ``method``
    (default: sft, or else the first method that has the key)."""
    names = [method] if method else schema_names()
    errors: list[str] = []
    for name in names:
        try:
            info = _lookup(config_class(name), key)
        except ConfigError as e:
            errors.append(str(e))
            continue
        section = _model_in(info.annotation)
        ann = info.annotation
        return FieldHelp(
            key=key,
            method=name,
            type=_type_name(ann),
            default=_default(info),
            allowed=_allowed(ann),
            description=" ".join((info.description or (section.__doc__ if section else "") or
                                  "").split()),
            constraints=_constraints(info),
            fields=list(section.model_fields) if section else None,
        )  # fmt: skip
    where = "" if method else f" (nor in any other method's config: {', '.join(names[1:])})"
    raise ConfigError(errors[0] + where)


def recipe_schema_name(path: Path) -> str:
    """The schema a recipe is checked against: ``prep`` for ``tunesmith prep`` recipes, else its
    ``method`` key (default sft)."""
    import yaml

    text = path.read_text(encoding="utf-8")
    if text.startswith("# tunesmith prep"):
        return "prep"
    data = yaml.safe_load(text) or {}
    return str(data.get("method", "sft"))
