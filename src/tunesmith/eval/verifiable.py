"""Held-out accuracy with verifiable rewards: greedy replies scored by reward functions.

Used by GRPO (each process evaluates its share, :func:`merge_evals` joins them) and by
``scripts/grpo_eval.py`` on any model.
"""

from __future__ import annotations

import statistics
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

from tunesmith.data.prompts import PromptRecord, reward_fields
from tunesmith.generation import SamplingParams, sample
from tunesmith.rewards.registry import Reward, score_all


@dataclass
class VerifiableEval:
    n: int
    mean_by_reward: dict[str, float]
    accuracy: float  # share of examples whose first reward (e.g. math) is >= 1
    mean_length: float
    samples: list[dict[str, Any]] = field(default_factory=list)


def evaluate_rewards(
    model: Any,
    tokenizer: Any,
    records: Sequence[PromptRecord],
    rewards: Sequence[Reward],
    max_new_tokens: int = 128,
    batch_size: int = 32,
    keep_samples: int = 5,
) -> VerifiableEval:
    """Greedy completion of every record, scored by every reward (no records: n = 0)."""
    if not records:
        return VerifiableEval(n=0, mean_by_reward={}, accuracy=0.0, mean_length=0.0)
    params = SamplingParams(max_new_tokens=max_new_tokens)
    comps = sample(model, tokenizer, [r.prompt_ids for r in records], params, 1, batch_size)
    texts = [c.text for c in comps]
    scores = score_all(rewards, [r.text for r in records], texts, reward_fields(records, 1))
    first = scores.by_reward[rewards[0].name]
    return VerifiableEval(
        n=len(records),
        mean_by_reward={k: statistics.fmean(v) for k, v in scores.by_reward.items()},
        accuracy=sum(s >= 1.0 for s in first) / len(first),
        mean_length=statistics.fmean(len(c.token_ids) for c in comps),
        samples=[
            {
                "prompt": r.text,
                "completion": t,
                "scores": {k: v[i] for k, v in scores.by_reward.items()},
            }
            for i, (r, t) in enumerate(zip(records[:keep_samples], texts, strict=False))
        ],
    )


def merge_evals(parts: Sequence[VerifiableEval], keep_samples: int = 5) -> VerifiableEval:
    """One evaluation from evaluations of disjoint shares (one per process, in record order):
    every mean weighted by its share's ``n``; the first ``keep_samples`` samples."""
    n = sum(p.n for p in parts)
    if n == 0:
        return VerifiableEval(n=0, mean_by_reward={}, accuracy=0.0, mean_length=0.0)
    keys = next(p.mean_by_reward for p in parts if p.n).keys()
    return VerifiableEval(
        n=n,
        mean_by_reward={
            k: sum(p.mean_by_reward.get(k, 0.0) * p.n for p in parts) / n for k in keys
        },
        accuracy=sum(p.accuracy * p.n for p in parts) / n,
        mean_length=sum(p.mean_length * p.n for p in parts) / n,
        samples=[x for p in parts for x in p.samples][:keep_samples],
    )
