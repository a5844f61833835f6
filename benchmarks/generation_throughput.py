#!/usr/bin/env python3
"""Generated tokens/s of ``tunesmith.generation.sample`` on SmolLM2-135M-Instruct (CPU).

Batch sizes 1, 8 and 32 (prompts are short arithmetic chats rendered with the model's template,
each batch = ``batch`` distinct prompts), ``--new-tokens`` new tokens per row. Both engines run
on identical inputs: ``sample`` (tunesmith's decode loop over the model's KV cache) and, for
reference, ``model.generate`` (transformers), greedy so they do the same work, plus ``sample``
at temperature 1 (the GRPO setting). Rows that end early (end-of-turn) count only their tokens.
The GRPO shape (``batch // 8`` prompts x 8 samples, temperature 1) runs twice on the decoding
engine: each prompt prefilled once and its cache rows shared by its 8 samples, and prefilled
8 times (``share_prefix=False``); both draw the same tokens (the seeds are fixed).

Usage::

    OMP_NUM_THREADS=1 python benchmarks/generation_throughput.py [--threads 1] [--new-tokens 64]
        [--batches 1,8,32] [--out benchmarks/results/generation_throughput.json]
"""

from __future__ import annotations

import argparse
import json
import random
import sys
import time
from pathlib import Path
from typing import Any

import torch

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))

from _machine import load_average, machine_info  # noqa: E402

from tunesmith.data.completion_batches import left_pad  # noqa: E402
from tunesmith.data.records import Message  # noqa: E402
from tunesmith.data.templates import encode_prompt  # noqa: E402
from tunesmith.decoding import Engine, Request  # noqa: E402
from tunesmith.generation import (  # noqa: E402
    SamplingParams,
    _eos_ids,
    model_engine_forward,
    sample,
)
from tunesmith.models.load import load_causal_lm, load_tokenizer, resolve_model  # noqa: E402


def _prompts(tokenizer: Any, n: int) -> list[list[int]]:
    rng = random.Random(0)
    out = []
    for _ in range(n):
        a, b = rng.randint(10, 99), rng.randint(10, 99)
        msg = [Message(role="user", content=f"What is {a} + {b}? Explain briefly.")]
        out.append(encode_prompt(msg, tokenizer))
    return out


def _hf_generate(model: Any, tokenizer: Any, prompts: list[list[int]], new: int) -> int:
    enc = left_pad(prompts, tokenizer.pad_token_id)
    with torch.no_grad():
        out = model.generate(
            **enc,
            max_new_tokens=new,
            do_sample=False,
            eos_token_id=_eos_ids(tokenizer),
            pad_token_id=tokenizer.pad_token_id,
        )
    gen = out[:, enc["input_ids"].size(1) :]
    eos = torch.tensor(_eos_ids(tokenizer))
    total = 0
    for row in gen.tolist():  # tokens up to and including the first end-of-turn
        ends = [i for i, t in enumerate(row) if t in eos.tolist()]
        total += ends[0] + 1 if ends else len(row)
    return total


def _time(fn: Any) -> tuple[float, int]:
    t0 = time.perf_counter()
    tokens = fn()
    return time.perf_counter() - t0, tokens


def _groups(model: Any, tok: Any, prompts: list[list[int]], new: int, share: bool) -> int:
    """8 samples of each prompt, seeds fixed, on ``len(prompts) * 8`` slots."""
    hot = SamplingParams(max_new_tokens=new, temperature=1.0)
    decode = lambda ids: tok.decode(ids, skip_special_tokens=True)  # noqa: E731
    engine = Engine(
        model_engine_forward(model), decode, set(_eos_ids(tok)), 8 * len(prompts),
        share_prefix=share,
    )  # fmt: skip
    with torch.no_grad():
        rows = engine.run([Request(p, hot, seed=i, num_samples=8) for i, p in enumerate(prompts)])
    return sum(len(r.tokens) for r in rows)


def _measure(model: Any, tok: Any, batch: int, new: int) -> dict[str, Any]:
    prompts = _prompts(tok, batch)
    greedy = SamplingParams(max_new_tokens=new)
    hot = SamplingParams(max_new_tokens=new, temperature=1.0, seed=0)
    runs = {
        "sample_greedy": lambda: sum(
            len(c.token_ids) for c in sample(model, tok, prompts, greedy, batch_size=batch)
        ),
        "hf_generate_greedy": lambda: _hf_generate(model, tok, prompts, new),
        "sample_t1": lambda: sum(
            len(c.token_ids) for c in sample(model, tok, prompts, hot, batch_size=batch)
        ),
    }
    if batch >= 8:
        groups = prompts[: batch // 8]
        runs["groups_g8_shared_prefill"] = lambda: _groups(model, tok, groups, new, True)
        runs["groups_g8_prefill_each"] = lambda: _groups(model, tok, groups, new, False)
    row: dict[str, Any] = {"batch": batch, "load_before": load_average()}
    for name, fn in runs.items():
        seconds, tokens = _time(fn)
        row[name] = {"seconds": round(seconds, 3), "tokens": tokens, "tok_s": tokens / seconds}
        print(f"batch {batch:3d} {name:20s} {tokens:5d} tokens {tokens / seconds:8.1f} tok/s")
    row["load_after"] = load_average()
    return row


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--new-tokens", type=int, default=64)
    ap.add_argument("--batches", default="1,8,32")
    ap.add_argument("--out", default=str(HERE / "results" / "generation_throughput.json"))
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    path = resolve_model("smollm2-135m-instruct")
    tok = load_tokenizer(path)
    model = load_causal_lm(path, dtype=torch.float32, device=torch.device("cpu")).eval()
    sample(model, tok, _prompts(tok, 2), SamplingParams(max_new_tokens=4))  # warm-up
    rows = [_measure(model, tok, int(b), args.new_tokens) for b in args.batches.split(",")]
    result = {
        "model": "smollm2-135m-instruct (fp32)",
        "new_tokens": args.new_tokens,
        "machine": machine_info(),
        "rows": rows,
    }
    Path(args.out).write_text(json.dumps(result, indent=2) + "\n")
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
