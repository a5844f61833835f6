#!/usr/bin/env python3
"""tunesmith vs TRL + PEFT on the same job, in one invocation, alternating.

SFT (implemented): LoRA r=16 (alpha 32, dropout 0.05) on all linear layers of
SmolLM2-135M-Instruct, 512 synthetic single-turn chats (rendered lengths ~50-330 tokens, fixed
seed), 8 examples per optimizer step, max length 512, loss on assistant tokens only, AdamW
(lr 2e-4, cosine, no warmup, no weight decay, clip 1.0), ``--steps`` optimizer steps.

* tunesmith runs through its real CLI (``python -m tunesmith.cli train CONFIG``), unpacked with
  ``micro_batch_size=8`` (the same 8 examples per step as TRL) and packed (``data.packing=true``;
  ``micro_batch_size`` then counts packed rows of up to 512 tokens, chosen so that a step holds
  8 examples on average), each in ``fp32`` and ``bf16`` (autocast; tunesmith's ``auto`` here).
* TRL runs ``SFTTrainer`` on conversational prompt-completion data (``completion_only_loss``),
  padded batches of 8, in the same precisions (``bf16=True/False``), see ``_trl_worker.py``.
* Every run is its own subprocess; its peak RSS is the child's ``ru_maxrss`` from ``os.wait4``,
  its CPU time per step is sampled from ``/proc`` (``_child.py``).
* The TRL data file lists the examples in the order tunesmith's unpacked run visits them and
  TRL samples sequentially, so both see the same 8 examples in every step (checked: the token
  ids of step 1 and the real-token count of every step must be equal) and their step-1 losses
  can be compared.

Reported per variant: median step time (the first step skipped as warm-up), CPU-seconds per
step, assistant tokens/s, peak RSS, padding waste, MFU against a measured matmul peak, and
tunesmith/TRL ratios. DPO and GRPO comparisons are stubs until those methods exist in tunesmith.

Usage (on a shared machine add ``--threads 1``: see benchmarks/README.md, "Noise")::

    python benchmarks/compare_trl.py [--steps 6] [--repeats 1] [--precisions fp32,bf16]
        [--layouts unpacked,packed] [--threads N] [--out benchmarks/results/compare_trl_sft.json]
    python benchmarks/make_table.py benchmarks/results/compare_trl_sft.json
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import sys
import tempfile
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import yaml

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))

from _bench_data import (  # noqa: E402
    ids_digest,
    length_stats,
    make_examples,
    trl_order,
    write_datasets,
)
from _child import Child, run_child  # noqa: E402
from _machine import load_average, machine_info, matmul_peak  # noqa: E402

MODEL = "smollm2-135m-instruct"
DEFAULT_OUT = HERE / "results" / "compare_trl_sft.json"
GIB = 2**30


@dataclass(frozen=True)
class Job:
    """One benchmark run: a tool, a layout, a precision, a repeat. tunesmith: ``unpacked`` or
    ``packed``; TRL: ``unpacked`` (padded), ``padding_free`` (TRL's ``padding_free=True``: rows
    laid end to end, no padding) or ``default`` (TRL's own SFTConfig defaults: padded, bf16,
    gradient checkpointing on), the peer's side of the default-against-default row."""

    tool: str  # "tunesmith" | "trl"
    layout: str  # "unpacked" | "packed" | "padding_free" | "default"
    precision: str  # "fp32" | "bf16"
    repeat: int

    @property
    def variant(self) -> str:
        return f"{self.tool}-{self.layout}-{self.precision}"

    @property
    def name(self) -> str:
        return f"{self.variant}-r{self.repeat}"


