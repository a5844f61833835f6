"""``tunesmith prune``: drop the decoder blocks that change the hidden state least."""

from __future__ import annotations

import argparse
import json
from pathlib import Path


def register(sub: argparse._SubParsersAction) -> None:  # type: ignore[type-arg]
    p = sub.add_parser(
        "prune", help="depth-prune a model: drop the N least useful layers (ShortGPT); report"
    )
    p.add_argument("model", help="model dir, run dir (full fine-tune), .gguf file or alias")
    p.add_argument("--drop-layers", type=int, required=True, help="number of blocks to remove")
    p.add_argument(
        "--calibration",
        type=Path,
        help=".txt (one text a line) or .jsonl (text | messages | prompt+completion); "
        "every 4th text is held out for perplexity (default: built-in English texts)",
    )
    p.add_argument("--out", type=Path, required=True, help="directory for the pruned model")
    p.add_argument("--device", default="auto")
    p.set_defaults(func=cmd_prune)


def cmd_prune(args: argparse.Namespace) -> int:
    from tunesmith.compress.prune_run import prune

    report = prune(args.model, args.drop_layers, args.out, args.calibration, args.device)
    summary = {k: report[k] for k in ("out", "dropped", "layers_before", "layers_after")}
    summary.update(before=report["before"], after=report["after"])
    print(json.dumps(summary, indent=2))
    return 0
