#!/usr/bin/env python3
"""Throughput and latency of ``tunesmith serve`` on SmolLM2-135M, batched vs one-by-one, and
int8 vs fp32 (speed and quality).

For each level of concurrency (1, 4, 16 clients, each with its own ``openai`` client and
thread) the same set of chat requests (greedy, ``--max-tokens`` new tokens) is sent to a real
server on a loopback port: once with batching on (window ``--window-ms``, up to 16 rows) and
once served one by one (``max_batch_size=1``). Reported: requests/s, completion tokens/s,
p50/p95 latency. Then an int8 server (dynamic quantization of every base linear layer) runs the
16-client load, and its quality is checked against fp32: identical greedy replies, the common
prefix of the replies, and next-token logits on every prompt (max |diff|, top-1 agreement).

Usage: ``OMP_NUM_THREADS=1 python benchmarks/serve_throughput.py [--requests 16]
[--max-tokens 24] [--out benchmarks/results/serve_throughput.json]``
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import threading
import time
from pathlib import Path
from typing import Any

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _machine import load_average, machine_info

from tunesmith.serve.server import ServerThread, build
from tunesmith.serve.settings import Batching, Limits, ServeSettings

MODEL = "smollm2-135m-instruct"
TOPICS = (
    "the sea", "a mountain", "a robot", "the moon", "a library", "a garden", "winter", "a train",
    "a cat", "the desert", "a violin", "a lighthouse", "rain", "a market", "a bridge", "a forest",
)  # fmt: skip


def prompts(n: int) -> list[str]:
    return [f"Write a short story about {TOPICS[i % len(TOPICS)]}." for i in range(n)]


def _quantile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))]


def run_load(url: str, texts: list[str], clients: int, max_tokens: int) -> dict[str, Any]:
    """``clients`` threads share ``texts`` round-robin; every reply is checked."""
    import openai

    latencies: list[float] = []
    replies: dict[int, str] = {}
    tokens = [0]
    lock = threading.Lock()

    def client(k: int) -> None:
        c = openai.OpenAI(base_url=f"{url}/v1", api_key="-", max_retries=0, timeout=600)
        for i in range(k, len(texts), clients):
            t0 = time.perf_counter()
            r = c.chat.completions.create(
                model=MODEL,
                messages=[{"role": "user", "content": texts[i]}],
                max_tokens=max_tokens,
                temperature=0,
            )
            with lock:
                latencies.append(time.perf_counter() - t0)
                replies[i] = r.choices[0].message.content or ""
                tokens[0] += r.usage.completion_tokens

    threads = [threading.Thread(target=client, args=(k,)) for k in range(clients)]
    start = time.perf_counter()
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    wall = time.perf_counter() - start
    assert len(replies) == len(texts), "some requests failed"
    return {
        "clients": clients,
        "requests": len(texts),
        "wall_s": round(wall, 3),
        "requests_per_s": round(len(texts) / wall, 3),
        "completion_tokens_per_s": round(tokens[0] / wall, 2),
        "p50_latency_s": round(_quantile(latencies, 0.5), 3),
        "p95_latency_s": round(_quantile(latencies, 0.95), 3),
        "replies": [replies[i] for i in range(len(texts))],
    }


def settings(quantize: str, max_batch: int, window_ms: float) -> ServeSettings:
    return ServeSettings(
        base=MODEL,
        device="cpu",
        quantize=quantize,
        limits=Limits(max_new_tokens=256, request_timeout_s=1800, max_queue=1024),
        batching=Batching(window_ms=window_ms, max_batch_size=max_batch),
    )


def serve_runs(
    s: ServeSettings, texts: list[str], levels: list[int], max_tokens: int
) -> tuple[list[dict[str, Any]], Any]:
    server = build(s)
    out = []
    with ServerThread(server) as thread:
        run_load(thread.url, texts[:2], 1, 4)  # warm-up
        for clients in levels:
            before = server.metrics.snapshot()
            row = run_load(thread.url, texts, clients, max_tokens)
            after = server.metrics.snapshot()
            row["batches"] = after["batches"] - before["batches"]
            row["mean_batch_size"] = round(len(texts) / max(1, row["batches"]), 2)
            print(json.dumps({k: v for k, v in row.items() if k != "replies"}), flush=True)
            out.append(row)
    return out, server.host


@torch.no_grad()
def logit_check(fp32: Any, int8: Any, texts: list[str]) -> dict[str, float]:
    from tunesmith.data.records import Message

    diffs, rel, agree = [], [], 0
    for text in texts:
        ids = fp32.encode(MODEL, [Message(role="user", content=text)], None)
        x = torch.tensor([ids])
        a, _ = fp32.forward([MODEL], input_ids=x, attention_mask=torch.ones_like(x))
        b, _ = int8.forward([MODEL], input_ids=x, attention_mask=torch.ones_like(x))
        diffs.append((a - b).abs().max().item())
        rel.append(diffs[-1] / a.abs().max().item())
        agree += int(a.argmax() == b.argmax())
    return {
        "max_abs_logit_diff": round(max(diffs), 4),
        "mean_max_abs_logit_diff": round(statistics.mean(diffs), 4),
        "max_relative_logit_diff": round(max(rel), 4),
        "next_token_top1_agreement": agree / len(texts),
    }


def _common_prefix(a: str, b: str) -> int:
    n = 0
    while n < min(len(a), len(b)) and a[n] == b[n]:
        n += 1
    return n


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--requests", type=int, default=16)
    ap.add_argument("--max-tokens", type=int, default=24)
    ap.add_argument("--window-ms", type=float, default=10.0)
    ap.add_argument("--levels", default="1,4,16")
    ap.add_argument("--out", default="benchmarks/results/serve_throughput.json")
    args = ap.parse_args()
    torch.set_num_threads(int(os.environ.get("OMP_NUM_THREADS", "1")))
    texts = prompts(args.requests)
    levels = [int(x) for x in args.levels.split(",")]
    load_before = load_average()

    batched, fp32_host = serve_runs(
        settings("none", 16, args.window_ms), texts, levels, args.max_tokens
    )
    serial, _ = serve_runs(settings("none", 1, 0.0), texts, levels, args.max_tokens)
    int8_runs, int8_host = serve_runs(
        settings("int8", 16, args.window_ms), texts, [max(levels)], args.max_tokens
    )
    fp32_replies, int8_replies = batched[-1]["replies"], int8_runs[-1]["replies"]
    quality = logit_check(fp32_host, int8_host, texts)
    quality["identical_greedy_replies"] = sum(
        a == b for a, b in zip(fp32_replies, int8_replies, strict=True)
    ) / len(texts)
    quality["mean_common_prefix_fraction"] = round(
        statistics.mean(
            _common_prefix(a, b) / max(1, len(a))
            for a, b in zip(fp32_replies, int8_replies, strict=True)
        ),
        3,
    )
    # Batched serving must answer exactly what one-by-one serving answers (greedy, fp32).
    batch_equal = sum(
        a == b for a, b in zip(batched[-1]["replies"], serial[-1]["replies"], strict=True)
    ) / len(texts)
    strip = [{k: v for k, v in r.items() if k != "replies"} for r in (*batched, *serial)]
    result = {
        "benchmark": "serve_throughput",
        "model": MODEL,
        "settings": vars(args),
        "batched": strip[: len(levels)],
        "one_by_one": strip[len(levels) :],
        "speedup_at_max_clients": round(
            batched[-1]["completion_tokens_per_s"] / serial[-1]["completion_tokens_per_s"], 2
        ),
        "batched_equals_one_by_one_fraction": batch_equal,
        "int8": {
            **{k: v for k, v in int8_runs[-1].items() if k != "replies"},
            "speedup_vs_fp32_batched": round(
                int8_runs[-1]["completion_tokens_per_s"] / batched[-1]["completion_tokens_per_s"],
                2,
            ),
            "quality": quality,
        },
        "example_reply": fp32_replies[0],
        "load_average_before": load_before,
        "load_average_after": load_average(),
        "machine": machine_info(),
        "note": "CPU shared with other jobs: absolute numbers are distorted by their load",
    }
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps(result, indent=2) + "\n")
    print(json.dumps({k: result[k] for k in ("speedup_at_max_clients", "int8")}, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
