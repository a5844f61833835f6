"""Tokens/s and peak memory against sequence length for SmolLM2 LoRA, packed.

For each length L (default 256, 512, 1024, 2048, 4096) the real CLI trains LoRA r=16 on all
linear layers of SmolLM2-135M-Instruct for ``--steps`` steps on synthetic text documents of
exactly L tokens (``train_on: all``), packed into rows of L, with the same number of tokens per
step at every length (``--tokens-per-step``, default 4096: 16 rows of 256 ... 1 row of 4096),
so the table shows how the cost of a token grows with the context it attends over (attention
is O(L) per token, the linear layers O(1)). Each run is its own process; peak RSS is that
process's. Median step seconds exclude step 1. Writes ``benchmarks/results/seq_len.json``::

    python benchmarks/seq_len.py --steps 4 --threads 2

(a smoke run: ``--lengths 64,128 --steps 2 --tokens-per-step 256``).
"""

from __future__ import annotations

import argparse
import json
import random
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import yaml

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))

from _child import run_child  # noqa: E402
from _machine import load_average, machine_info  # noqa: E402
from compare_trl import GIB, MODEL, child_env, read_steps  # noqa: E402

DEFAULT_OUT = HERE / "results" / "seq_len.json"


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--lengths", default="256,512,1024,2048,4096")
    p.add_argument("--steps", type=int, default=4)
    p.add_argument("--tokens-per-step", type=int, default=4096)
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--precision", default="auto", choices=("auto", "bf16", "fp32"))
    p.add_argument("--model", default=MODEL, help="model dir or alias (a tiny dir for smoke)")
    p.add_argument("--out", type=Path, default=DEFAULT_OUT)
    p.add_argument("--workdir", type=Path, default=None)
    args = p.parse_args(argv)
    args.lengths = [int(x) for x in args.lengths.split(",") if x]
    return args


def write_documents(tokenizer: Any, path: Path, length: int, count: int, seed: int = 0) -> None:
    """``count`` text records of exactly ``length`` tokens (random vocabulary words, re-tokenised
    and cut to size) as JSONL."""
    rng = random.Random(seed + length)
    vocab = [w for w in tokenizer.get_vocab() if w.isalpha() and 3 <= len(w) <= 8][:5000]
    with path.open("w") as fh:
        for _ in range(count):
            words = " ".join(rng.choice(vocab) for _ in range(2 * length))
            ids = tokenizer(words, add_special_tokens=False)["input_ids"][: length - 2]
            fh.write(json.dumps({"text": tokenizer.decode(ids)}) + "\n")


def config(args: argparse.Namespace, data: Path, length: int, work: Path) -> dict[str, Any]:
    rows = max(1, args.tokens_per_step // length)
    return {
        "method": "sft",
        "model": {"name_or_path": args.model},
        "data": {
            "train": str(data),
            "format": "text",
            "train_on": "all",
            "max_length": length,
            "packing": True,
            "val_fraction": 0.0,
        },
        "train": {
            "output_dir": str(work / "runs"),
            "run_name": f"L{length}",
            "max_steps": args.steps,
            "micro_batch_size": rows,
            "grad_accum": 1,
            "precision": args.precision,
            "log_every": 1,
        },
        "adapter": {"type": "lora"},
        "lora": {"r": 16, "alpha": 32, "dropout": 0.0, "target_modules": "all-linear"},
    }


def run_length(args: argparse.Namespace, tokenizer: Any, length: int, work: Path) -> dict:
    rows = max(1, args.tokens_per_step // length)
    data = work / f"docs_{length}.jsonl"
    write_documents(tokenizer, data, length, rows * (args.steps + 1))
    cfg_path = work / f"L{length}.yaml"
    cfg_path.write_text(yaml.safe_dump(config(args, data, length, work), sort_keys=False))
    log = work / f"L{length}.log"
    run_dir = work / "runs" / f"L{length}"
    print(f"[seq_len] L={length}: {rows} row(s) per step ...", flush=True)
    cmd = [sys.executable, "-m", "tunesmith.cli", "train", str(cfg_path)]
    child = run_child(cmd, log, child_env(args.threads), watch=run_dir / "metrics.jsonl")
    if child.rc != 0:
        raise RuntimeError(f"L={length} failed (exit {child.rc}); see {log}")
    steps = read_steps(run_dir / "metrics.jsonl")[1:]  # step 1 is warm-up
    seconds = sum(s["step_seconds"] for s in steps)
    result = {
        "rows_per_step": rows,
        "median_step_seconds": statistics.median(s["step_seconds"] for s in steps),
        "real_tokens_per_s": sum(s["real_tokens"] for s in steps) / seconds,
        "peak_rss_gib": child.peak_rss_bytes / GIB,
    }
    print(
        f"[seq_len]   {result['real_tokens_per_s']:.0f} tok/s, "
        f"peak RSS {result['peak_rss_gib']:.2f} GiB",
        flush=True,
    )
    return result


def main(argv: list[str] | None = None) -> int:
    from tunesmith.models.load import load_tokenizer, resolve_model

    args = parse_args(argv)
    work = args.workdir or Path(tempfile.mkdtemp(prefix="seq_len-"))
    work.mkdir(parents=True, exist_ok=True)
    tokenizer = load_tokenizer(resolve_model(args.model))
    started, load = time.perf_counter(), load_average()
    results = {str(n): run_length(args, tokenizer, n, work) for n in args.lengths}
    first = results[str(args.lengths[0])]
    for r in results.values():
        r["tokens_per_s_vs_shortest"] = r["real_tokens_per_s"] / first["real_tokens_per_s"]
    report = {
        "command": "python benchmarks/seq_len.py "
        + " ".join(sys.argv[1:] if argv is None else argv),
        "machine": machine_info(),
        "load_average_start": load,
        "wall_seconds": time.perf_counter() - started,
        "settings": {k: str(v) for k, v in vars(args).items() if k not in ("out", "workdir")},
        "results": results,
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(report, indent=2) + "\n")
    print("| length | rows/step | tokens/s | x shortest | peak RSS |\n|--:|--:|--:|--:|--:|")
    for n, r in results.items():
        print(
            f"| {n} | {r['rows_per_step']} | {r['real_tokens_per_s']:.0f} "
            f"| {r['tokens_per_s_vs_shortest']:.2f} | {r['peak_rss_gib']:.2f} GiB |"
        )
    print(f"[seq_len] wrote {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
