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
    return _eval_suite(args) if args.suite else _eval_loss(args)


# ----------------------------------------------------------------------------- held-out loss


def _eval_data(args: argparse.Namespace) -> tuple[str, dict[str, Any]]:
    """The data to evaluate on and the data settings (from the run's config when there is one)."""
    run_cfg = Path(args.model) / "config.yaml"
    settings: dict[str, Any] = {}
    if run_cfg.is_file():
        import yaml

        settings = yaml.safe_load(run_cfg.read_text())["data"]
    data = args.data or (
        str(Path(args.model) / "data" / "val.jsonl") if run_cfg.is_file() else None
    )
    if data is None:
        raise UserError("eval: give --data FILE (a model dir has no held-out split of its own)")
    for key in ("template", "max_length", "format"):
        if getattr(args, key) is not None:
            settings[key] = getattr(args, key)
    return data, settings


def _eval_loss(args: argparse.Namespace) -> int:
    """``tunesmith eval MODEL [--data FILE]``: token-weighted loss and perplexity."""
    from tunesmith.config import DataSection
    from tunesmith.data.dataset import prepare_data
    from tunesmith.eval.loading import load_eval_model
    from tunesmith.eval.perplexity import evaluate_loss
    from tunesmith.models.load import pick_device

    data, settings = _eval_data(args)
    keep = {k: v for k, v in settings.items() if k in DataSection.model_fields}
    cfg = DataSection(**{**keep, "train": data, "validation": None, "val_fraction": 0.0})
    model, tok = load_eval_model(args.model, use_adapter=not args.no_adapter, device=args.device)
    prepared = prepare_data(cfg, tok)
    result = evaluate_loss(
        model,
        prepared.train.encoded,
        tok.pad_token_id,
        pick_device(args.device),
        batch_size=args.batch_size or 8,
    )
    out = {
        "model": args.model,
        "adapter": not args.no_adapter,
        "data": data,
        "examples": len(prepared.train.encoded),
        "rejected": len(prepared.rejects),
        **result,
    }
    print(json.dumps(out, indent=2))
    if args.output:
        Path(args.output).write_text(json.dumps(out, indent=2))
    return 0


# ----------------------------------------------------------------------------- suites


def default_output(target: str, suite_name: str) -> Path | None:
    """``RUN/eval-<suite>.json`` when ``target`` is a run dir (``tunesmith report`` shows it)."""
    run = Path(target)
    if (run / "final").is_dir() and (run / "config.yaml").is_file():
        return run / f"eval-{suite_name}.json"
    return None


def _eval_suite(args: argparse.Namespace) -> int:
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
    from tunesmith.eval.runner import evaluate_suite

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
