"""Write the small preference set shipped in the repo: ``data/preference/{train,test}.jsonl``.

Every prompt asks a simple factual question *and* states a format constraint; both replies give
the right answer, but only the chosen one obeys the constraint (the rejected one answers in the
free style a small instruct model tends to fall back to). Constraints:

* ``one_word``: "Answer with one word only." -> ``Paris`` vs ``The capital of France is Paris.``
* ``uppercase``: "Reply in capital letters only." -> ``PARIS IS THE CAPITAL.`` vs normal case
* ``json``: 'Reply as JSON: {"answer": ...}' -> ``{"answer": "Paris"}`` vs a sentence
* ``done``: "End your reply with the word DONE." -> ``... DONE`` vs the same without it
* ``bullets``: "Answer as a bullet list." -> ``- Paris`` vs a sentence

The facts (``tag`` = the constraint) are split so that the test pairs ask about facts never seen
in training: reward accuracy on test measures whether the *constraint* was learnt. Fixed seed;
rerun with ``python scripts/make_preference_data.py``.
"""

from __future__ import annotations

import json
import random
from collections.abc import Callable
from pathlib import Path

SEED = 20261122
OUT = Path(__file__).resolve().parents[1] / "data" / "preference"

# (question, short answer, full sentence)
FACTS: list[tuple[str, str, str]] = [
    *[
        (f"What is the capital of {country}?", city, f"The capital of {country} is {city}.")
        for country, city in [
            ("France", "Paris"),
            ("Japan", "Tokyo"),
            ("Italy", "Rome"),
            ("Spain", "Madrid"),
            ("Germany", "Berlin"),
            ("Egypt", "Cairo"),
            ("Canada", "Ottawa"),
            ("Peru", "Lima"),
            ("Kenya", "Nairobi"),
            ("Norway", "Oslo"),
            ("Greece", "Athens"),
            ("Chile", "Santiago"),
            ("Ireland", "Dublin"),
            ("Austria", "Vienna"),
            ("Portugal", "Lisbon"),
            ("Poland", "Warsaw"),
            ("Sweden", "Stockholm"),
            ("Finland", "Helsinki"),
            ("Thailand", "Bangkok"),
            ("Cuba", "Havana"),
        ]
    ],
    *[
        (f"What color is {thing}?", color, f"{thing[0].upper()}{thing[1:]} is {color}.")
        for thing, color in [
            ("the sky on a clear day", "blue"),
            ("fresh grass", "green"),
            ("snow", "white"),
            ("a ripe banana", "yellow"),
            ("coal", "black"),
            ("a ripe tomato", "red"),
            ("an orange", "orange"),
            ("a flamingo", "pink"),
            ("chocolate", "brown"),
            ("a lemon", "yellow"),
        ]
    ],
    *[
        (f"What is {a} plus {b}?", str(a + b), f"{a} plus {b} equals {a + b}.")
        for a, b in [
            (2, 3),
            (4, 5),
            (7, 8),
            (6, 6),
            (9, 1),
            (3, 8),
            (5, 7),
            (12, 4),
            (10, 10),
            (15, 6),
            (8, 9),
            (11, 2),
            (14, 3),
            (7, 6),
            (9, 9),
        ]
    ],
    *[
        (f"What is the opposite of {w}?", o, f"The opposite of {w} is {o}.")
        for w, o in [
            ("hot", "cold"),
            ("up", "down"),
            ("big", "small"),
            ("fast", "slow"),
            ("happy", "sad"),
            ("light", "dark"),
            ("early", "late"),
            ("open", "closed"),
            ("full", "empty"),
            ("old", "young"),
        ]
    ],
    *[
        (f"What sound does a {animal} make?", sound, f"A {animal} makes a {sound} sound.")
        for animal, sound in [
            ("dog", "woof"),
            ("cat", "meow"),
            ("cow", "moo"),
            ("duck", "quack"),
            ("sheep", "baa"),
            ("owl", "hoot"),
            ("lion", "roar"),
            ("snake", "hiss"),
            ("horse", "neigh"),
            ("bee", "buzz"),
        ]
    ],
]

Pair = tuple[str, str, str]  # (prompt, chosen, rejected)


def _one_word(q: str, short: str, full: str) -> Pair:
    return f"{q} Answer with one word only.", short.capitalize(), full


def _uppercase(q: str, short: str, full: str) -> Pair:
    return f"{q} Reply in capital letters only.", full.upper(), full


def _json(q: str, short: str, full: str) -> Pair:
    return f'{q} Reply as JSON of the form {{"answer": ...}}.', json.dumps({"answer": short}), full


def _done(q: str, short: str, full: str) -> Pair:
    return f"{q} End your reply with the word DONE.", f"{full} DONE", full


def _bullets(q: str, short: str, full: str) -> Pair:
    return f"{q} Answer as a bullet list.", f"- {short}", full


CONSTRAINTS: dict[str, Callable[[str, str, str], Pair]] = {
    "one_word": _one_word,
    "uppercase": _uppercase,
    "json": _json,
    "done": _done,
    "bullets": _bullets,
}


def build(seed: int = SEED) -> tuple[list[dict[str, str]], list[dict[str, str]]]:
    rng = random.Random(seed)
    facts = list(FACTS)
    rng.shuffle(facts)
    n_test = len(facts) // 6
    splits = {"test": facts[:n_test], "train": facts[n_test:]}
    out: dict[str, list[dict[str, str]]] = {}
    for name, chosen_facts in splits.items():
        rows = []
        for q, short, full in chosen_facts:
            for tag, make in CONSTRAINTS.items():
                prompt, chosen, rejected = make(q, short, full)
                rows.append({"prompt": prompt, "chosen": chosen, "rejected": rejected, "tag": tag})
        rng.shuffle(rows)
        out[name] = rows
    return out["train"], out["test"]


def main() -> None:
    train, test = build()
    OUT.mkdir(parents=True, exist_ok=True)
    for name, rows in (("train", train), ("test", test)):
        with (OUT / f"{name}.jsonl").open("w", encoding="utf-8") as fh:
            for row in rows:
                fh.write(json.dumps(row, ensure_ascii=False) + "\n")
    print(f"wrote {len(train)} train and {len(test)} test pairs to {OUT}")


if __name__ == "__main__":
    main()
