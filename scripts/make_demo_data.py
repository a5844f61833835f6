#!/usr/bin/env python3
"""Write the quickstart demo dataset: ``data/demo/train.jsonl`` and ``data/demo/test.jsonl``.

The task (see ``tunesmith.examples.demo_task``): a short sentence about a person goes in, and the
reply must
be exactly one line of JSON with the keys ``name``, ``age`` (an integer) and ``city``, in that
order, for example ``{"name": "Maria Lopez", "age": 34, "city": "Lisbon"}``. The prompt asks for
JSON but does not spell out the keys, their order or the types, so an untuned model rarely gets
the reply exactly right.

The output is deterministic (fixed seed, standard library only): running the script twice writes
byte-identical files. First names, last names and cities are split into disjoint train and test
pools, and two sentence templates are used only in the test split, so no held-out prompt (and no
held-out name or city) appears in training.

Usage: ``python scripts/make_demo_data.py [--out data/demo]``
"""

from __future__ import annotations

import argparse
import json
import random
from pathlib import Path

SEED = 20240611
N_TRAIN = 500
N_TEST = 60


def _pool(text: str) -> list[str]:
    """Comma-separated names (spread over lines) to a list."""
    return [item.strip() for item in text.split(",") if item.strip()]


FIRST_NAMES = _pool(
    """
    Maria, James, Aisha, Chen, Olga, Pedro, Fatima, Liam, Yuki, Noah, Elena, Omar, Sofia,
    Lucas, Amara, Ivan, Priya, Mateo, Hana, David, Leila, Tomas, Grace, Ravi, Ingrid, Kofi,
    Mei, Samuel, Nadia, Arjun, Clara, Emeka, Zara, Felix, Rosa, Kenji, Anna, Diego, Layla,
    Henrik, Chloe, Tariq, Julia, Marco, Aiko, Ben, Lucia, Hamid, Emma, Sven, Nora, Jamal,
    Irene, Pablo, Mina, Oscar, Alice, Rahul, Eva, Kwame, Sara, Victor, Ines, Daniel, Ayesha,
    Paul, Marta, Jonas, Keiko, Ahmed, Laura, Nikolai, Beatriz, Tom, Yara, Andre, Helen,
    Dmitri, Lina, George
    """
)
LAST_NAMES = _pool(
    """
    Lopez, Smith, Khan, Wang, Petrova, Silva, Haddad, Murphy, Tanaka, Cohen, Rossi, Nguyen,
    Garcia, Muller, Okafor, Ivanov, Sharma, Fernandez, Kim, Brown, Nasser, Novak, Wilson,
    Patel, Larsen, Mensah, Li, Adams, Karimi, Gupta, Dubois, Eze, Ali, Becker, Moreno, Sato,
    Jensen, Torres, Hassan, Berg, Martin, Rahman, Costa, Bianchi, Suzuki, Taylor, Romero,
    Yilmaz, Clark, Lindqvist, Walker, Santos, Fischer, Owusu, Park, Weber, Diaz, Schmidt,
    Reyes, Kowalski, Hughes, Mendes, Ortiz, Nakamura, Evans, Sousa, Bauer, Chowdhury, Baker,
    Ricci
    """
)
CITIES = _pool(
    """
    Lisbon, Toronto, Nairobi, Shanghai, Moscow, Sao Paulo, Beirut, Dublin, Osaka, Tel Aviv,
    Rome, Hanoi, Madrid, Berlin, Lagos, Kyiv, Mumbai, Buenos Aires, Seoul, Chicago, Cairo,
    Prague, Sydney, Delhi, Oslo, Accra, Beijing, Boston, Tehran, Bangalore, Paris, Abuja,
    Dubai, Hamburg, Seville, Kyoto, Copenhagen, Lima, Istanbul, Stockholm, Marseille, Dhaka,
    Porto, Milan, Nagoya, London, Mexico City, Ankara, Vancouver, Helsinki, Vienna, Warsaw,
    Athens, Manila, Bogota, Santiago, Montreal, Denver, Glasgow, Munich, Krakow, Casablanca,
    Jakarta, Bangkok, Melbourne, Seattle, Zurich, Naples, Valencia, Cape Town, Hong Kong,
    Rio de Janeiro, San Diego, Kuala Lumpur, Edinburgh
    """
)