# ----------------------------------------------------------------------------- arguments


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--method", choices=("sft", "dpo", "grpo", "all"), default="sft")
    p.add_argument("--steps", type=int, default=6, help="optimizer steps per run (>= 2)")
    p.add_argument("--repeats", type=int, default=1, help="runs of each variant, alternating")
    p.add_argument("--precisions", default="fp32,bf16", help="comma list of fp32, bf16")
    p.add_argument("--layouts", default="unpacked,packed", help="tunesmith: unpacked, packed")
    p.add_argument(
        "--trl-layouts",
        default="unpacked,padding_free",
        help="TRL: unpacked (padded), padding_free; the best one is the like-for-like peer",
    )
    p.add_argument(
        "--no-defaults",
        action="store_true",
        help="skip TRL's all-defaults run (the default-against-default row)",
    )
    p.add_argument("--no-trl", action="store_true", help="tunesmith only (no ratios)")
    p.add_argument("--examples", type=int, default=512)
    p.add_argument("--batch", type=int, default=8, help="examples per optimizer step")
    p.add_argument("--packed-rows", type=int, default=0, help="packed micro-batch; 0 = auto")
    p.add_argument("--max-length", type=int, default=512)
    p.add_argument("--lr", type=float, default=2e-4)
    p.add_argument("--seed", type=int, default=42, help="training seed (data order, LoRA init)")
    p.add_argument("--data-seed", type=int, default=1234, help="seed of the synthetic data")
    p.add_argument(
        "--gradient-checkpointing",
        action="store_true",
        help="recompute activations in both tools (TRL's default is on, tunesmith's off; "
        "off here unless given, so that both do the same computation)",
    )
    p.add_argument("--threads", type=int, default=None, help="OMP_NUM_THREADS of the runs")
    p.add_argument("--peak-seconds", type=float, default=2.0, help="per matmul-peak size")
    p.add_argument("--out", type=Path, default=DEFAULT_OUT)
    p.add_argument("--workdir", type=Path, default=None, help="default: a temp dir, removed")
    args = p.parse_args(argv)
    if args.steps < 2:
        p.error("--steps must be >= 2 (the first step is warm-up)")
    args.precisions = [x for x in args.precisions.split(",") if x]
    args.layouts = [x for x in args.layouts.split(",") if x]
    args.trl_layouts = [x for x in args.trl_layouts.split(",") if x]
    return args


def schedule(args: argparse.Namespace) -> list[Job]:
    """The runs in execution order: per repeat and precision, tunesmith and TRL alternate
    (tunesmith unpacked, TRL, tunesmith packed); odd repeats run the list backwards."""
    jobs: list[Job] = []
    for r in range(args.repeats):
        block: list[Job] = []
        for prec in args.precisions:
            ts = [Job("tunesmith", layout, prec, r) for layout in args.layouts]
            trl = [] if args.no_trl else [Job("trl", lay, prec, r) for lay in args.trl_layouts]
            block += ts[:1] + trl + ts[1:]
        if not (args.no_trl or args.no_defaults):
            block.append(Job("trl", "default", "bf16", r))
        jobs += block if r % 2 == 0 else block[::-1]
    return jobs


# ----------------------------------------------------------------------------- data


def prepare_data(args: argparse.Namespace, work: Path) -> dict[str, Any]:
    """Write both data files and work out tunesmith's packed rows for this data."""
    from tunesmith.data.packing import pack_first_fit_decreasing
    from tunesmith.models.load import load_tokenizer, resolve_model

    model_dir = resolve_model(MODEL)
    tokenizer = load_tokenizer(model_dir)
    examples = make_examples(tokenizer, args.examples, args.data_seed)
    order = trl_order(len(examples), args.seed, args.steps, args.batch)
    paths = write_datasets(work / "data", examples, order)
    encoded = tunesmith_ids(paths["tunesmith"], tokenizer, args.max_length)
    lengths = [len(ids) for ids in encoded]
    rows = pack_first_fit_decreasing(lengths, args.max_length)
    packed_rows = args.packed_rows or max(1, round(args.batch * len(rows) / len(lengths)))
    return {
        "model_dir": str(model_dir),
        "paths": {k: str(v) for k, v in paths.items()},
        "n_examples": len(examples),
        "token_lengths": length_stats(tokenizer, examples),
        "step1_ids_sha256": ids_digest([encoded[i] for i in order[: args.batch]]),
        "packed_rows_total": len(rows),
        "packed_micro_batch_size": packed_rows,
        "packed_examples_per_step": packed_examples_per_step(
            [r.items for r in rows], args.seed, packed_rows, args.steps
        ),
    }


