"""``tunesmith train | validate | doctor | ls``: a config in, a run (or a verdict) out."""

from __future__ import annotations

import argparse
import dataclasses
import importlib
import json
import os
from pathlib import Path
from typing import Any

from tunesmith.cli.args import add_config_args


def register(sub: argparse._SubParsersAction) -> None:  # type: ignore[type-arg]
    p = sub.add_parser("train", help="train from a YAML config with key.sub=value overrides")
    add_config_args(p)
    p.add_argument("--resume", action="store_true", help="continue from the latest checkpoint")
    p.add_argument(
        "--skip-preflight", action="store_true", help="train even if a pre-flight check FAILs"
    )
    p.set_defaults(func=cmd_train)

    p = sub.add_parser("validate", help="check a config without training")
    add_config_args(p)
    p.add_argument("--show", action="store_true", help="print the resolved config")
    p.set_defaults(func=cmd_validate)

    p = sub.add_parser("doctor", help="pre-flight checks and rendered examples for a config")
    add_config_args(p)
    p.add_argument("--html", help="report path (default: <train.output_dir>/doctor-<time>.html)")
    p.add_argument("--examples", type=int, default=3, help="examples to render")
    p.add_argument("--no-model", action="store_true", help="skip the checks that run the model")
    p.set_defaults(func=cmd_doctor)

    sub.add_parser("ls", help="list shipped recipes").set_defaults(func=cmd_ls)


def _jsonable(value: Any) -> Any:
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        return {f.name: _jsonable(getattr(value, f.name)) for f in dataclasses.fields(value)}
    if isinstance(value, dict):
        return {str(k): _jsonable(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_jsonable(v) for v in value]
    if isinstance(value, Path):
        return str(value)
    return value


def _summary(result: Any) -> Any:
    """A method's result as JSON, minus bulky stats, with the common keys named alike."""
    summary = _jsonable(result)
    if isinstance(summary, dict):
        summary.pop("stats", None)
        if "final_dir" in summary:
            summary["final"] = summary.pop("final_dir")
        if "last_train_loss" in summary:
            summary["train_loss"] = summary.pop("last_train_loss")
    return summary


def cmd_train(args: argparse.Namespace) -> int:
    """Run ``tunesmith.methods.<method>.run(cfg)``; print its result."""
    from tunesmith.config import load_config

    overrides = list(args.overrides) + (["train.resume=true"] if args.resume else [])
    cfg = load_config(args.config, overrides)
    method = importlib.import_module(f"tunesmith.methods.{cfg.method}")
    result = method.run(cfg, skip_preflight=args.skip_preflight)
    print(json.dumps(_summary(result), indent=2, default=str))
    return 0


def cmd_validate(args: argparse.Namespace) -> int:
    """Load and check the config; imports configuration code only, no training loop."""
    from tunesmith.config import dump_config, load_config

    cfg = load_config(args.config, list(args.overrides))
    print(dump_config(cfg) if args.show else f"{args.config}: valid ({cfg.method})")
    return 0


def cmd_doctor(args: argparse.Namespace) -> int:
    from tunesmith.checks.report import run_doctor
    from tunesmith.config import load_config

    cfg = load_config(args.config, list(args.overrides))
    html = Path(args.html) if args.html else None
    return run_doctor(cfg, html_path=html, n_examples=args.examples, use_model=not args.no_model)


def recipes_dir() -> Path:
    """Shipped recipes: $TUNESMITH_CONFIGS, the checkout's configs/, or ./configs."""
    env = os.environ.get("TUNESMITH_CONFIGS")
    candidates = [Path(env)] if env else []
    candidates += [Path(__file__).resolve().parents[3] / "configs", Path.cwd() / "configs"]
    for c in candidates:
        if c.is_dir():
            return c
    return candidates[-1]


def cmd_ls(args: argparse.Namespace) -> int:
    root = recipes_dir()
    files = sorted(root.rglob("*.yaml"))
    if not files:
        print(f"no recipes under {root}")
        return 0
    for f in files:
        first = f.read_text(encoding="utf-8").splitlines()[:1]
        note = first[0].lstrip("# ").strip() if first and first[0].startswith("#") else ""
        print(f"{f.relative_to(root)}\t{note}")
    return 0
