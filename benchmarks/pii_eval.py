#!/usr/bin/env python3
"""PII scrubbing quality: recall on phone numbers and encoded e-mails, precision on look-alikes.

Reads ``benchmarks/pii_cases.jsonl`` (phone numbers from 20+ regions, e-mail addresses under
transfer encodings, each with the text expected after scrubbing; and a negative set of version
strings, prices, dates, IP addresses and other numbers that must not become ``<PHONE>``), and
scores two scrubbers:

* ``libphonenumber``: :class:`tunesmith.prep.pii.PiiScrubber` as shipped (``phonenumbers``
  installed: every region; e-mails through the encoding-aware view);
* ``handwritten``: the fallback without ``phonenumbers`` and e-mails matched on the raw text (the
  scrubber before issue 21).

With ``--corpus data/spam/all.jsonl`` (``python scripts/make_spam_corpus.py`` builds it) it also
scrubs every message with both and counts what is left, with independent counters: phone
numbers by libphonenumber's own ``PhoneNumberMatcher`` (leniency VALID, regions US and GB), and
e-mail addresses by a plain pattern on the quoted-printable-decoded text.

    python benchmarks/pii_eval.py --corpus data/spam/all.jsonl   # -> benchmarks/results/pii.json
"""

from __future__ import annotations

import argparse
import contextlib
import json
import quopri
import re
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any
from unittest import mock

from tunesmith.prep import pii, pii_phone

ROOT = Path(__file__).resolve().parents[1]
CASES = ROOT / "benchmarks" / "pii_cases.jsonl"
OUT = ROOT / "benchmarks" / "results" / "pii.json"
PLAIN_EMAIL = re.compile(r"[A-Za-z0-9._%+-]+@(?:[A-Za-z0-9-]+\.)+[A-Za-z]{2,}")
TYPES = ("email", "phone", "credit_card", "ip_address", "secret")


@contextlib.contextmanager
def handwritten() -> Iterator[None]:
    """The scrubber as it was: no libphonenumber, e-mails matched on the raw text."""

    def raw(text: str, pattern: re.Pattern[str]) -> list[tuple[int, int]]:
        return [m.span() for m in pattern.finditer(text)]

    with (
        mock.patch.object(pii_phone, "available", return_value=False),
        mock.patch.object(pii, "email_spans", raw),
    ):
        yield


def load_cases(path: Path = CASES) -> list[dict[str, Any]]:
    return [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines() if line]


def score_cases(cases: list[dict[str, Any]]) -> dict[str, Any]:
    """Share of positives scrubbed exactly as expected; share of negatives left untouched."""
    scrubber = pii.PiiScrubber(TYPES)
    hits: dict[str, list[bool]] = {}
    misses: list[str] = []
    for case in cases:
        ok = scrubber.scrub(case["text"]) == case["expected"]
        hits.setdefault(case["kind"], []).append(ok)
        if not ok:
            misses.append(case["text"])
    out: dict[str, Any] = {}
    for kind, oks in hits.items():
        name = "precision_negatives" if kind == "negative" else f"recall_{kind}"
        out[name] = round(sum(oks) / len(oks), 4)
        out[f"n_{kind}"] = len(oks)
    out["failed"] = misses
    return out


def left_in(text: str) -> dict[str, int]:
    """Phone numbers and e-mail addresses an independent counter still finds in ``text``."""
    import phonenumbers as pn

    phones = {
        m.raw_string
        for region in ("US", "GB")
        for m in pn.PhoneNumberMatcher(text, region, leniency=pn.Leniency.VALID)
    }
    decoded = quopri.decodestring(text.encode("utf-8", "replace")).decode("utf-8", "replace")
    return {"phone": len(phones), "email": len(PLAIN_EMAIL.findall(decoded))}


def score_corpus(path: Path, limit: int | None) -> dict[str, Any]:
    rows = [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines() if line]
    texts = [r["text"] for r in rows[:limit]]
    out: dict[str, Any] = {"messages": len(texts), "corpus": str(path)}
    before = {"phone": 0, "email": 0}
    for text in texts:
        for k, v in left_in(text).items():
            before[k] += v
    out["in_raw_text"] = before
    for name, ctx in (("handwritten", handwritten), ("libphonenumber", contextlib.nullcontext)):
        with ctx():
            scrubber = pii.PiiScrubber(TYPES)
            t0 = time.perf_counter()
            scrubbed = [scrubber.scrub(t) for t in texts]
            seconds = time.perf_counter() - t0
        left = {"phone": 0, "email": 0}
        for text in scrubbed:
            for k, v in left_in(text).items():
                left[k] += v
        out[name] = {"left": left, "replaced": dict(scrubber.counts), "seconds": round(seconds, 2)}
    return out


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--corpus", type=Path, help="JSONL with a text field per message")
    p.add_argument("--limit", type=int, help="only the first N corpus messages")
    p.add_argument("--out", type=Path, default=OUT)
    args = p.parse_args(argv)
    cases = load_cases()
    with handwritten():
        old = score_cases(cases)
    result: dict[str, Any] = {
        "command": "python benchmarks/pii_eval.py"
        + (f" --corpus {args.corpus}" if args.corpus else "")
        + (f" --limit {args.limit}" if args.limit else ""),
        "cases": str(CASES.relative_to(ROOT)),
        "libphonenumber": score_cases(cases),
        "handwritten": old,
    }
    if args.corpus:
        result["corpus"] = score_corpus(args.corpus, args.limit)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=2, ensure_ascii=False) + "\n")
    print(json.dumps({k: v for k, v in result.items() if k != "cases"}, indent=2)[:3000])


if __name__ == "__main__":
    main()