def tunesmith_ids(path: Path, tokenizer: Any, max_length: int) -> list[list[int]]:
    """Token ids exactly as tunesmith encodes the examples (same library call)."""
    from tunesmith.data.formats import load_examples
    from tunesmith.data.templates import encode_example

    examples, _ = load_examples(str(path), "messages")
    return [encode_example(ex, tokenizer, max_length=max_length).input_ids for ex in examples]


def packed_examples_per_step(
    rows: list[tuple[int, ...]], seed: int, micro_batch: int, steps: int
) -> list[int]:
    """How many examples each step of the packed run holds (tunesmith's own step order)."""
    from tunesmith.data.dataset import step_batches

    batches = step_batches(len(rows), seed, micro_batch, 1)
    return [sum(len(rows[i]) for mb in next(batches) for i in mb) for _ in range(steps)]


# ----------------------------------------------------------------------------- running


def child_env(threads: int | None) -> dict[str, str]:
    """Offline, quiet children; ``threads`` pins OpenMP/MKL threads when given."""
    env = dict(os.environ)
    if threads:
        env.update(OMP_NUM_THREADS=str(threads), MKL_NUM_THREADS=str(threads))
    env.update(
        HF_HUB_OFFLINE="1",
        HF_DATASETS_OFFLINE="1",
        TRANSFORMERS_OFFLINE="1",
        TOKENIZERS_PARALLELISM="false",
        TQDM_DISABLE="1",
        PYTHONUNBUFFERED="1",
    )
    return env


def tunesmith_config(args: argparse.Namespace, data: dict[str, Any], job: Job, work: Path) -> dict:
    """The YAML config of one tunesmith run (written into the work dir)."""
    packed = job.layout == "packed"
    return {
        "method": "sft",
        "model": {"name_or_path": MODEL},
        "data": {
            "train": data["paths"]["tunesmith"],
            "format": "messages",
            "max_length": args.max_length,
            "packing": packed,
            "val_fraction": 0.0,
        },
        "train": {
            "output_dir": str(work / "runs"),
            "run_name": job.name,
            "max_steps": args.steps,
            "micro_batch_size": data["packed_micro_batch_size"] if packed else args.batch,
            "grad_accum": 1,
            "precision": job.precision,
            "seed": args.seed,
            "log_every": 1,
            **({"gradient_checkpointing": True} if args.gradient_checkpointing else {}),
        },
        "optim": {
            "lr": args.lr,
            "schedule": "cosine",
            "warmup_steps": 0,
            "weight_decay": 0.0,
            "max_grad_norm": 1.0,
        },
        "adapter": {"type": "lora"},
        "lora": {"r": 16, "alpha": 32, "dropout": 0.05, "target_modules": "all-linear"},
    }


def run_tunesmith(args: argparse.Namespace, data: dict[str, Any], job: Job, work: Path) -> dict:
    cfg = tunesmith_config(args, data, job, work)
    cfg_path = work / f"{job.name}.yaml"
    cfg_path.write_text(yaml.safe_dump(cfg, sort_keys=False))
    cmd = [sys.executable, "-m", "tunesmith.cli", "train", str(cfg_path)]
    run_dir = work / "runs" / job.name
    log = work / f"{job.name}.log"
    child = run_child(cmd, log, child_env(args.threads), watch=run_dir / "metrics.jsonl")
    _check(child, log)
    env = json.loads((run_dir / "env.json").read_text())
    steps = read_steps(run_dir / "metrics.jsonl")
    for row, cpu in zip(steps, child.step_cpu_seconds, strict=False):
        row["step_cpu_seconds"] = cpu
    return {
        "child": child,
        "steps": steps,
        "params": _params(env),
        "config": cfg,
    }


