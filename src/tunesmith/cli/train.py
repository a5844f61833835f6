"""``tunesmith train | validate | doctor | ls``: a config in, a run (or a verdict) out."""

from __future__ import annotations

import argparse
import json
import os
from pathlib import Path

from tunesmith.cli.args import add_config_args
from tunesmith.errors import UserError


def register(sub: argparse._SubParsersAction) -> None:  # type: ignore[type-arg]
    p = sub.add_parser("train", help="train from a YAML config with key.sub=value overrides")
    add_config_args(p)
    p.add_argument("--resume", action="store_true", help="continue from the latest checkpoint")
    p.add_argument(
        "--allow-data-change",
        action="store_true",
        help="with --resume: continue even if a data file's hash differs from env.json's",
    )
    p.add_argument(
        "--skip-preflight", action="store_true", help="train even if a pre-flight check FAILs"
    )
    p.set_defaults(func=cmd_train)

    p = sub.add_parser("validate", help="check a config without training; --schema: JSON Schema")
    p.add_argument("config", nargs="?", help="the YAML config (not with --schema)")
    p.add_argument("overrides", nargs="*", help="key.sub=value")
    p.add_argument("--show", action="store_true", help="print the resolved config")
    p.add_argument(
        "--schema",
        metavar="METHOD",
        help="write the JSON Schema of METHOD's config (all: every method, into --out DIR)",
    )
    p.add_argument("--out", help="--schema: file (one method) or directory (all); default stdout")
    p.set_defaults(func=cmd_validate)

    p = sub.add_parser("explain", help="a config key's type, default, allowed values, meaning")
    p.add_argument("key", help="dotted key, e.g. lora.r, train.precision, dpo.beta")
    p.add_argument("--method", help="the method whose config to read (default: sft, else any)")
    p.set_defaults(func=cmd_explain)

    p = sub.add_parser("doctor", help="pre-flight checks and rendered examples for a config")
    add_config_args(p)
    p.add_argument("--html", help="report path (default: <train.output_dir>/doctor-<time>.html)")
    p.add_argument("--examples", type=int, default=3, help="examples to render")
    p.add_argument("--no-model", action="store_true", help="skip the checks that run the model")
    p.set_defaults(func=cmd_doctor)

    sub.add_parser("ls", help="list shipped recipes").set_defaults(func=cmd_ls)


def cmd_train(args: argparse.Namespace) -> int:
    """:func:`tunesmith.api.train`; print its result."""
    from tunesmith.api import train

    overrides = [*args.overrides, *(["train.allow_data_change=true"] * args.allow_data_change)]
    run = train(args.config, overrides, resume=args.resume,
                skip_preflight=args.skip_preflight)  # fmt: skip
    print(json.dumps(run.summary, indent=2, default=str))
    return 0


def cmd_validate(args: argparse.Namespace) -> int:
    """Load and check the config; imports configuration code only, no training loop."""
    from tunesmith.config import dump_config, load_config

    if args.schema:
        return _write_schema(args.schema, args.out)
    if args.config is None:
        raise UserError("validate: give a config file (or --schema METHOD)")
    cfg = load_config(args.config, list(args.overrides))
    print(dump_config(cfg) if args.show else f"{args.config}: valid ({cfg.method})")
    return 0


def _write_schema(name: str, out: str | None) -> int:
    """``validate --schema METHOD|all [--out PATH]``."""
    from tunesmith.config.schema import schema_names, schema_text, write_schemas

    if name == "all":
        for path in write_schemas(Path(out or "schemas")):
            print(f"wrote {path}")
        return 0
    text = schema_text(name)
    if out is None:
        print(text, end="")
        return 0
    Path(out).parent.mkdir(parents=True, exist_ok=True)
    Path(out).write_text(text, encoding="utf-8")
    print(f"wrote {out} ({name}; known: {', '.join(schema_names())})")
    return 0


def cmd_explain(args: argparse.Namespace) -> int:
    """``explain KEY [--method M]``: the field's help, generated from the pydantic models."""
    from tunesmith.config.schema import explain

    print(explain(args.key, args.method).render())
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
