"""``tunesmith probe memorization RUN``: does the tuned model leak what it was trained on?"""

from __future__ import annotations

import argparse
import json


def register(sub: argparse._SubParsersAction) -> None:  # type: ignore[type-arg]
    p = sub.add_parser("probe", help="probes of a trained run (memorization)")
    kinds = p.add_subparsers(dest="probe", required=True)
    m = kinds.add_parser(
        "memorization",
        help="canary exposure, verbatim regurgitation (train vs held-out) and PII in generations, "
        "tuned vs base; writes RUN/memorization.json",
    )
    m.add_argument("run", help="a run dir (its final/) or a model dir")
    m.add_argument("--base", help="base model to compare with (default: the run's model)")
    m.add_argument("--canaries", help="canaries.json (default: beside a training file)")
    m.add_argument("--train", nargs="+", help="training files (default: the run's data.train)")
    m.add_argument("--held-out", nargs="+", help="held-out files (default: data.validation)")
    m.add_argument("--examples", type=int, default=32, help="examples per split")
    m.add_argument("--tokens", type=int, default=32, help="continuation tokens compared")
    m.add_argument("--threshold", type=float, default=0.1, help="near: edit distance <= t * k")
    m.add_argument("--candidates", type=int, default=1000, help="random secrets per canary")
    m.add_argument("--seed", type=int, default=0)
    m.add_argument("--device", default="auto")
    m.set_defaults(func=cmd_memorization)


def cmd_memorization(args: argparse.Namespace) -> int:
    """Run the probe; print the headline numbers (the full result is in memorization.json)."""
    from tunesmith.eval.memorization import ProbeOptions, probe_memorization, summary

    opts = ProbeOptions(
        base=args.base,
        canaries=args.canaries,
        train=args.train,
        held_out=args.held_out,
        examples=args.examples,
        tokens=args.tokens,
        threshold=args.threshold,
        candidates=args.candidates,
        seed=args.seed,
        device=args.device,
    )
    print(json.dumps(summary(probe_memorization(args.run, opts)), indent=2))
    return 0
