#!/usr/bin/env python3
"""Write the ``tunesmith prep`` example: raw rows with planted problems, and what was planted.

Files written to ``data/examples/prep/`` (deterministic: fixed seed, standard library only):

* ``raw.jsonl``: ~150 chat rows (``messages`` format, a ``task`` tag per row). Most are clean;
  planted among them are exact duplicates (case/space/punctuation variants), near-duplicates
  (a word appended), rows that leak from the held-out test file, PII (kept, scrubbed), and junk:
  empty and very short responses, refusals, repetitive, broken code fences, over-long rows,
  responses that repeat the prompt, and malformed rows. ``chitchat`` rows exceed their cap.
* ``test.jsonl``: an existing held-out test set (``splits.test_file`` in the recipe).
* ``planted.json``: the expected rule of every planted row by line, the expected count per
  rule, the duplicate groups, and the raw PII strings that must not appear in any output.

Usage: ``python scripts/make_prep_example.py [--out data/examples/prep]``
"""

from __future__ import annotations

import argparse
import json
import random
from pathlib import Path
from typing import Any

SEED = 7
CHITCHAT_KEPT, CHITCHAT_CAP = 16, 12  # matches balance.cap_per_tag in configs/prep/example.yaml
OVER_LONG_WORDS = 160  # > max_length 120 in the recipe


def _pool(text: str) -> list[str]:
    """Comma-separated phrases (spread over lines) to a list."""
    return [" ".join(item.split()) for item in text.split(",") if item.strip()]


SUBJECTS = _pool(
    """the river, the old library, a small robot, my neighbour, the night train, a patient
    teacher, the harbour crane, a curious child, the mountain village, our garden hose, the
    museum guard, a quiet engineer, the city council, the red kite, a travelling baker, the
    violin student"""
)
VERBS = _pool(
    """carries, paints, remembers, measures, repairs, borrows, collects, describes, follows,
    watches, arranges, sketches, questions, balances, gathers, polishes, translates, counts,
    tests, builds"""
)
OBJECTS = _pool(
    """copper kettles, winter maps, paper lanterns, granite stones, silver keys, wooden boats,
    glass marbles, woollen scarves, brass bells, clay pots, linen sails, rusty gears, tidal
    charts, pine cones, velvet ribbons, iron nails"""
)
ENDINGS = _pool(
    """before sunrise, with great care, every second week, near the old bridge, after the
    storm, without any hurry, for the spring fair, under a grey sky, beside the canal, in total
    silence, during the long holiday, against all advice, at the end of autumn, while humming
    softly"""
)

PII = {
    "email": "alice.smith@example.com",
    "email_meta": "dave.jones@example.org",
    "email_rejected": "erin.miles@example.net",
    "email_malformed": "carol.king@example.net",
    "phone": "+1 (555) 014-2398",
    "phone_us": "555-867-5309",
    "card": "4111 1111 1111 1111",
    "ipv4": "192.168.10.24",
    "ipv6": "2001:db8:85a3::8a2e:370:7334",
    "openai_key": "sk-proj-Ab3dE5fG7hJ9kL1mN3pQ5rS7",
    "aws_key": "AKIAIOSFODNN7EXAMPLE",
    "github_token": "ghp_" + "a1B2c3D4e5F6g7H8i9J0" * 2,
}
LUHN_INVALID = "4111 1111 1111 1112"  # 16 digits failing Luhn: must stay as it is


def sentence(rng: random.Random) -> str:
    s = f"{rng.choice(SUBJECTS)} {rng.choice(VERBS)} {rng.choice(OBJECTS)} {rng.choice(ENDINGS)}"
    return s[0].upper() + s[1:] + "."


def prose(rng: random.Random, n: int) -> str:
    return " ".join(sentence(rng) for _ in range(n))


def chat(task: str, user: str, assistant: str, system: str | None = None) -> dict[str, Any]:
    turns = [{"role": "system", "content": system}] if system else []
    turns += [{"role": "user", "content": user}, {"role": "assistant", "content": assistant}]
    return {"messages": turns, "task": task}


