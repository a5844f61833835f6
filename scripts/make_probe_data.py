"""Write the forgetting-probe data shipped in ``data/probe/``.

* ``austen.txt`` -- the opening chapters of Jane Austen's six novels (public domain), taken from
  Debian's ``r-cran-janeaustenr`` package (an R lazy-load database: ``Rdata.rdx`` indexes
  zlib-compressed serialized character vectors in ``Rdata.rdb``; the ``rdata`` package parses
  them). Install it with ``apt-get install r-cran-janeaustenr``, or unpack the .deb from
  ``apt-get download r-cran-janeaustenr`` with ``dpkg-deb -x`` and pass ``--root``. When the
  package is absent the shipped file is kept and the script says so.
* ``austen_heldout.txt`` / ``austen_replay.jsonl`` -- later passages of the same novels (plain
  text / one ``{"text": paragraph}`` per line): general data for EWC's Fisher and for replay,
  disjoint from the probe text.
* ``general_qa.jsonl`` -- short general questions (capitals, arithmetic, everyday facts), in
  code: exact-answer items ``{prompt, answer}`` and multiple-choice items
  ``{prompt, choices, answer}``.

    python scripts/make_probe_data.py [--root DIR] [--lines-per-book 100]
"""

from __future__ import annotations

import argparse
import gzip
import json
import random
import sys
import zlib
from pathlib import Path

OUT = Path(__file__).resolve().parents[1] / "data" / "probe"
DATA_DIR = "usr/lib/R/site-library/janeaustenr/data"
BOOKS = [
    "sensesensibility",
    "prideprejudice",
    "mansfieldpark",
    "emma",
    "northangerabbey",
    "persuasion",
]
CAPITALS = [
    ("France", "Paris"),
    ("Japan", "Tokyo"),
    ("Italy", "Rome"),
    ("Germany", "Berlin"),
    ("Spain", "Madrid"),
    ("the United Kingdom", "London"),
    ("Russia", "Moscow"),
    ("China", "Beijing"),
    ("Egypt", "Cairo"),
    ("Greece", "Athens"),
]
FACTS = [
    ("How many days are there in a week?", "7", ["5", "7", "10", "12"]),
    ("How many legs does a spider have?", "8", ["4", "6", "8", "10"]),
    ("What colour is the sky on a clear day?", "blue", ["blue", "green", "red", "black"]),
    ("What is frozen water called?", "ice", ["ice", "steam", "sand", "glass"]),
    ("What is the opposite of hot?", "cold", ["cold", "warm", "big", "fast"]),
    ("Which animal is known as the king of the jungle?", "lion", ["lion", "mouse", "cow", "fish"]),
    ("Which planet do we live on?", "Earth", ["Earth", "Mars", "Venus", "Jupiter"]),
    ("How many hours are there in a day?", "24", ["12", "24", "60", "100"]),
    ("What do bees make?", "honey", ["honey", "milk", "silk", "wool"]),
    ("Which season comes after winter?", "spring", ["spring", "summer", "autumn", "winter"]),
]


def read_books(root: Path) -> dict[str, list[str]]:
    """Each novel as its list of lines, read from the janeaustenr lazy-load database."""
    import rdata  # the `rdata` package reads R's serialization format

    data = root / DATA_DIR
    index = rdata.conversion.convert(
        rdata.parser.parse_data(gzip.decompress((data / "Rdata.rdx").read_bytes()))
    )
    blob = (data / "Rdata.rdb").read_bytes()
    books = {}
    for name, (offset, length) in index["variables"].items():
        chunk = blob[int(offset) : int(offset) + int(length)]
        raw = zlib.decompress(chunk[4:])  # 4-byte big-endian length, then zlib
        books[str(name)] = [str(x) for x in rdata.conversion.convert(rdata.parser.parse_data(raw))]
    return books


def extract(lines: list[str], n: int, skip: int = 0) -> list[str]:
    """``n`` lines of prose from the first chapter heading on, after ``skip`` prose lines
    (chapter headings themselves left out)."""
    start = next((i for i, x in enumerate(lines) if x.strip().upper().startswith("CHAPTER")), 0)
    out: list[str] = []
    for line in lines[start + 1 :]:
        if skip > 0:
            skip -= 1 if line.strip() else 0
            continue
        if line.strip().upper().startswith(("CHAPTER", "VOLUME")):
            continue
        if not line.strip() and (not out or not out[-1].strip()):
            continue
        out.append(line.rstrip())
        if sum(1 for x in out if x.strip()) >= n:
            break
    return out


def qa_items(seed: int = 0) -> list[dict[str, object]]:
    """Multiple-choice capitals and everyday facts (three options each), plus exact-answer
    items in the short form a small instruct model answers in ("The capital of Japan is
    Tokyo.", "3 + 4 = 7")."""
    rng = random.Random(seed)
    items: list[dict[str, object]] = []
    for country, city in CAPITALS:
        others = rng.sample([c for _, c in CAPITALS if c != city], 2)
        q = f"What is the capital of {country}?"
        items.append({"prompt": q, "choices": sorted([city, *others]), "answer": city})
    for question, answer, choices in FACTS:
        wrong = rng.sample([c for c in choices if c != answer], 2)
        items.append({"prompt": question, "choices": sorted([answer, *wrong]), "answer": answer})
    for country, city in CAPITALS[:6]:
        prompt = f"What is the capital of {country}? Answer in one short sentence."
        items.append({"prompt": prompt, "answer": f"The capital of {country} is {city}."})
    for a, b in [(2, 2), (3, 4), (5, 5), (10, 7), (6, 3), (8, 4)]:
        prompt = f"What is {a} + {b}? Answer with the number only."
        items.append({"prompt": prompt, "answer": f"{a} + {b} = {a + b}"})
    return items


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--root", type=Path, default=Path("/"), help="where janeaustenr is unpacked")
    ap.add_argument("--lines-per-book", type=int, default=100)
    args = ap.parse_args()
    OUT.mkdir(parents=True, exist_ok=True)
    with (OUT / "general_qa.jsonl").open("w", encoding="utf-8") as fh:
        for item in qa_items():
            fh.write(json.dumps(item) + "\n")
    if not (args.root / DATA_DIR / "Rdata.rdx").is_file():
        print(f"r-cran-janeaustenr not found under {args.root}; kept {OUT / 'austen.txt'}")
        return 0
    books = read_books(args.root)
    n = args.lines_per_book
    parts = ["\n".join(extract(books[b], n)) for b in BOOKS]
    (OUT / "austen.txt").write_text("\n\n".join(parts) + "\n", encoding="utf-8")
    # Later passages of the same books: general data for EWC's Fisher and for replay, disjoint
    # from the probe text so that neither mitigation trains on what the probe measures.
    later = ["\n".join(extract(books[b], n, skip=3 * n)) for b in BOOKS]
    (OUT / "austen_heldout.txt").write_text("\n\n".join(later) + "\n", encoding="utf-8")
    paragraphs = [" ".join(p.split()) for p in "\n\n".join(later).split("\n\n") if p.strip()]
    with (OUT / "austen_replay.jsonl").open("w", encoding="utf-8") as fh:
        for para in paragraphs:
            if len(para) > 80:
                fh.write(json.dumps({"text": para}) + "\n")
    print(f"wrote austen.txt, austen_heldout.txt, austen_replay.jsonl, general_qa.jsonl in {OUT}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
