#!/usr/bin/env python3
"""Write the GRPO demo data: ``data/grpo/train.jsonl`` and ``data/grpo/test.jsonl``.

Procedurally generated arithmetic with exact integer answers (fixed seed, standard library only:
running the script twice writes byte-identical files). Each record is
``{"prompt": "...", "answer": "<integer>", "kind": "add|sub|mul"}``; the prompt asks for the
result inside ``<answer></answer>`` tags. Problems (difficulty chosen so SmolLM2-135M-Instruct
starts well below perfect, see the recipe ``configs/smollm2-135m-instruct/grpo_lora.yaml``):
  * add: a + b with a, b in [10, 99];
  * sub: a - b with a in [20, 99], b in [10, a];
  * mul: a x b with a in [2, 12], b in [2, 12].
Train and test share no (a, op, b) triple.

Usage: ``python scripts/make_arithmetic_data.py [--out data/grpo] [--train 2000] [--test 200]``
"""

from __future__ import annotations

import argparse
import json
import random
from pathlib import Path

SEED = 20261122
INSTRUCTION = "Give only the final result inside <answer></answer> tags."


def _problem(rng: random.Random) -> tuple[str, int, int, int]:
    kind = rng.choice(["add", "sub", "mul"])
    if kind == "add":
        a, b = rng.randint(10, 99), rng.randint(10, 99)
        return kind, a, b, a + b
    if kind == "sub":
        a = rng.randint(20, 99)
        b = rng.randint(10, a)
        return kind, a, b, a - b
    a, b = rng.randint(2, 12), rng.randint(2, 12)
    return kind, a, b, a * b


SYMBOL = {"add": "+", "sub": "-", "mul": "*"}


def make(n_train: int, n_test: int) -> tuple[list[dict[str, str]], list[dict[str, str]]]:
    rng = random.Random(SEED)
    seen: set[tuple[str, int, int]] = set()
    rows: list[dict[str, str]] = []
    while len(rows) < n_train + n_test:
        kind, a, b, result = _problem(rng)
        if (kind, a, b) in seen:
            continue
        seen.add((kind, a, b))
        prompt = f"What is {a} {SYMBOL[kind]} {b}? {INSTRUCTION}"
        rows.append({"prompt": prompt, "answer": str(result), "kind": kind})
    return rows[:n_train], rows[n_train:]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--out", default="data/grpo")
    ap.add_argument("--train", type=int, default=2000)
    ap.add_argument("--test", type=int, default=200)
    args = ap.parse_args()
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    train, test = make(args.train, args.test)
    for name, rows in (("train", train), ("test", test)):
        with (out / f"{name}.jsonl").open("w") as fh:
            fh.writelines(json.dumps(r) + "\n" for r in rows)
    print(f"wrote {len(train)} train and {len(test)} test problems to {out}")


if __name__ == "__main__":
    main()
