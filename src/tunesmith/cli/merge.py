"""``tunesmith merge | average | export``: fold adapters in, average checkpoints, export a model;
every merge is verified against the unmerged logits."""

from __future__ import annotations

import argparse
import json
from typing import Any


def register(sub: argparse._SubParsersAction) -> None:  # type: ignore[type-arg]
    p = sub.add_parser("merge", help="fold LoRA adapter(s) into the base; verified")
    p.add_argument("runs", nargs="+", help="run dir(s); several: merge their adapters")
    p.add_argument("--method", choices=["linear", "ties", "dare_ties", "dare_linear", "cat", "svd"])
    p.add_argument("--weights", help="comma-separated, one per run (default: equal)")
    p.add_argument("--density", type=float, default=None, help="ties/dare: kept fraction")
    _add_verify_args(p)
    p.set_defaults(func=cmd_merge)

    p = sub.add_parser("average", help="average the last K checkpoints of a run")
    p.add_argument("run")
    p.add_argument("--last", type=int, required=True, help="number of checkpoints (K)")
    p.add_argument("--ema", type=float, default=None, help="EMA decay instead of uniform")
    p.add_argument("--out", help="output directory (default: RUN/averaged)")
    p.set_defaults(func=cmd_average)

    p = sub.add_parser("export", help="write a standalone merged model; verified")
    p.add_argument("run")
    p.add_argument("--format", choices=["safetensors", "gguf"], default="safetensors")
    p.add_argument(
        "--quant",
        choices=["f16", "q8_0", "q4_0", "q4_1", "q4_k_m"],
        default="q8_0",
        help="gguf: weight type (q4_k_m needs llama-cpp-python: make llama-cpp)",
    )
    _add_verify_args(p)
    p.set_defaults(func=cmd_export)


def _add_verify_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("--out", help="output directory")
    p.add_argument("--tolerance", type=float, default=1e-3, help="max |logit diff| (fp32)")
    p.add_argument("--prompts", type=int, default=4, help="verification prompts")
    p.add_argument("--device", default="auto")


def _verify_opts(args: argparse.Namespace) -> dict[str, Any]:
    return {"tolerance": args.tolerance, "prompts": args.prompts, "device": args.device}


def cmd_merge(args: argparse.Namespace) -> int:
    """:func:`tunesmith.api.merge`; print the verification report."""
    from tunesmith.api import merge

    weights = [float(w) for w in args.weights.split(",")] if args.weights else None
    result = merge(args.runs, method=args.method, weights=weights, density=args.density,
                   out=args.out, **_verify_opts(args))  # fmt: skip
    print(json.dumps(result.report, indent=2))
    return 0


def cmd_average(args: argparse.Namespace) -> int:
    from tunesmith.merge import average_run

    print(json.dumps(average_run(args.run, args.last, args.ema, args.out), indent=2))
    return 0


def cmd_export(args: argparse.Namespace) -> int:
    """:func:`tunesmith.api.export`; print the verification report."""
    from tunesmith.api import export

    result = export(args.run, args.format, args.out, quant=args.quant, **_verify_opts(args))
    print(json.dumps(result.report, indent=2))
    return 0
