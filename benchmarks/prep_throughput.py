#!/usr/bin/env python3
"""Throughput and peak memory of ``tunesmith prep`` on synthetic short chat records.

Writes ``--n`` records (default 1,000,000; about 5% exact and 2% near duplicates, 3% with an
e-mail address or a phone number, 1% junk) to a temporary JSONL file, runs the full pipeline on
it (PII scrubbing of user and assistant turns, every filter, exact + near dedup, splits, the
report) and prints records/s and the peak resident set size of the process.

Usage: ``python benchmarks/prep_throughput.py [--n 1000000] [--keep DIR] [--no-progress]``
"""

from __future__ import annotations

import argparse
import json
import random
import resource
import sys
import tempfile
import time
from collections import deque
from pathlib import Path
from typing import Any

from tunesmith.prep import PrepConfig, run_prep

WORDS = [
    f"{a}{b}"
    for a in ("ka", "lo", "mi", "nu", "pe", "ro", "su", "ta", "vi", "zo")
    for b in (
        "bar",
        "den",
        "fin",
        "gol",
        "hum",
        "jor",
        "lek",
        "mon",
        "nip",
        "pox",
        "quil",
        "rast",
        "sel",
        "tov",
        "umb",
        "vex",
        "wal",
        "yor",
        "zep",
        "cad",
    )
]


def _record(rng: random.Random, i: int) -> dict[str, Any]:
    user = " ".join(rng.choices(WORDS, k=rng.randint(6, 14)))
    answer = " ".join(rng.choices(WORDS, k=rng.randint(12, 40)))
    roll = rng.random()
    if roll < 0.03:
        answer += f" write to user{i}@example.com or call +1 555 {i % 1000:03d} {i % 10000:04d}"
    elif roll < 0.04:
        answer = "As an AI language model I cannot help."
    return {
        "messages": [{"role": "user", "content": user}, {"role": "assistant", "content": answer}],
        "task": f"task{i % 8}",
    }


def write_records(path: Path, n: int, seed: int = 0) -> None:
    """``n`` records; a few are exact copies (5%) or near copies (2%) of earlier ones."""
    rng = random.Random(seed)
    recent: deque[dict[str, Any]] = deque(maxlen=1000)
    with path.open("w", encoding="utf-8") as fh:
        for i in range(n):
            roll = rng.random()
            if recent and roll < 0.05:
                row = rng.choice(recent)
            elif recent and roll < 0.07:
                base = rng.choice(recent)
                turns = [dict(t) for t in base["messages"]]
                turns[-1]["content"] += " " + rng.choice(WORDS)
                row = {**base, "messages": turns}
            else:
                row = _record(rng, i)
                recent.append(row)
            fh.write(json.dumps(row) + "\n")


def peak_rss_mb() -> float:
    """Peak resident set size of this process (Linux reports KiB, macOS bytes)."""
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return peak / (1024 * 1024) if sys.platform == "darwin" else peak / 1024


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n", type=int, default=1_000_000, help="records to generate")
    parser.add_argument("--keep", help="write data and outputs here instead of a temp dir")
    parser.add_argument("--no-progress", action="store_true")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="prep-bench-") as tmp:
        root = Path(args.keep or tmp)
        root.mkdir(parents=True, exist_ok=True)
        data = root / "raw.jsonl"
        start = time.perf_counter()
        write_records(data, args.n)
        generated = time.perf_counter() - start
        rss_before = peak_rss_mb()
        cfg = PrepConfig(
            inputs=[{"path": str(data)}],
            output_dir=str(root / "out"),
            pii={"fields": ["user", "assistant"]},
            progress=not args.no_progress,
        )
        start = time.perf_counter()
        result = run_prep(cfg)
        seconds = time.perf_counter() - start
        report = result.report
        print(
            json.dumps(
                {
                    "records": args.n,
                    "input_mb": round(data.stat().st_size / 2**20, 1),
                    "generate_s": round(generated, 1),
                    "prep_s": round(seconds, 1),
                    "records_per_s": round(args.n / seconds),
                    "peak_rss_mb": round(peak_rss_mb(), 1),
                    "peak_rss_mb_before_prep": round(rss_before, 1),
                    "kept": report["counts"]["kept"],
                    "removed_by_rule": {k: v for k, v in report["removed_by_rule"].items() if v},
                    "pii_replaced": report["pii"]["replaced"],
                },
                indent=2,
            )
        )


if __name__ == "__main__":
    main()
