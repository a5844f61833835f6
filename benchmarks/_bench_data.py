"""The benchmark's data: a fixed-seed synthetic chat set and the two files each tool reads.

Every example is one user turn and one assistant turn whose *rendered* length (SmolLM2's chat
template, default system prompt included) is drawn uniformly from ``[min_tokens, max_tokens]``,
so a batch of 8 has the padding a real instruction set has. The text is plain English built from
a fixed phrase bank (the model's loss on it is in the normal 1.5-3 nats range, not that of noise).

Two files are written from the same examples:

* ``train_messages.jsonl`` for tunesmith: ``{"messages": [user, assistant]}`` in generation order;
* ``train_trl.jsonl`` for TRL: conversational prompt-completion rows
  ``{"prompt": [user], "completion": [assistant]}``, listed in the exact order in which
  tunesmith's unpacked run visits the examples (:func:`tunesmith.data.dataset.example_order`,
  epoch after epoch), so that TRL with a sequential sampler sees the same 8 examples in every
  step as tunesmith with ``micro_batch_size=8``.
"""

from __future__ import annotations

import hashlib
import json
import random
from pathlib import Path
from typing import Any

SUBJECTS = (
    "The river",
    "A small team",
    "Our garden",
    "The old library",
    "Every new student",
    "The morning train",
    "A careful engineer",
    "The city council",
    "My neighbour",
    "The local bakery",
    "A quiet village",
    "The research group",
    "The museum",
    "Each volunteer",
    "The weather station",
    "A young painter",
)
VERBS = (
    "usually opens",
    "slowly changes",
    "often depends on",
    "carefully records",
    "quickly learns",
    "rarely forgets",
    "always prepares for",
    "sometimes avoids",
    "happily shares",
    "closely follows",
    "never ignores",
    "quietly improves",
)
OBJECTS = (
    "the plan for the coming week",
    "a list of simple rules",
    "the results of the last test",
    "fresh bread before sunrise",
    "the changes in the season",
    "a short report for the board",
    "the questions of its visitors",
    "the noise from the street",
    "a map of the northern hills",
    "the price of good coffee",
    "the schedule of the summer festival",
    "a letter from an old friend",
)
TAILS = (
    "",
    " when it rains",
    " in the autumn",
    " after a long day",
    " with great patience",
    " because it matters",
    " without much fuss",
    " at the end of the month",
)
TASKS = (
    "Describe {topic} in a few sentences.",
    "Write a short note about {topic}.",
    "Explain to a child what you know about {topic}.",
    "Summarise the main facts about {topic}.",
    "Tell me a short story about {topic}.",
    "Give me some practical advice about {topic}.",
)
TOPICS = tuple(s.lower().removeprefix("the ").removeprefix("a ") for s in SUBJECTS)


def _sentence(rng: random.Random) -> str:
    return f"{rng.choice(SUBJECTS)} {rng.choice(VERBS)} {rng.choice(OBJECTS)}{rng.choice(TAILS)}."


def _n_tokens(tokenizer: Any, messages: list[dict[str, str]]) -> int:
    text = tokenizer.apply_chat_template(messages, tokenize=False)
    return len(tokenizer(text, add_special_tokens=False)["input_ids"])


def _example(rng: random.Random, tokenizer: Any, target: int) -> list[dict[str, str]]:
    """One user/assistant pair whose rendered length is about ``target`` tokens (never below
    the minimum the template allows; the last sentence may overshoot by a few tokens)."""
    user = rng.choice(TASKS).format(topic=rng.choice(TOPICS))
    user_share = rng.uniform(0.1, 0.4)
    messages = [{"role": "user", "content": user}, {"role": "assistant", "content": ""}]
    while _n_tokens(tokenizer, messages) < target * user_share + 20:
        messages[0]["content"] += " " + _sentence(rng)
    messages[1]["content"] = _sentence(rng)
    while _n_tokens(tokenizer, messages) < target:
        messages[1]["content"] += " " + _sentence(rng)
    return messages


def make_examples(
    tokenizer: Any, n: int, seed: int, min_tokens: int = 40, max_tokens: int = 320
) -> list[list[dict[str, str]]]:
    """``n`` single-turn conversations with rendered lengths spread over the given range."""
    rng = random.Random(seed)
    return [_example(rng, tokenizer, rng.randint(min_tokens, max_tokens)) for _ in range(n)]


def trl_order(n: int, seed: int, steps: int, per_step: int) -> list[int]:
    """Example indices in the order tunesmith's unpacked run visits them over ``steps`` steps."""
    from tunesmith.data.dataset import example_order

    needed = steps * per_step
    order: list[int] = []
    epoch = 0
    while len(order) < needed:
        order += example_order(n, seed, epoch)
        epoch += 1
    return order[:needed]


def _write_jsonl(path: Path, rows: list[dict[str, Any]]) -> None:
    with path.open("w", encoding="utf-8") as fh:
        for row in rows:
            fh.write(json.dumps(row, ensure_ascii=False) + "\n")


def write_datasets(
    out_dir: Path, examples: list[list[dict[str, str]]], order: list[int]
) -> dict[str, Path]:
    """Write the tunesmith (messages) and TRL (prompt-completion, in step order) files."""
    out_dir.mkdir(parents=True, exist_ok=True)
    paths = {"tunesmith": out_dir / "train_messages.jsonl", "trl": out_dir / "train_trl.jsonl"}
    _write_jsonl(paths["tunesmith"], [{"messages": m} for m in examples])
    _write_jsonl(
        paths["trl"],
        [{"prompt": examples[i][:1], "completion": examples[i][1:]} for i in order],
    )
    return paths


def length_stats(tokenizer: Any, examples: list[list[dict[str, str]]]) -> dict[str, float]:
    """Min / mean / max rendered token length of the examples."""
    lengths = sorted(_n_tokens(tokenizer, m) for m in examples)
    return {
        "min": float(lengths[0]),
        "mean": sum(lengths) / len(lengths),
        "median": float(lengths[len(lengths) // 2]),
        "max": float(lengths[-1]),
    }


def ids_digest(rows: list[list[int]]) -> str:
    """A digest of a batch's unpadded token ids, to check that both tools tokenize alike."""
    return hashlib.sha256(json.dumps(rows).encode()).hexdigest()
