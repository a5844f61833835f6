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
scrubs every message with both and counts, in the raw text and after each scrubber, what
counters that share no code with the scrubber still find (distinct strings per message, summed):

* ``phone_patterns``: :data:`PHONE_PATTERNS`, a regex set written for this count alone (numbers
  with ``+``/``00``, North-American 3-3-4, national numbers with a trunk ``0``), separators
  required, 9-15 digits: a bare digit run (a message id, a timestamp) never counts, so this is
  the honest figure;
* ``phone_libphonenumber``: libphonenumber's ``PhoneNumberMatcher`` (leniency VALID, regions US
  and GB). It also takes digit runs inside mail ids and dates for numbers, so it is an upper
  bound;
* ``email``: a plain pattern on the quoted-printable-decoded text.

``left_examples`` keeps the first strings each counter still finds after scrubbing, so that a
reader can judge the counts.

    python benchmarks/pii_eval.py --corpus data/spam/all.jsonl   # -> benchmarks/results/pii.json
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
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


# A phone-number counter independent of the scrubber (tunesmith.prep.pii / pii_phone): digit
# groups with separators between them, so that bare digit runs (mail ids, timestamps) never count
# (only a number written with "+" may have none); a trunk "0" is never followed by another "0"
# (that is the international prefix).
PHONE_PATTERNS = {
    "international": re.compile(
        r"(?<![\w+])(?:\+|00)[1-9]\d{0,2}(?:[ .-]?\(0\))?[ .-]?\(?\d{1,4}\)?(?:[ .-]?\d{2,4}){1,4}"
        r"(?![\w]|[.-]\d)"
    ),
    "north_american": re.compile(
        r"(?<![\w.+-])(?:1[ .-])?(?:\(\d{3}\) ?|\d{3}[ .-])\d{3}[ .-]\d{4}(?![\w]|[.-]\d)"
    ),
    "trunk_zero": re.compile(
        r"(?<![\w.+/-])(?:\(0[1-9]\d{0,3}\)|0[1-9]\d{0,3})[ -]\d{2,8}(?:[ -]\d{2,4}){0,3}"
        r"(?![\w]|[./-]\d)"
    ),
}
PHONE_DIGITS = (9, 15)


def pattern_phones(text: str) -> list[str]:
    """Phone numbers :data:`PHONE_PATTERNS` finds in ``text`` (overlaps kept once, longest)."""
    found = sorted(
        (m.start(), -len(m.group()), m.group())
        for pattern in PHONE_PATTERNS.values()
        for m in pattern.finditer(text)
        if PHONE_DIGITS[0] <= sum(c.isdigit() for c in m.group()) <= PHONE_DIGITS[1]
        and (m.group()[0] == "+" or any(c in " .-()" for c in m.group()))  # 00 + a digit run: an id
    )
    out, end = [], -1
    for start, neg_len, string in found:
        if start >= end:
            out.append(string)
            end = start - neg_len
    return out


def libphonenumber_phones(text: str) -> list[str]:
    """What libphonenumber's matcher finds (regions US and GB, leniency VALID): an upper bound."""
    import phonenumbers as pn

    return [
        m.raw_string
        for region in ("US", "GB")
        for m in pn.PhoneNumberMatcher(text, region, leniency=pn.Leniency.VALID)
    ]


def left_in(text: str) -> dict[str, set[str]]:
    """Distinct phone numbers (by each counter) and e-mail addresses still in ``text``."""
    decoded = quopri.decodestring(text.encode("utf-8", "replace")).decode("utf-8", "replace")
    return {
        "phone_patterns": set(pattern_phones(text)),
        "phone_libphonenumber": set(libphonenumber_phones(text)),
        "email": set(PLAIN_EMAIL.findall(decoded)),
    }


COUNTERS = ("phone_patterns", "phone_libphonenumber", "email")


def count(texts: list[str], examples: int = 0) -> tuple[dict[str, int], dict[str, list[str]]]:
    """Per counter: the summed distinct strings per message, and the first ``examples`` found."""
    totals = dict.fromkeys(COUNTERS, 0)
    shown: dict[str, list[str]] = {k: [] for k in COUNTERS}
    for text in texts:
        for k, found in left_in(text).items():
            totals[k] += len(found)
            shown[k] += sorted(found)[: max(0, examples - len(shown[k]))]
    return totals, shown


def score_corpus(path: Path, limit: int | None) -> dict[str, Any]:
    rows = [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines() if line]
    texts = [r["text"] for r in rows[:limit]]
    out: dict[str, Any] = {"messages": len(texts), "corpus": str(path)}
    out["in_raw_text"], _ = count(texts)
    for name, ctx in (("handwritten", handwritten), ("libphonenumber", contextlib.nullcontext)):
        with ctx():
            scrubber = pii.PiiScrubber(TYPES)
            t0 = time.perf_counter()
            scrubbed = [scrubber.scrub(t) for t in texts]
            seconds = time.perf_counter() - t0
        left, shown = count(scrubbed, examples=30)
        out[name] = {
            "left": left,
            "left_examples": shown,
            "replaced": dict(scrubber.counts),
            "seconds": round(seconds, 2),
        }
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
        load_start = os.getloadavg()
        result["corpus"] = score_corpus(args.corpus, args.limit)
        result["loadavg"] = {"start": load_start, "end": os.getloadavg()}
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=2, ensure_ascii=False) + "\n")
    print(json.dumps({k: v for k, v in result.items() if k != "cases"}, indent=2)[:3000])


if __name__ == "__main__":
    main()