def _params(env: dict[str, Any]) -> dict[str, int]:
    """Trainable and total parameter counts from tunesmith's env.json."""
    return {k: int(env[k]) for k in ("trainable_params", "total_params")}


def trl_spec(args: argparse.Namespace, data: dict[str, Any], job: Job, out: Path) -> dict:
    return {
        "model_dir": data["model_dir"],
        "data": data["paths"]["trl"],
        "out_dir": str(out),
        "steps": args.steps,
        "micro_batch_size": args.batch,
        "grad_accum": 1,
        "lr": args.lr,
        "schedule": "cosine",
        "warmup_steps": 0,
        "weight_decay": 0.0,
        "max_grad_norm": 1.0,
        "precision": job.precision,
        "gradient_checkpointing": args.gradient_checkpointing or job.layout == "default",
        "padding_free": job.layout == "padding_free",
        "max_length": args.max_length,
        "lora_r": 16,
        "lora_alpha": 32,
        "lora_dropout": 0.05,
        "seed": args.seed,
        "loss_check": job.repeat == 0,
    }


def run_trl(args: argparse.Namespace, data: dict[str, Any], job: Job, work: Path) -> dict:
    out = work / "trl" / job.name
    out.mkdir(parents=True, exist_ok=True)
    spec = trl_spec(args, data, job, out)
    (out / "spec.json").write_text(json.dumps(spec, indent=2))
    cmd = [sys.executable, str(HERE / "_trl_worker.py"), str(out / "spec.json")]
    child = run_child(cmd, work / f"{job.name}.log", child_env(args.threads))
    _check(child, work / f"{job.name}.log")
    summary = json.loads((out / "summary.json").read_text())
    return {
        "child": child,
        "steps": read_steps(out / "metrics.jsonl"),
        "params": {k: summary[k] for k in ("trainable_params", "total_params")},
        "first_batch_check": summary["first_batch_check"],
        "config": spec,
    }


def _check(child: Child, log: Path) -> None:
    if child.rc != 0:
        tail = "".join(log.read_text().splitlines(keepends=True)[-30:])
        raise RuntimeError(f"run failed (exit {child.rc}); last lines of {log}:\n{tail}")


def read_steps(path: Path) -> list[dict[str, Any]]:
    """The per-step training records of a metrics.jsonl (tunesmith's or the TRL worker's)."""
    rows = [json.loads(line) for line in path.read_text().splitlines() if line.strip()]
    steps = [r for r in rows if r.get("split") == "train"]
    for r in steps:
        r.setdefault("assistant_tokens", r["trained_tokens"])
    return steps


# ----------------------------------------------------------------------------- summaries


def summarise_run(steps: list[dict[str, Any]], examples_per_step: list[int]) -> dict[str, Any]:
    """Per-run numbers; rates are sums over the timed steps (all but the first)."""
    timed = steps[1:]
    seconds = sum(s["step_seconds"] for s in timed)
    cpu = [s["step_cpu_seconds"] for s in timed if s.get("step_cpu_seconds") is not None]
    examples = sum(examples_per_step[1 : len(steps)])
    return {
        "steps": len(steps),
        "step_seconds": [s["step_seconds"] for s in steps],
        "median_step_seconds": statistics.median(s["step_seconds"] for s in timed),
        "min_step_seconds": min(s["step_seconds"] for s in timed),
        "step_cpu_seconds": [s.get("step_cpu_seconds") for s in steps],
        "median_step_cpu_seconds": statistics.median(cpu) if cpu else None,
        "assistant_tokens_per_s": sum(s["assistant_tokens"] for s in timed) / seconds,
        "assistant_tokens_per_cpu_s": _per_cpu_second(timed, "assistant_tokens"),
        "trained_tokens_per_s": sum(s["trained_tokens"] for s in timed) / seconds,
        "real_tokens_per_s": sum(s["real_tokens"] for s in timed) / seconds,
        "examples_per_s": examples / seconds,
        "padding_waste": 1.0
        - sum(s["real_tokens"] for s in steps) / sum(s["slots"] for s in steps),
        "losses": [s["loss"] for s in steps],
        "real_tokens": [s["real_tokens"] for s in steps],
        "assistant_tokens": [s["assistant_tokens"] for s in steps],
    }