def clean_row(rng: random.Random, task: str, i: int) -> dict[str, Any]:
    """A row that passes every filter and shares no 5-word run with other rows by chance."""
    if task == "math":
        a, b = rng.randint(10, 999), rng.randint(10, 999)
        return chat(
            task,
            f"Compute {a} plus {b}, then add a remark.",
            f"{a} plus {b} is {a + b}. {prose(rng, 3)}",
        )
    if task == "code":
        name, value = f"helper_{i}", rng.choice(OBJECTS)
        code = f"```python\ndef {name}():\n    return {value!r}\n```"
        return chat(
            task,
            f"Write {name} returning {value}.",
            f"Like this:\n{code}\n{prose(rng, 2)}",
            system="You are a careful Python assistant.",
        )
    return chat(task, f"{prose(rng, 1)} What do you think?", prose(rng, 4))


def user_of(row: dict[str, Any]) -> str:
    return next(t["content"] for t in row["messages"] if t["role"] == "user")


def with_answer(row: dict[str, Any], answer: str) -> dict[str, Any]:
    turns = [dict(t) for t in row["messages"]]
    turns[-1]["content"] = answer
    return {**row, "messages": turns}


def variants(row: dict[str, Any], kind: str, k: int) -> dict[str, Any]:
    """An exact duplicate after normalisation (case, spaces, punctuation) or a near one."""
    answer = row["messages"][-1]["content"]
    changed = {
        "same": answer,
        "case": answer.upper(),
        "space": "  " + answer.replace(" ", "   ") + "\n",
        "punct": answer.replace(".", "!").replace(",", ";"),
        "near": answer + " Indeed" + (" so" if k % 2 else ""),
    }[kind]
    return with_answer(row, changed)


