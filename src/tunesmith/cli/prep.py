"""``tunesmith prep``: dedup, filter, scrub PII and split raw data, with a report."""

from __future__ import annotations

import argparse
import json

from tunesmith.cli.args import add_config_args


def register(sub: argparse._SubParsersAction) -> None:  # type: ignore[type-arg]
    p = sub.add_parser("prep", help="dedup, filter, scrub PII and split raw data, with a report")
    add_config_args(p)
    p.add_argument("--canaries", type=int, help="plant N random secrets in train.jsonl (probe)")
    p.set_defaults(func=cmd_prep)


def cmd_prep(args: argparse.Namespace) -> int:
    """:func:`tunesmith.api.prep`; print the headline numbers."""
    from tunesmith.api import prep

    extra = [] if args.canaries is None else [f"canaries={args.canaries}"]
    print(json.dumps(prep(args.config, [*args.overrides, *extra]).summary, indent=2))
    return 0