def _per_cpu_second(timed: list[dict[str, Any]], key: str) -> float | None:
    """``key`` per CPU-second over the steps that have a CPU time (contention-free rate when a
    run uses one thread)."""
    pairs = [(s[key], s["step_cpu_seconds"]) for s in timed if s.get("step_cpu_seconds")]
    return sum(k for k, _ in pairs) / sum(c for _, c in pairs) if pairs else None


def _median_or_none(values: list[float]) -> float | None:
    return statistics.median(values) if values else None


def _mean_or_none(values: list[float | None]) -> float | None:
    present = [v for v in values if v is not None]
    return statistics.mean(present) if present else None


def flops_per_token(params: dict[str, int]) -> dict[str, float]:
    """Model FLOPs per processed token (approximations; attention's T^2 term is ignored).

    ``lora``: the frozen weights N_f cost 2 N_f forward + 2 N_f backward (input gradients only;
    no weight gradients are computed for them); the LoRA weights N_l cost the usual 6 N_l.
    ``6n``: the conventional 6 N of full fine-tuning (forward 2N + backward 4N), as often quoted.
    """
    n_total, n_lora = params["total_params"], params["trainable_params"]
    return {"lora": 4.0 * (n_total - n_lora) + 6.0 * n_lora, "6n": 6.0 * n_total}


def aggregate(runs: list[dict[str, Any]], peaks: dict[str, float]) -> dict[str, Any]:
    """One variant over its repeats: pooled timed steps, max peak RSS, MFU."""
    first = runs[0]
    summaries = [r["summary"] for r in runs]
    pooled = [t for s in summaries for t in s["step_seconds"][1:]]
    weight = [len(s["step_seconds"]) - 1 for s in summaries]

    def pooled_rate(key: str) -> float:
        return sum(s[key] * w for s, w in zip(summaries, weight, strict=True)) / sum(weight)

    real_rate = pooled_rate("real_tokens_per_s")
    fpt = flops_per_token(first["params"])
    peak = peaks[first["job"]["precision"]]
    return {
        "tool": first["job"]["tool"],
        "layout": first["job"]["layout"],
        "precision": first["job"]["precision"],
        "repeats": len(runs),
        "timed_steps": len(pooled),
        "median_step_seconds": statistics.median(pooled),
        "min_step_seconds": min(pooled),
        "median_step_cpu_seconds": _median_or_none(
            [c for s in summaries for c in s["step_cpu_seconds"][1:] if c is not None]
        ),
        "cpu_utilisation": statistics.mean(r["cpu_utilisation"] for r in runs),
        "assistant_tokens_per_s": pooled_rate("assistant_tokens_per_s"),
        "assistant_tokens_per_cpu_s": _mean_or_none(
            [s["assistant_tokens_per_cpu_s"] for s in summaries]
        ),
        "trained_tokens_per_s": pooled_rate("trained_tokens_per_s"),
        "real_tokens_per_s": real_rate,
        "examples_per_s": pooled_rate("examples_per_s"),
        "peak_rss_gib": max(r["peak_rss_bytes"] for r in runs) / GIB,
        "peak_rss_gib_each": [r["peak_rss_bytes"] / GIB for r in runs],
        "padding_waste": statistics.mean(s["padding_waste"] for s in summaries),
        "mfu": fpt["lora"] * real_rate / peak,
        "mfu_6n": fpt["6n"] * real_rate / peak,
        "params": first["params"],
    }


