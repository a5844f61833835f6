#!/usr/bin/env python3
"""Held-out accuracy of a model on verifiable prompts (greedy replies scored by reward functions).

The first reward defines accuracy (share of replies scoring >= 1). TARGET is anything
``tunesmith.models.load.load_for_inference`` takes: an alias, a model dir, or a run dir (its
``final/`` adapter is used). Compare a base model with a GRPO run::

    python scripts/grpo_eval.py smollm2-135m-instruct --data data/grpo/test.jsonl
    python scripts/grpo_eval.py runs/grpo-XXXX --data data/grpo/test.jsonl

Rewards: ``--reward math --reward format:think=false`` (``name[:key=value,...]``, values parsed
as YAML). Also reports the zero-variance-group fraction of ``--groups`` sampled completions
per prompt (temperature 1) when ``--groups`` > 1: the share of prompts GRPO would learn nothing
from.
"""

from __future__ import annotations

import argparse
import json
import sys
from typing import Any

import torch
import yaml

from tunesmith.data.prompts import read_prompts, reward_fields
from tunesmith.eval.verifiable import evaluate_rewards
from tunesmith.generation import SamplingParams, sample
from tunesmith.losses.grpo import zero_variance_fraction
from tunesmith.models.load import load_for_inference
from tunesmith.rewards.registry import Reward, resolve_reward, score_all


def _reward(spec: str) -> Reward:
    """``math``, ``format:think=false,tag_credit=0.5`` or ``pkg.mod:fn[:key=value,...]``."""
    name, sep, rest = spec.rpartition(":")
    if not sep or "=" not in rest:
        name, rest = spec, ""
    args: dict[str, Any] = {}
    for pair in filter(None, rest.split(",")):
        key, _, value = pair.partition("=")
        args[key] = yaml.safe_load(value)
    return Reward(name, resolve_reward(name, args))


def _zero_variance(
    model: Any, tok: Any, records: list[Any], rewards: list[Reward], g: int, new: int
) -> float:
    params = SamplingParams(max_new_tokens=new, temperature=1.0, seed=0)
    comps = sample(model, tok, [r.prompt_ids for r in records], params, g, 64)
    prompts = [r.text for r in records for _ in range(g)]
    scores = score_all(rewards, prompts, [c.text for c in comps], reward_fields(records, g))
    return zero_variance_fraction(torch.tensor(scores.total), g)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("target")
    ap.add_argument("--data", required=True)
    ap.add_argument("--reward", action="append", default=None)
    ap.add_argument("--system-prompt", default=None)
    ap.add_argument("--limit", type=int, default=200)
    ap.add_argument("--max-new-tokens", type=int, default=32)
    ap.add_argument("--groups", type=int, default=0, help="G for the zero-variance fraction")
    ap.add_argument("--threads", type=int, default=1)
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    rewards = [_reward(s) for s in (args.reward or ["math", "format:think=false"])]
    model, tok = load_for_inference(args.target)
    records = read_prompts([args.data], tok, system_prompt=args.system_prompt)[: args.limit]
    result = evaluate_rewards(model, tok, records, rewards, args.max_new_tokens, 64)
    out: dict[str, Any] = {
        "target": args.target,
        "n": result.n,
        "accuracy": result.accuracy,
        "mean_by_reward": result.mean_by_reward,
        "mean_length": result.mean_length,
    }
    if args.groups > 1:
        out["zero_variance_groups"] = _zero_variance(
            model, tok, records, rewards, args.groups, args.max_new_tokens
        )
    out["samples"] = result.samples
    json.dump(out, sys.stdout, indent=2)
    print()


if __name__ == "__main__":
    main()
