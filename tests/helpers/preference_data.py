"""A tiny separable preference set for reward-model and PPO tests."""

from __future__ import annotations

import json
import random
from pathlib import Path

GOOD = ("Thank you, here is a good answer.", "Yes, I am happy to help you today.")
BAD = ("no no no", "bad bad bad bad")


def write_pairs(path: Path, n: int, seed: int) -> Path:
    """Chosen replies are polite sentences, rejected ones repeated words: separable by content."""
    rng = random.Random(seed)
    with path.open("w") as fh:
        for i in range(n):
            row = {
                "prompt": f"Question {rng.randint(1, 99)}: what is {i % 7} plus 1?",
                "chosen": rng.choice(GOOD),
                "rejected": rng.choice(BAD),
            }
            fh.write(json.dumps(row) + "\n")
    return path