RATIO_KEYS = (
    "median_step_seconds",
    "median_step_cpu_seconds",
    "assistant_tokens_per_s",
    "assistant_tokens_per_cpu_s",
    "examples_per_s",
    "peak_rss_gib",
    "padding_waste",
    "mfu",
)


def best_trl(results: dict[str, dict[str, Any]], precision: str) -> str | None:
    """The TRL variant at ``precision`` with the most assistant tokens/s (padded or
    padding-free; TRL's all-defaults run is not a like-for-like candidate)."""
    names = [
        n
        for n, r in results.items()
        if r["tool"] == "trl" and r["precision"] == precision and r["layout"] != "default"
    ]
    return max(names, key=lambda n: results[n]["assistant_tokens_per_s"], default=None)


def _ratio(a: dict[str, Any], b: dict[str, Any]) -> dict[str, float | None]:
    return {k: (a[k] / b[k] if a[k] and b[k] else None) for k in RATIO_KEYS}


def ratios(results: dict[str, dict[str, Any]]) -> dict[str, dict[str, Any]]:
    """tunesmith / TRL for every tunesmith variant against the best TRL variant at the same
    precision (named in ``trl``)."""
    out: dict[str, dict[str, Any]] = {}
    for name, res in results.items():
        trl = best_trl(results, res["precision"])
        if res["tool"] != "tunesmith" or trl is None:
            continue
        out[name] = {**_ratio(res, results[trl]), "trl": trl}
    return out


def default_vs_default(results: dict[str, dict[str, Any]]) -> dict[str, Any] | None:
    """What a user gets from each tool's defaults: tunesmith's recipes (packed, ``precision:
    auto``, which is bf16 on this machine when bf16 is native) against TRL's SFTConfig defaults
    (padded, bf16, gradient checkpointing)."""
    import torch

    from tunesmith.engine.precision import resolve_precision

    auto = resolve_precision("auto", torch.device("cpu"))
    ours, theirs = results.get(f"tunesmith-packed-{auto}"), results.get("trl-default-bf16")
    if ours is None or theirs is None:
        return None
    return {
        **_ratio(ours, theirs),
        "tunesmith": f"tunesmith-packed-{auto}",
        "trl": "trl-default-bf16",
    }


def paired_step_ratios(runs: list[dict[str, Any]], key: str) -> dict[str, float]:
    """tunesmith-unpacked / TRL per-step ``key`` (``step_seconds`` or ``step_cpu_seconds``),
    step by step (the two see identical batches in every step), median over the timed steps of
    all repeats: less sensitive to a noisy neighbour than a ratio of medians."""
    by_key = {(Job(**r["job"]).variant, r["job"]["repeat"]): r for r in runs}
    out: dict[str, list[float]] = {}
    for (variant, repeat), run in by_key.items():
        trl = by_key.get((variant.replace("tunesmith-", "trl-"), repeat))
        if not variant.startswith("tunesmith-unpacked") or trl is None:
            continue
        pairs = list(zip(run["summary"][key], trl["summary"][key], strict=False))[1:]
        out.setdefault(variant, []).extend(a / b for a, b in pairs if a and b)
    return {k: statistics.median(v) for k, v in out.items() if v}


def _threads(args: argparse.Namespace) -> int:
    return args.threads or os.cpu_count() or 1