# Sentence templates; {name}, {age} (an integer) and {city} are filled in.
TEMPLATES = [
    "{name} is {age} years old and lives in {city}.",
    "{name}, {age}, lives in {city}.",
    "Meet {name}, a {age}-year-old from {city}.",
    "{name} ({age}) moved to {city} last year.",
    "At {age}, {name} still calls {city} home.",
    "{name} lives in {city} and turned {age} this spring.",
    "Born and raised in {city}, {name} is now {age}.",
    "Our new neighbour {name} is {age} and grew up in {city}.",
    "{name}, aged {age}, works from {city}.",
    "The winner, {name} of {city}, is {age} years old.",
    "{city} resident {name} celebrated turning {age} on Friday.",
    "I ran into {name}, {age}, at a market in {city}.",
    "{name} has lived in {city} since birth and is {age} now.",
    "Age {age}, {name} runs a small cafe in {city}.",
]
# Used only for the held-out split.
TEST_ONLY_TEMPLATES = [
    "{name} is a {age}-year-old teacher based in {city}.",
    "Last week {name}, who is {age}, flew home to {city}.",
]

# Three of the four phrasings do not name the fields: the model has to learn the schema.
INSTRUCTIONS = [
    "Extract the person's details as JSON.",
    "Extract this person's profile as JSON.",
    "Extract the person in this sentence as JSON.",
    "Extract the name, age and city from this sentence as JSON.",
]


def _split(pool: list[str], n_test: int, rng: random.Random) -> tuple[list[str], list[str]]:
    shuffled = pool[:]
    rng.shuffle(shuffled)
    return sorted(shuffled[n_test:]), sorted(shuffled[:n_test])


def _row(
    rng: random.Random, firsts: list[str], lasts: list[str], cities: list[str], templates: list[str]
) -> dict:
    name = f"{rng.choice(firsts)} {rng.choice(lasts)}"
    age = rng.randint(18, 89)
    city = rng.choice(cities)
    sentence = rng.choice(templates).format(name=name, age=age, city=city)
    prompt = f"{rng.choice(INSTRUCTIONS)}\n{sentence}"
    answer = json.dumps({"name": name, "age": age, "city": city}, ensure_ascii=False)
    return {
        "messages": [
            {"role": "user", "content": prompt},
            {"role": "assistant", "content": answer},
        ],
        "answer": answer,
    }


def _rows(rng: random.Random, n: int, *pools: list[str], seen: set[str]) -> list[dict]:
    rows = []
    while len(rows) < n:
        row = _row(rng, *pools)
        prompt = row["messages"][0]["content"]
        if prompt not in seen:  # no duplicate prompts within or across splits
            seen.add(prompt)
            rows.append(row)
    return rows


def build() -> tuple[list[dict], list[dict]]:
    """Return ``(train_rows, test_rows)``; deterministic."""
    rng = random.Random(SEED)
    train_first, test_first = _split(FIRST_NAMES, 16, rng)
    train_last, test_last = _split(LAST_NAMES, 14, rng)
    train_city, test_city = _split(CITIES, 15, rng)
    seen: set[str] = set()
    train = _rows(rng, N_TRAIN, train_first, train_last, train_city, TEMPLATES, seen=seen)
    test = _rows(
        rng, N_TEST, test_first, test_last, test_city, TEMPLATES + TEST_ONLY_TEMPLATES, seen=seen
    )
    return train, test


def _write(path: Path, rows: list[dict]) -> None:
    with path.open("w", encoding="utf-8", newline="\n") as f:
        for row in rows:
            f.write(json.dumps(row, ensure_ascii=False) + "\n")


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=Path("data/demo"))
    args = parser.parse_args(argv)
    train, test = build()
    args.out.mkdir(parents=True, exist_ok=True)
    _write(args.out / "train.jsonl", train)
    _write(args.out / "test.jsonl", test)
    print(f"wrote {len(train)} train and {len(test)} test rows to {args.out}")


if __name__ == "__main__":
    main()
