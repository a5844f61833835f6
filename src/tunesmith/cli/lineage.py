"""``tunesmith lineage PATH [--verify]``: what an artefact was made from, and if it still is."""

from __future__ import annotations

import argparse
import json


def register(sub: argparse._SubParsersAction) -> None:  # type: ignore[type-arg]
    p = sub.add_parser(
        "lineage", help="the chain raw data -> prep -> train -> merge -> export of an artefact"
    )
    p.add_argument("path", help="a prep output dir, run dir, final/, merged or exported model")
    p.add_argument(
        "--verify",
        action="store_true",
        help="re-hash every recorded input that still exists; name each changed or missing one",
    )
    p.add_argument("--json", action="store_true", help="print the lineage record as JSON")
    p.set_defaults(func=cmd_lineage)


def cmd_lineage(args: argparse.Namespace) -> int:
    """Print the chain; with ``--verify`` exit 1 when any recorded file changed or is missing."""
    from tunesmith.engine.lineage_verify import format_chain, load_node, verify

    node = load_node(args.path)
    print(json.dumps(node, indent=2) if args.json else format_chain(node))
    if not args.verify:
        return 0
    checked, findings = verify(node)
    print(f"\nverify: {checked} recorded file(s) checked, {len(findings)} differ")
    for finding in findings:
        print(f"  {finding}")
    return 1 if findings else 0
