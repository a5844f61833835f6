"""``tunesmith plan``: memory estimate and best fitting configuration; ``--advise`` and
``--data`` say whether fine-tuning is the right tool."""

from __future__ import annotations

import argparse
import json
from dataclasses import fields


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
    _add_throughput_args(p)
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


def _add_throughput_args(p: argparse.ArgumentParser) -> None:
    from tunesmith.plan.throughput import ACCELERATORS, DEFAULT_MFU

    p.add_argument("--gpu", choices=sorted(ACCELERATORS), help="add a tokens/s estimate")
    p.add_argument("--gpus", type=int, default=1, help="accelerators (data parallel)")
    p.add_argument("--mfu", type=float, default=DEFAULT_MFU, help="assumed FLOPs utilisation")
    p.add_argument("--peak-tflops", type=float, default=None, help="device peak (e.g. a CPU)")
    p.add_argument("--bandwidth-gbs", type=float, default=None, help="device memory GB/s")


def _throughput(args: argparse.Namespace) -> tuple[str, dict[str, object]] | None:
    """The tokens/s estimate when ``--gpu`` or ``--peak-tflops`` asks for it."""
    if args.model is None or (args.gpu is None and args.peak_tflops is None):
        return None
    from tunesmith.plan.throughput import plan_throughput, render_throughput

    t, s = plan_throughput(
        args.model,
        gpu=args.gpu,
        gpus=args.gpus,
        mfu=args.mfu,
        peak_tflops=args.peak_tflops,
        bandwidth_gbs=args.bandwidth_gbs,
        method=args.method,
        seq_len=args.seq_len or 512,
        micro_batch=args.micro_batch,
        precision=args.precision,
        lora_rank=args.lora_rank,
        lora_targets=args.lora_targets,
        checkpointing=args.checkpointing,
    )
    return render_throughput(t, s), t.as_dict()


def cmd_plan(args: argparse.Namespace) -> int:
    """:func:`tunesmith.api.plan` with the setup and facts given as options."""
    from tunesmith.api import AdviceFacts, PlanSetup, plan

    setup = PlanSetup(**{f.name: getattr(args, f.name) for f in fields(PlanSetup)})
    facts = AdviceFacts(
        examples=args.examples,
        knowledge_changes_often=args.knowledge_changes_often,
        format_only=args.format_only,
        eval_set=None if args.eval_set is None else args.eval_set == "yes",
        low_latency=args.low_latency,
        low_cost=args.low_cost,
    )
    result = plan(args.model, data=args.data, advise=args.advise, setup=setup, facts=facts)
    speed = _throughput(args)
    if args.json:
        out = result.as_dict() | ({"throughput": speed[1]} if speed else {})
        print(json.dumps(out, indent=2, default=str))
    else:
        print(result.text + (f"\n{speed[0]}" if speed else ""))
    return 0