def loss_check(runs: list[dict[str, Any]], data: dict[str, Any]) -> dict[str, Any]:
    """Step-1 loss of tunesmith (unpacked) vs TRL on the same 8 examples, per precision."""
    out: dict[str, Any] = {}
    by_name = {
        r["job"]["tool"] + "-" + r["job"]["layout"] + "-" + r["job"]["precision"]: r
        for r in runs
        if r["job"]["repeat"] == 0
    }
    for name, trl in by_name.items():
        ts = by_name.get(name.replace("trl-", "tunesmith-"))
        if not name.startswith("trl-") or ts is None:
            continue
        check = trl.get("first_batch_check") or {}
        ts_loss, trl_loss = ts["summary"]["losses"][0], trl["summary"]["losses"][0]
        matched = check.get("matched_labels_loss")
        out[trl["job"]["precision"]] = {
            "tunesmith": ts_loss,
            "trl_logged": trl_loss,
            "trl_logged_rel_diff": ts_loss / trl_loss - 1.0,
            "trl_same_labels": matched,
            "trl_same_labels_rel_diff": (ts_loss / matched - 1.0) if matched else None,
            "within_1pct_same_labels": bool(matched and abs(ts_loss / matched - 1.0) < 0.01),
            "check_vs_logged_rel_diff": (check["trl_labels_loss"] / trl_loss - 1.0)
            if check
            else None,
            "same_token_ids_step1": check.get("input_ids_sha256") == data["step1_ids_sha256"],
            "same_examples_every_step": ts["summary"]["real_tokens"]
            == trl["summary"]["real_tokens"],
            "first_batch_check": check,
        }
    return out


# ----------------------------------------------------------------------------- main


def measure_peaks(seconds: float) -> dict[str, Any]:
    """Best matmul FLOP/s per dtype over a few sizes; MFU uses fp32's for fp32 runs and
    bf16's for bf16-autocast runs."""
    detail = {
        dtype: [matmul_peak(dtype, size, seconds) for size in (1024, 2048, 4096)]
        for dtype in ("float32", "bfloat16")
    }
    best = {d: max(r["flops_per_s"] for r in rs) for d, rs in detail.items()}
    return {"fp32": best["float32"], "bf16": best["bfloat16"], "detail": detail}


def run_job(args: argparse.Namespace, data: dict[str, Any], job: Job, work: Path) -> dict:
    print(f"[compare_trl] {job.name} ...", flush=True)
    runner = run_tunesmith if job.tool == "tunesmith" else run_trl
    res = runner(args, data, job, work)
    packed = job.tool == "tunesmith" and job.layout == "packed"
    per_step = data["packed_examples_per_step"] if packed else [args.batch] * args.steps
    child: Child = res.pop("child")
    res.update(
        job=asdict(job),
        summary=summarise_run(res["steps"], per_step),
        wall_seconds=child.wall_seconds,
        cpu_seconds=child.cpu_seconds,
        cpu_utilisation=child.cpu_seconds / child.wall_seconds / _threads(args),
        peak_rss_bytes=child.peak_rss_bytes,
        load_before=child.load_before,
        load_after=child.load_after,
    )
    s = res["summary"]
    print(
        f"[compare_trl]   median {s['median_step_seconds']:.2f} s/step "
        f"({s['median_step_cpu_seconds'] or 0:.2f} CPU-s), "
        f"{s['assistant_tokens_per_s']:.1f} assistant tok/s, peak RSS "
        f"{child.peak_rss_bytes / GIB:.2f} GiB, padding {s['padding_waste']:.1%}, "
        f"step-1 loss {s['losses'][0]:.4f} (wall {child.wall_seconds:.0f} s)",
        flush=True,
    )
    return res


def _warn_if_busy(load: list[float], threads: int | None) -> None:
    """On a busy machine, runs with one thread per core stall at every OpenMP barrier (measured
    here: 4-10x slower steps than with one thread); say so."""
    cores = os.cpu_count() or 1
    if load[0] > 0.5 * cores and (threads or cores) > 1:
        print(
            f"[compare_trl] WARNING: load average {load[0]} on {cores} cores; with "
            f"{threads or cores} threads per run, timings will be dominated by contention. "
            "Consider --threads 1.",
            flush=True,
        )


