#!/usr/bin/env python3
"""Throughput and latency of ``tunesmith serve`` on SmolLM2-135M: continuous batching (the
decoding engine) against the old windowed batcher in the same run, against one-by-one, and
int8 vs fp32 (speed and quality).

For each level of concurrency (``--levels``, default 16 and 32 clients, each with its own
``openai`` client and thread, sending its share of the requests one after another) the same set
of chat requests (greedy, ``--max-tokens`` new tokens, prompts of different lengths) is sent
to a real server on a loopback port: with continuous batching (``--slots`` rows), with the old
windowed batcher (:mod:`_serve_windowed`: window ``--window-ms``, batches of up to ``--slots``
rows that run to their end before the next batch forms) and served one by one. Reported:
requests/s, completion tokens/s, p50/p95 latency, and the ratios continuous / windowed. Then
an int8 server (dynamic quantization of every base linear layer) runs the largest load, and
its quality is checked against fp32: identical greedy replies, the common prefix of the
replies, and next-token logits on every prompt (max |diff|, top-1 agreement).

``--client-process`` runs the clients in a process of their own, so that their Python (the
``openai`` client, JSON, httpx) does not share the server's GIL: the server's cost alone, as
with real remote clients. ``--literal`` adds the issue's own comparison: continuous batching
with the server's default slots (``Batching().max_batch_size``) against the windowed batcher at
its old default of 8 rows per window ("today's serve"), at every level.

Usage: ``OMP_NUM_THREADS=1 python benchmarks/serve_throughput.py [--requests 64]
[--max-tokens 48] [--levels 16,32] [--out benchmarks/results/serve_throughput.json]``. On a
shared machine run it with ``nice -n 5``; the results file records ``os.getloadavg()`` before
and after.
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

# SERVE_BENCH_MODEL: another model (a tiny test model dir proves the harness in seconds)
MODEL = os.environ.get("SERVE_BENCH_MODEL", "smollm2-135m-instruct")
OLD_WINDOW_ROWS = 8  # the windowed batcher's default max_batch_size before continuous batching
TOPICS = (
    "the sea", "a mountain", "a robot", "the moon", "a library", "a garden", "winter", "a train",
    "a cat", "the desert", "a violin", "a lighthouse", "rain", "a market", "a bridge", "a forest",
)  # fmt: skip


def prompts(n: int) -> list[str]:
    """Chat prompts of different lengths (so rows of one batch end at different steps)."""
    extra = ("", " Make it sad.", " Use simple words and give the main character a name.")
    return [
        f"Write a short story about {TOPICS[i % len(TOPICS)]}.{extra[i % len(extra)]}"
        for i in range(n)
    ]


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


def run_load_elsewhere(url: str, texts: list[str], clients: int, max_tokens: int) -> Any:
    """:func:`run_load` in a fresh process (spawned: no copy of the server's threads)."""
    import multiprocessing
    from concurrent.futures import ProcessPoolExecutor

    with ProcessPoolExecutor(1, mp_context=multiprocessing.get_context("spawn")) as pool:
        return pool.submit(run_load, url, texts, clients, max_tokens).result()


def settings(quantize: str, max_batch: int, window_ms: float) -> ServeSettings:
    return ServeSettings(
        base=MODEL,
        device="cpu",
        quantize=quantize,
        limits=Limits(max_new_tokens=256, request_timeout_s=1800, max_queue=1024),
        batching=Batching(window_ms=window_ms, max_batch_size=max_batch),
    )


def serve_runs(
    s: ServeSettings,
    texts: list[str],
    levels: list[int],
    max_tokens: int,
    windowed: bool = False,
    elsewhere: bool = False,
) -> tuple[list[dict[str, Any]], Any]:
    server = build(s)
    if windowed:  # yesterday's worker in place of the engine's (the handlers are the same)
        from _serve_windowed import WindowedBatcher

        server.batcher = server.generate.batcher = WindowedBatcher(
            server.host, s.batching, server.metrics, s.limits
        )
    out = []
    with ServerThread(server) as thread:
        run_load(thread.url, texts[:2], 1, 4)  # warm-up
        for clients in levels:
            before = server.metrics.snapshot()
            load = run_load_elsewhere if elsewhere else run_load
            row = load(thread.url, texts, clients, max_tokens)
            after = server.metrics.snapshot()
            row["batches"] = after["batches"] - before["batches"]
            rows = after["mean_batch_size"] * after["batches"]
            rows -= before["mean_batch_size"] * before["batches"]
            row["mean_rows_per_forward_or_batch"] = round(rows / max(1, row["batches"]), 2)
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


def _ratios(new: list[dict[str, Any]], old: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Continuous / windowed at each level: tokens/s (higher is better), p95 (lower)."""
    return [
        {
            "clients": a["clients"],
            "completion_tokens_per_s_ratio": round(
                a["completion_tokens_per_s"] / b["completion_tokens_per_s"], 2
            ),
            "p95_latency_ratio": round(a["p95_latency_s"] / b["p95_latency_s"], 2),
        }
        for a, b in zip(new, old, strict=True)
    ]


def _fraction_equal(a: list[dict[str, Any]], b: list[dict[str, Any]]) -> float:
    pairs = list(zip(a[-1]["replies"], b[-1]["replies"], strict=True))
    return sum(x == y for x, y in pairs) / len(pairs)


def _int8_quality(fp32: dict[str, Any], int8: dict[str, Any], hosts: tuple[Any, Any]) -> Any:
    texts_a, texts_b = fp32["replies"], int8["replies"]
    quality = logit_check(*hosts, TEXTS_FOR_LOGITS)
    quality["identical_greedy_replies"] = sum(
        a == b for a, b in zip(texts_a, texts_b, strict=True)
    ) / len(texts_a)
    quality["mean_common_prefix_fraction"] = round(
        statistics.mean(
            _common_prefix(a, b) / max(1, len(a)) for a, b in zip(texts_a, texts_b, strict=True)
        ),
        3,
    )
    return quality


def literal_rows(run: Any, levels: list[int], window_ms: float) -> dict[str, Any]:
    """The issue's comparison: the server as shipped now (default slots) against "today's
    serve" of the issue (the windowed batcher, at most 8 rows per window)."""
    slots = Batching().max_batch_size
    new, _ = run("none", slots, window_ms, levels)
    old, _ = run("none", OLD_WINDOW_ROWS, window_ms, levels, old=True)
    strip = [{k: v for k, v in r.items() if k != "replies"} for r in (*new, *old)]
    return {
        "continuous_slots": slots,
        "windowed_rows": OLD_WINDOW_ROWS,
        "continuous": strip[: len(new)],
        "windowed": strip[len(new) :],
        "continuous_vs_windowed": _ratios(new, old),
    }


TEXTS_FOR_LOGITS: list[str] = []


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--requests", type=int, default=64)
    ap.add_argument("--max-tokens", type=int, default=48)
    ap.add_argument("--window-ms", type=float, default=10.0, help="the windowed baseline's")
    ap.add_argument("--slots", type=int, default=32, help="rows decoding together (both)")
    ap.add_argument("--levels", default="16,32")
    ap.add_argument("--skip", default="", help="comma list of: one_by_one, int8")
    ap.add_argument(
        "--client-process", action="store_true", help="clients in their own process (no GIL)"
    )
    ap.add_argument(
        "--literal",
        action="store_true",
        help="also: default slots vs the windowed batcher at its old 8 rows",
    )
    ap.add_argument("--out", default="benchmarks/results/serve_throughput.json")
    args = ap.parse_args()
    torch.set_num_threads(int(os.environ.get("OMP_NUM_THREADS", "1")))
    texts = prompts(args.requests)
    TEXTS_FOR_LOGITS[:] = texts[:16]
    levels = [int(x) for x in args.levels.split(",")]
    skip = set(filter(None, args.skip.split(",")))
    load_before = load_average()

    def run(quantize: str, slots: int, window: float, at: list[int], old: bool = False) -> Any:
        s = settings(quantize, slots, window)
        return serve_runs(s, texts, at, args.max_tokens, old, args.client_process)

    continuous, fp32_host = run("none", args.slots, args.window_ms, levels)
    windowed, _ = run("none", args.slots, args.window_ms, levels, old=True)
    result: dict[str, Any] = {
        "benchmark": "serve_throughput",
        "model": MODEL,
        "settings": vars(args),
        "continuous": [{k: v for k, v in r.items() if k != "replies"} for r in continuous],
        "windowed_baseline": [{k: v for k, v in r.items() if k != "replies"} for r in windowed],
        "continuous_vs_windowed": _ratios(continuous, windowed),
        "continuous_equals_windowed_fraction": _fraction_equal(continuous, windowed),
    }
    if args.literal:
        result["literal"] = literal_rows(run, levels, args.window_ms)
    if "one_by_one" not in skip:
        serial, _ = run("none", 1, 0.0, levels[-1:])
        result["one_by_one"] = [{k: v for k, v in r.items() if k != "replies"} for r in serial]
        result["continuous_equals_one_by_one_fraction"] = _fraction_equal(continuous, serial)
    if "int8" not in skip:
        int8_runs, int8_host = run("int8", args.slots, args.window_ms, levels[-1:])
        result["int8"] = {
            **{k: v for k, v in int8_runs[-1].items() if k != "replies"},
            "speedup_vs_fp32_continuous": round(
                int8_runs[-1]["completion_tokens_per_s"]
                / continuous[-1]["completion_tokens_per_s"],
                2,
            ),
            "quality": _int8_quality(continuous[-1], int8_runs[-1], (fp32_host, int8_host)),
        }
    result |= {
        "example_reply": continuous[-1]["replies"][0],
        "load_average_before": load_before,
        "load_average_after": load_average(),
        "machine": machine_info(),
        "note": "CPU shared with other jobs: absolute numbers are distorted by their load",
    }
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps(result, indent=2) + "\n")
    print(json.dumps(result["continuous_vs_windowed"], indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
