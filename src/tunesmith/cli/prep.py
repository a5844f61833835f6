"""``tunesmith prep``: dedup, filter, scrub PII and split raw data, with a report."""

from __future__ import annotations

import argparse
import json

from tunesmith.cli.args import add_config_args


def register(sub: argparse._SubParsersAction) -> None:  # type: ignore[type-arg]
    p = sub.add_parser("prep", help="dedup, filter, scrub PII and split raw data, with a report")
    add_config_args(p)
    p.set_defaults(func=cmd_prep)


def cmd_prep(args: argparse.Namespace) -> int:
    from tunesmith.config import load_model
    from tunesmith.prep import PrepConfig, run_prep

    cfg = load_model(PrepConfig, args.config, list(args.overrides))
    print(json.dumps(run_prep(cfg).summary(), indent=2))
    return 0