def run_sft(args: argparse.Namespace) -> dict[str, Any]:
    work = args.workdir or Path(tempfile.mkdtemp(prefix="compare_trl-"))
    work.mkdir(parents=True, exist_ok=True)
    started = time.perf_counter()
    load_start = load_average()
    _warn_if_busy(load_start, args.threads)
    if args.threads:
        import torch

        torch.set_num_threads(args.threads)  # the peak must use the runs' thread count
    machine = machine_info()
    print(f"[compare_trl] measuring matmul peaks (load {load_start})", flush=True)
    peaks = measure_peaks(args.peak_seconds)
    data = prepare_data(args, work)
    runs = [run_job(args, data, job, work) for job in schedule(args)]
    variants: dict[str, list[dict[str, Any]]] = {}
    for r in runs:
        variants.setdefault(Job(**r["job"]).variant, []).append(r)
    results = {name: aggregate(rs, peaks) for name, rs in variants.items()}
    report = {
        "benchmark": "compare_trl_sft",
        "command": " ".join(["python", *sys.argv]),
        "settings": _settings(args, data),
        "machine": machine,
        "load_average": {"start": load_start, "end": load_average()},
        "matmul_peak_flops": peaks,
        "data": {k: v for k, v in data.items() if k not in ("paths", "model_dir")},
        "results": results,
        "ratios_tunesmith_over_trl": ratios(results),
        "default_vs_default": default_vs_default(results),
        "paired_step_ratio_unpacked": {
            "wall": paired_step_ratios(runs, "step_seconds"),
            "cpu": paired_step_ratios(runs, "step_cpu_seconds"),
        },
        "first_step_loss": loss_check(runs, data),
        "runs": runs,
        "total_seconds": time.perf_counter() - started,
    }
    if args.workdir is None:
        shutil.rmtree(work, ignore_errors=True)
    return report


def _settings(args: argparse.Namespace, data: dict[str, Any]) -> dict[str, Any]:
    return {
        "model": MODEL,
        "steps": args.steps,
        "repeats": args.repeats,
        "examples_per_step": args.batch,
        "packed_micro_batch_rows": data["packed_micro_batch_size"],
        "max_length": args.max_length,
        "lr": args.lr,
        "schedule": "cosine, no warmup",
        "optimizer": "AdamW (0.9, 0.999), eps 1e-8, weight decay 0, clip 1.0",
        "lora": {"r": 16, "alpha": 32, "dropout": 0.05, "target_modules": "all-linear"},
        "loss": "assistant tokens only",
        "seed": args.seed,
        "data_seed": args.data_seed,
        "gradient_checkpointing": args.gradient_checkpointing,
        "threads_per_run": _threads(args),
        "timing": "median over steps 2..N (step 1 is warm-up); rates = sums over steps 2..N",
        "mfu_formula": "MFU = F * real_tokens_per_s / matmul_peak(precision); "
        "F = 4 N_frozen + 6 N_lora (mfu) or 6 N_total (mfu_6n)",
    }


def _delegate(script: str, args: argparse.Namespace) -> None:
    """DPO and GRPO have their own harnesses; run them with the shared options."""
    import subprocess

    cmd = [sys.executable, str(HERE / script), "--steps", str(args.steps)]
    if args.threads:
        cmd += ["--threads", str(args.threads)]
    subprocess.run(cmd, check=True)


def run_dpo(args: argparse.Namespace) -> None:
    """DPO vs TRL's DPOTrainer: ``compare_trl_dpo.py``."""
    _delegate("compare_trl_dpo.py", args)


def run_grpo(args: argparse.Namespace) -> None:
    """GRPO vs TRL's GRPOTrainer: ``compare_trl_grpo.py``."""
    _delegate("compare_trl_grpo.py", args)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    if args.method in ("dpo", "all"):
        run_dpo(args)
    if args.method in ("grpo", "all"):
        run_grpo(args)
    if args.method not in ("sft", "all"):
        return 0
    report = run_sft(args)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(report, indent=2) + "\n")
    from make_table import render

    print(render(report))
    print(f"[compare_trl] wrote {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
