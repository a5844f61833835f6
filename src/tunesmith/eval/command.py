"""``tunesmith eval MODEL --suite SUITE.yaml``: run a suite, print the aggregates, save JSON."""

from __future__ import annotations

import argparse
import json
from pathlib import Path
from typing import Any

from tunesmith.errors import UserError
from tunesmith.eval.loading import load_eval_model
from tunesmith.eval.runner import run_suite
from tunesmith.eval.suite import load_suite


def default_output(target: str, suite_name: str) -> Path | None:
    """``RUN/eval-<suite>.json`` when ``target`` is a run dir (``tunesmith report`` shows it)."""
    run = Path(target)
    if (run / "final").is_dir() and (run / "config.yaml").is_file():
        return run / f"eval-{suite_name}.json"
    return None


def evaluate_suite(
    target: str,
    suite_path: str,
    *,
    use_adapter: bool = True,
    device: str = "auto",
    overrides: list[str] | None = None,
    progress: bool = True,
) -> dict[str, Any]:
    """The full results of ``suite_path`` on ``target`` (aggregates and per-example rows)."""
    suite = load_suite(suite_path, overrides)  # a bad suite fails before the model loads
    model, tokenizer = load_eval_model(target, use_adapter, device)
    result = run_suite(model, tokenizer, suite, progress)
    return {"model": target, "adapter": use_adapter, **result}


def run_eval_command(args: argparse.Namespace) -> int:
    """``tunesmith eval MODEL --suite S``: options of the held-out-loss mode are refused."""
    clash = [f"--{k.replace('_', '-')}" for k in ("data", "template", "format", "max_length")
             if getattr(args, k, None) is not None]  # fmt: skip
    if clash:
        raise UserError(
            f"eval --suite: {', '.join(clash)} do not apply (set them in the suite file, "
            "or override with --set key=value)"
        )
    overrides = list(args.set or [])
    if args.batch_size is not None:
        overrides.append(f"batch_size={args.batch_size}")
    result = evaluate_suite(
        args.model,
        args.suite,
        use_adapter=not args.no_adapter,
        device=args.device,
        overrides=overrides,
    )
    out = Path(args.output) if args.output else default_output(args.model, result["suite"])
    if out is not None:
        out.parent.mkdir(parents=True, exist_ok=True)
        out.write_text(json.dumps(result, indent=2, ensure_ascii=False))
    brief = {k: v for k, v in result.items() if k != "tasks"}
    brief["results"] = str(out) if out else None
    print(json.dumps(brief, indent=2))
    return 0
