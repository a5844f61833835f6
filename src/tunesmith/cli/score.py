"""``tunesmith score REWARD_MODEL``: reward-model scores of completions.

One pair from the command line (``--prompt`` / ``--completion``: prints the score), or a JSONL
file (``--data``) of ``{"prompt": str | [turns], "completion": str}`` or
``{"messages": [turns], "completion": str}`` rows: writes each row with a ``score`` added to
``--out`` (default: printed).
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path


def register(sub: argparse._SubParsersAction) -> None:  # type: ignore[type-arg]
    p = sub.add_parser("score", help="score completions with a trained reward model")
    p.add_argument("reward_model", help="reward-model run dir or its final/ dir")
    p.add_argument("--prompt", help="the prompt (one user turn)")
    p.add_argument("--completion", help="the completion to score")
    p.add_argument("--data", help="JSONL of prompt/messages + completion rows")
    p.add_argument("--out", help="with --data: write scored rows here (default: stdout)")
    p.add_argument("--batch-size", type=int, default=16)
    p.add_argument("--device", default="auto")
    p.set_defaults(func=cmd_score)


def cmd_score(args: argparse.Namespace) -> int:
    from tunesmith.data.score_rows import read_score_rows
    from tunesmith.errors import UserError
    from tunesmith.models.reward_head import load_reward_model

    single = args.prompt is not None or args.completion is not None
    if single == (args.data is not None) or (single and None in (args.prompt, args.completion)):
        raise UserError("give --prompt and --completion, or --data FILE.jsonl")
    rm = load_reward_model(args.reward_model, device=args.device)
    if single:
        print(f"{rm.score([args.prompt], [args.completion])[0]:.6f}")
        return 0
    rows, prompts, completions = read_score_rows(args.data)
    scores = rm.score(prompts, completions, batch_size=args.batch_size)
    lines = [json.dumps({**row, "score": s}) for row, s in zip(rows, scores, strict=True)]
    if args.out:
        Path(args.out).write_text("".join(x + "\n" for x in lines), encoding="utf-8")
        print(f"[tunesmith] scored {len(rows)} rows -> {args.out}", file=sys.stderr)
    else:
        print("\n".join(lines))
    return 0