def junk_rows(rng: random.Random) -> list[tuple[str, Any]]:
    """``(expected rule, row)`` for every planted row removed by a filter or as malformed."""
    q = f"{prose(rng, 1)} Please explain."
    repeated = "the cat sat on the mat and " * 8
    fence = "Here is the code:\n```python\nprint('unfinished')\n"
    rows: list[tuple[str, Any]] = [
        ("empty", chat("qa", q, "")),
        ("empty", chat("chitchat", q, "   ")),
        ("short_response", chat("qa", q, "Ok.")),
        ("short_response", chat("chitchat", q, "Sure thing")),
        ("refusal", chat("qa", q, "As an AI language model, I cannot help with that request.")),
        ("refusal", chat("qa", q, "I'm sorry, but as an AI I do not have personal opinions.")),
        (
            "refusal",
            chat(
                "chitchat",
                q,
                "As an AI language model I cannot share that; write "
                f"to {PII['email_rejected']} instead.",
            ),
        ),
        ("repetition", chat("qa", q, repeated)),
        ("repetition", chat("chitchat", q, "yes I agree. " * 12)),
        ("broken_markup", chat("code", "Print a word.", fence)),
        ("broken_markup", chat("code", "Show a loop.", "~~~\nfor i in range(3):\n    print(i)")),
        ("too_long", chat("qa", q, prose(rng, OVER_LONG_WORDS // 8))),
        ("too_long", chat("math", q, prose(rng, OVER_LONG_WORDS // 8 + 3))),
    ]
    for text in (f"{prose(rng, 1)} Repeat after me.", f"{prose(rng, 1)} Say it back."):
        rows.append(("repeats_prompt", chat("qa", text, text.replace(".", "!"))))
    rows.append(
        (
            "malformed",
            '{"messages": [{"role": "user", "content": "mail '
            f'{PII["email_malformed"]}"}}, {{"role": "assistant"',
        )
    )
    rows.append(
        (
            "malformed",
            {
                "messages": [
                    {"role": "user", "content": "hi"},
                    {"role": "bot", "content": prose(rng, 2)},
                ]
            },
        )
    )
    return rows


def pii_rows(rng: random.Random) -> list[dict[str, Any]]:
    """Clean rows carrying PII (kept, scrubbed), plus one Luhn-invalid number (kept as is)."""
    bits = [
        f"You can reach me at {PII['email']} any time.",
        f"Call {PII['phone']} or {PII['phone_us']} tomorrow.",
        f"My card is {PII['card']} for the deposit.",
        f"The server answers on {PII['ipv4']} and on {PII['ipv6']} as well.",
        f"Use the key {PII['openai_key']} for the demo.",
        f"The AWS id {PII['aws_key']} and token {PII['github_token']} leaked.",
        f"The order number is {LUHN_INVALID} as printed.",
    ]
    rows = [chat("qa", f"{bit} {prose(rng, 1)}", prose(rng, 3)) for bit in bits]
    rows.append(
        {**chat("qa", f"{prose(rng, 1)} Any news?", prose(rng, 3)), "contact": PII["email_meta"]}
    )
    return rows


def _insert_after(rng: random.Random, rows: list[tuple[str, Any]], orig: Any, item: Any) -> None:
    """Insert ``item`` at a random place after the row ``orig`` (anywhere if it is ``None``)."""
    pos = next((i for i, (_, row) in enumerate(rows) if row is orig), -1)
    rows.insert(rng.randint(pos + 1, len(rows)), item)


def build(
    rng: random.Random,
) -> tuple[list[tuple[str, Any]], list[dict[str, Any]], list[list[int]]]:
    """``(rows as (expected rule, row), test rows, duplicate groups as 0-based row indices)``."""
    tasks = ["qa"] * 40 + ["math"] * 25 + ["code"] * 20
    rows: list[tuple[str, Any]] = [("kept", clean_row(rng, t, i)) for i, t in enumerate(tasks)]
    rows += [("kept", clean_row(rng, "chitchat", i)) for i in range(CHITCHAT_KEPT)]
    rows += [("kept", r) for r in pii_rows(rng)]
    rows += junk_rows(rng)
    rng.shuffle(rows)
    test = [clean_row(rng, rng.choice(["qa", "math"]), 1000 + i) for i in range(10)]
    originals = [r for rule, r in rows if rule == "kept" and r.get("task") != "chitchat"][:11]
    kinds = ["same", "case", "space", "punct", "same", "case"] + ["near"] * 5
    pairs: list[tuple[Any, Any]] = []
    for k, (kind, orig) in enumerate(zip(kinds, originals, strict=True)):
        copy = variants(orig, kind, k)
        _insert_after(
            rng, rows, orig, ("near_duplicate" if kind == "near" else "exact_duplicate", copy)
        )
        pairs.append((orig, copy))
    for k, (kind, ref) in enumerate(zip(["same", "case", "near", "near"], test, strict=False)):
        _insert_after(rng, rows, None, ("test_overlap", variants(ref, kind, k)))
    index = {id(row): i for i, (_, row) in enumerate(rows)}
    return rows, test, [[index[id(a)], index[id(b)]] for a, b in pairs]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", default="data/examples/prep")
    out = Path(parser.parse_args().out)
    out.mkdir(parents=True, exist_ok=True)
    rows, test, groups = build(random.Random(SEED))
    with (out / "raw.jsonl").open("w", encoding="utf-8") as fh:
        for _, row in rows:
            fh.write((row if isinstance(row, str) else json.dumps(row, ensure_ascii=False)) + "\n")
    with (out / "test.jsonl").open("w", encoding="utf-8") as fh:
        fh.writelines(json.dumps(r, ensure_ascii=False) + "\n" for r in test)
    expected = {str(i + 1): rule for i, (rule, _) in enumerate(rows) if rule != "kept"}
    counts: dict[str, int] = {}
    for rule in expected.values():
        counts[rule] = counts.get(rule, 0) + 1
    counts["cap"] = CHITCHAT_KEPT - CHITCHAT_CAP
    planted = {
        "rows": len(rows),
        "expected_rule_by_line": expected,
        "counts": dict(sorted(counts.items())),
        "cap": {"tag": "chitchat", "cap": CHITCHAT_CAP, "removed": counts["cap"]},
        "duplicate_groups_by_line": [[a + 1, b + 1] for a, b in groups],
        "pii_strings": sorted(set(PII.values())),
        "luhn_invalid": LUHN_INVALID,
    }
    (out / "planted.json").write_text(json.dumps(planted, indent=2) + "\n", encoding="utf-8")
    print(f"wrote {len(rows)} rows, {len(test)} test rows, planted {counts} to {out}")


if __name__ == "__main__":
    main()
