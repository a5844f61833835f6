"""``tunesmith plan``: memory estimate and best fitting configuration; ``--advise`` and
``--data`` say whether fine-tuning is the right tool."""

from __future__ import annotations

import argparse
import json
from dataclasses import asdict
from typing import Any

from tunesmith.errors import UserError


def register(sub: argparse._SubParsersAction) -> None:  # type: ignore[type-arg]
    p = sub.add_parser(
        "plan",
        help="memory estimate and the cheapest configuration that fits; --advise: fine-tune?",
        description=__doc__,
    )
    p.add_argument(
        "model", nargs="?", help="model dir, run dir, alias, or a size: 1B 3B 7B 8B 13B 34B 65B 70B"
    )
    _add_memory_args(p)
    _add_advice_args(p)
    p.add_argument("--json", action="store_true", help="print JSON instead of text")
    p.set_defaults(func=cmd_plan)


def _add_memory_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("--method", choices=["full", "lora", "qlora"], default="lora")
    p.add_argument("--checkpointing", action="store_true", help="gradient checkpointing")
    p.add_argument("--seq-len", type=int, default=None, help="default: from --data, else 512")
    p.add_argument("--micro-batch", type=int, default=1)
    p.add_argument("--grad-accum", type=int, default=1)
    p.add_argument("--optimizer", choices=["adamw", "adamw8bit", "sgd"], default="adamw")
    p.add_argument(
        "--optim-impl",
        choices=["auto", "fused", "foreach", "for-loop"],
        default="auto",
        help="AdamW kernel (optim.implementation); auto: fused, foreach under FSDP",
    )
    p.add_argument("--precision", choices=["fp32", "bf16", "bf16-pure"], default="bf16")
    p.add_argument("--lora-rank", type=int, default=16)
    p.add_argument("--lora-dropout", type=float, default=0.05, help="lora.dropout")
    p.add_argument(
        "--lora-targets", default="all-linear", help="all-linear, attention, or q_proj,v_proj,..."
    )
    p.add_argument("--devices", type=int, default=1, help="FSDP: shard N ways")
    p.add_argument("--device-gib", type=float, default=24.0, help="memory per device (GiB)")
    p.add_argument("--attention", choices=["sdpa", "eager"], default="sdpa")
    p.add_argument("--cpu", action="store_true", help="CPU: no CUDA context or fragmentation")


def _add_advice_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("--advise", action="store_true", help="fine-tune, RAG, few-shot or schema?")
    p.add_argument("--data", help="dataset: fills in examples, seq len, format-only, duplicates")
    p.add_argument("--examples", type=int, default=None, help="number of labelled examples")
    p.add_argument("--knowledge-changes-often", action="store_true")
    p.add_argument("--format-only", action="store_true", help="only the output format matters")
    p.add_argument("--eval-set", choices=["yes", "no"], default=None, help="clean eval set?")
    p.add_argument("--low-latency", action="store_true")
    p.add_argument("--low-cost", action="store_true")


def _targets(spec: str) -> tuple[str, ...]:
    from tunesmith.plan.memory import LORA_PRESETS

    if spec in LORA_PRESETS:
        return LORA_PRESETS[spec]
    return tuple(t.strip() for t in spec.split(",") if t.strip())


def _setup(args: argparse.Namespace, seq_len: int) -> Any:
    from tunesmith.plan.memory import TrainSetup

    return TrainSetup(
        method=args.method,
        checkpointing=args.checkpointing,
        seq_len=seq_len,
        micro_batch=args.micro_batch,
        optimizer=args.optimizer,
        optimizer_impl=args.optim_impl,
        precision=args.precision,
        lora_rank=args.lora_rank,
        lora_dropout=args.lora_dropout,
        lora_targets=_targets(args.lora_targets),
        devices=args.devices,
        attention=args.attention,
        device_type="cpu" if args.cpu else "cuda",
    )


def _data_facts(args: argparse.Namespace) -> Any:
    from tunesmith.plan.datafacts import data_facts

    tokenizer = None
    if args.model and args.model.upper() not in _named():
        from tunesmith.models.load import load_tokenizer
        from tunesmith.plan.shapes import _model_dir

        tokenizer = load_tokenizer(_model_dir(args.model))
    return data_facts(args.data, tokenizer)


def _named() -> set[str]:
    from tunesmith.plan.shapes import NAMED_SHAPES

    return set(NAMED_SHAPES)


def _advice(args: argparse.Namespace, facts: Any) -> Any:
    from tunesmith.plan.advisor import Facts, advise

    examples = args.examples if args.examples is not None else getattr(facts, "examples", None)
    return advise(
        Facts(
            examples=examples,
            knowledge_changes_often=args.knowledge_changes_often,
            format_only=args.format_only or bool(getattr(facts, "format_only", False)),
            has_eval_set=None if args.eval_set is None else args.eval_set == "yes",
            low_latency=args.low_latency,
            low_cost=args.low_cost,
            duplicate_fraction=getattr(facts, "duplicate_fraction", None),
        )
    )


def _memory(args: argparse.Namespace, seq_len: int) -> tuple[Any, Any]:
    from tunesmith.plan.memory import estimate
    from tunesmith.plan.search import best_fit
    from tunesmith.plan.shapes import resolve_shape

    shape = resolve_shape(args.model)
    setup = _setup(args, seq_len)
    return estimate(shape, setup), best_fit(shape, setup, args.device_gib, args.grad_accum)


def cmd_plan(args: argparse.Namespace) -> int:
    from tunesmith.plan import render

    if not (args.model or args.advise or args.data):
        raise UserError("tunesmith plan: give a model (or a size like 7B), --advise or --data")
    out: dict[str, Any] = {}
    text: list[str] = []
    facts = _data_facts(args) if args.data else None
    if facts is not None:
        out["data"] = asdict(facts) | {"seq_len": facts.seq_len}
        text.append(render.render_data(facts))
    if args.model:
        seq_len = args.seq_len or (facts.seq_len if facts else 512)
        est, best = _memory(args, seq_len)
        out["estimate"] = _estimate_json(est, args.device_gib)
        out["best"] = None if best is None else _best_json(best)
        text.append(render.render_estimate(est, args.device_gib))
        text.append(render.render_best(best, args.device_gib))
    if args.advise or args.data:
        advice = _advice(args, facts)
        out["advice"] = asdict(advice)
        text.append(render.render_advice(advice))
    print(json.dumps(out, indent=2, default=str) if args.json else "\n\n".join(text))
    return 0


def _estimate_json(e: Any, device_gib: float) -> dict[str, Any]:
    return {
        "setup": asdict(e.setup),
        "bytes": e.items,
        "peak": e.peak,
        "total": e.total,
        "fits": e.fits(device_gib),
        "total_params": e.total_params,
        "trainable_params": e.trainable_params,
        "notes": e.notes,
    }


def _best_json(c: Any) -> dict[str, Any]:
    return {
        "setup": asdict(c.estimate.setup),
        "total": c.estimate.total,
        "grad_accum": c.grad_accum,
        "relative_time": c.relative_time,
    }
