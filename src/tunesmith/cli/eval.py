"""``tunesmith eval | compare``: held-out loss and perplexity, an evaluation suite on one model,
or the same suite on two models side by side."""

from __future__ import annotations

import argparse
import json
from pathlib import Path
from typing import Any

from tunesmith.cli.args import add_inference_args
from tunesmith.errors import UserError


def register(sub: argparse._SubParsersAction) -> None:  # type: ignore[type-arg]
    p = sub.add_parser("eval", help="held-out loss and perplexity, or an evaluation suite")
    add_inference_args(p)
    p.add_argument("--suite", help="suite YAML (suites/*.yaml): generation, choice, loss tasks")
    p.add_argument("--set", action="append", metavar="KEY=VALUE", help="override a suite key")
    p.add_argument("--data", help="default: the run's held-out split")
    p.add_argument("--template", default=None)
    p.add_argument("--format", default=None)
    p.add_argument("--max-length", type=int, default=None)
    p.add_argument("--batch-size", type=int, default=None, help="default 8 (suite: its own)")
    p.add_argument("--output", help="write the JSON result here (suite: RUN/eval-NAME.json)")
    p.set_defaults(func=cmd_eval)

    p = sub.add_parser("compare", help="one eval suite on two models: win rate, differences")
    p.add_argument("a", help="model A (baseline): run dir, model dir, alias, or an eval JSON")
    p.add_argument("b", help="model B (candidate): the same kinds")
    p.add_argument("--suite", help="suite YAML")
    p.add_argument("--set", action="append", metavar="KEY=VALUE", help="override a suite key")
    p.add_argument("--a-no-adapter", action="store_true", help="A: the run's base model")
    p.add_argument("--b-no-adapter", action="store_true", help="B: the run's base model")
    p.add_argument("--top", type=int, default=5, help="examples that differ most to show")
    p.add_argument("--output", help="write the full comparison JSON here")
    p.add_argument("--device", default="auto")
    p.set_defaults(func=cmd_compare)


def cmd_eval(args: argparse.Namespace) -> int:
    """:func:`tunesmith.api.evaluate`: a suite's summary, or held-out loss and perplexity."""
    from tunesmith.api import evaluate

    result = evaluate(
        args.model,
        args.suite,
        data=args.data,
        overrides=list(args.set or []),
        use_adapter=not args.no_adapter,
        device=args.device,
        batch_size=args.batch_size,
        output=args.output,
        template=args.template,
        format=args.format,
        max_length=args.max_length,
    )
    if result.suite is None:
        print(json.dumps(result.details, indent=2))
        return 0
    brief = {k: v for k, v in result.details.items() if k != "tasks"}
    brief["results"] = str(result.output) if result.output else None
    print(json.dumps(brief, indent=2))
    return 0


# ----------------------------------------------------------------------------- compare


def _results(target: str, no_adapter: bool, args: argparse.Namespace) -> dict[str, Any]:
    """A model's suite results: run now, or read from a saved ``eval`` JSON file."""
    if target.endswith(".json") and Path(target).is_file():
        return dict(json.loads(Path(target).read_text()))
    from tunesmith.eval.runner import evaluate_suite

    return evaluate_suite(
        target, args.suite, use_adapter=not no_adapter, device=args.device,
        overrides=list(args.set or []),
    )  # fmt: skip


def cmd_compare(args: argparse.Namespace) -> int:
    """``tunesmith compare A B --suite S``: the same suite on two models, side by side."""
    from tunesmith.eval.compare import compare_results, render_table
    from tunesmith.eval.suite import load_suite

    if args.suite is None and not all(t.endswith(".json") for t in (args.a, args.b)):
        raise UserError("compare: give --suite SUITE.yaml (or two saved eval JSON files)")
    if args.suite is not None:
        load_suite(args.suite, list(args.set or []))  # a bad suite fails before any model loads
    res_a = _results(args.a, args.a_no_adapter, args)
    res_b = _results(args.b, args.b_no_adapter, args)
    if res_a.get("suite") != res_b.get("suite"):
        raise UserError(f"compare: A ran suite '{res_a.get('suite')}', B '{res_b.get('suite')}'")
    cmp = compare_results(res_a, res_b, args.top)
    print(render_table(cmp))
    if args.output:
        Path(args.output).parent.mkdir(parents=True, exist_ok=True)
        Path(args.output).write_text(json.dumps(cmp, indent=2, ensure_ascii=False))
        print(f"\nwrote {args.output}")
    return 0
