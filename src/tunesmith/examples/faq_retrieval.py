"""A generated FAQ/support retrieval set: user questions -> help-centre passages.

Five subscription plans of a fictional service × twelve support topics give 60 passages (one
per plan and topic, differing in the plan's details). Each passage has six user questions;
half name the plan by its name, half by the two-letter code on the customer's invoice ("my
HB plan"), which a general-purpose encoder cannot tie to the plan: it ranks the right topic
but often the wrong plan, so base all-MiniLM-L6-v2 is measurably imperfect and fine-tuning has
something to learn. Four questions per passage train, two are held out (240 / 120 pairs).

``python -m tunesmith.examples.faq_retrieval data/embed`` rewrites ``data/embed/*.jsonl``
(tests check that the shipped files equal this output).
"""

from __future__ import annotations

import json
import random
import sys
from pathlib import Path

PLANS = {  # name: (invoice code, monthly price, seats, storage GB, support hours)
    "Harbor": ("HB", 9, 1, 50, "weekdays 9-17"),
    "Summit": ("SM", 29, 5, 500, "every day 8-20"),
    "Meadow": ("MW", 4, 1, 10, "email only"),
    "Canyon": ("CY", 59, 25, 2000, "around the clock"),
    "Delta": ("DL", 19, 3, 200, "weekdays 8-20"),
}

# topic: (passage template, question templates; {p} = plan reference)
TOPICS: dict[str, tuple[str, list[str]]] = {
    "cancel": (
        "To cancel the {name} plan, open Billing > Subscription and choose Cancel; {name} "
        "access continues until the end of the paid month of ${price}.",
        [
            "How do I cancel {p}?",
            "I want to stop paying for {p}",
            "end my {p} subscription",
            "Can I quit {p} before the month ends?",
            "cancel {p} please",
            "terminate {p} account",
        ],
    ),
    "pause": (
        "The {name} plan can be paused for up to three months from Billing > Pause; nothing is "
        "charged and your {storage} GB of files are kept.",
        [
            "Can I pause {p}?",
            "put {p} on hold for a while",
            "temporarily suspend {p}",
            "I'm travelling, freeze {p}",
            "how long can {p} be paused",
            "stop {p} without losing files",
        ],
    ),
    "price": (
        "The {name} plan costs ${price} per month, billed monthly; yearly billing saves "
        "two months.",
        [
            "How much is {p}?",
            "what does {p} cost per month",
            "price of {p}",
            "is {p} cheaper yearly",
            "monthly fee for {p}",
            "how much will {p} charge me",
        ],
    ),
    "seats": (
        "The {name} plan includes {seats} user seat(s); more seats need an upgrade to a "
        "larger plan.",
        [
            "How many users does {p} allow?",
            "can my team share {p}",
            "add a colleague to {p}",
            "seat limit on {p}",
            "how many people can log in with {p}",
            "{p} number of accounts",
        ],
    ),
    "storage": (
        "Each {name} account has {storage} GB of storage; files over the limit are read-only until "
        "space is freed.",
        [
            "How much storage does {p} have?",
            "{p} disk space limit",
            "I ran out of space on {p}",
            "what happens when {p} storage is full",
            "GB included with {p}",
            "{p} file quota",
        ],
    ),
    "support": (
        "{name} customers reach support {support}; response times are listed on the status page.",
        [
            "When can I contact support on {p}?",
            "{p} support hours",
            "is {p} support 24/7",
            "phone support for {p}?",
            "how to reach a human on {p}",
            "help desk times for {p}",
        ],
    ),
    "refund": (
        "Payments for the {name} plan are refundable within 14 days of the charge of ${price}; "
        "request it from Billing > History.",
        [
            "Can I get my money back for {p}?",
            "refund {p} charge",
            "I was billed for {p} by mistake",
            "{p} refund policy",
            "return payment for {p}",
            "how to claim a {p} refund",
        ],
    ),
    "upgrade": (
        "Upgrading from the {name} plan takes effect at once; the unused part of ${price} is "
        "credited against the new plan.",
        [
            "How do I upgrade from {p}?",
            "move up from {p} to a bigger plan",
            "{p} upgrade cost",
            "switch from {p} to a larger tier",
            "is upgrading {p} prorated",
            "leave {p} for more features",
        ],
    ),
    "invoice": (
        "Invoices for the {name} plan are emailed each month and listed in Billing > History "
        "under the code {code}.",
        [
            "Where is my {p} invoice?",
            "download {p} receipt",
            "{p} billing statement",
            "I need a VAT invoice for {p}",
            "find past {p} bills",
            "email me the {p} invoice",
        ],
    ),
    "trial": (
        "The {name} plan has a 14-day free trial with all {seats} seat(s); no card is needed "
        "until it ends.",
        [
            "Is there a free trial of {p}?",
            "try {p} before paying",
            "{p} trial length",
            "does the {p} trial need a credit card",
            "test {p} for free",
            "{p} demo period",
        ],
    ),
    "payment": (
        "The {name} plan accepts cards and PayPal; change the method in Billing > Payment "
        "before the next ${price} charge.",
        [
            "How do I change my card for {p}?",
            "update payment method on {p}",
            "pay {p} with PayPal",
            "my card expired, {p} billing",
            "{p} accepted payment methods",
            "new credit card for {p}",
        ],
    ),
    "delete": (
        "Deleting a {name} account removes all {storage} GB of files after 30 days; export them "
        "first from Settings > Data.",
        [
            "How do I delete my {p} account?",
            "remove all my data from {p}",
            "erase {p} account",
            "close {p} and wipe files",
            "GDPR deletion for {p}",
            "permanently delete {p}",
        ],
    ),
}


def faq_pairs(seed: int = 0) -> tuple[list[dict[str, str]], list[dict[str, str]]]:
    """(train, test) rows ``{"query", "positive"}``: per passage four train, two test."""
    rng = random.Random(seed)
    train: list[dict[str, str]] = []
    test: list[dict[str, str]] = []
    for name, (code, price, seats, storage, support) in PLANS.items():
        for passage_tpl, questions in TOPICS.values():
            passage = passage_tpl.format(
                name=name, code=code, price=price, seats=seats, storage=storage, support=support
            )
            refs = [f"the {name} plan", f"my {code} plan"] * 3
            pairs = zip(questions, refs, strict=True)
            rows = [{"query": q.format(p=r), "positive": passage} for q, r in pairs]
            rng.shuffle(rows)
            train += rows[:4]
            test += rows[4:]
    rng.shuffle(train)
    return train, test


def write_faq_retrieval(out: Path, seed: int = 0) -> tuple[Path, Path]:
    """Write ``train.jsonl`` and ``test.jsonl`` under ``out``."""
    out.mkdir(parents=True, exist_ok=True)
    paths = []
    for name, rows in zip(("train", "test"), faq_pairs(seed), strict=True):
        path = out / f"{name}.jsonl"
        path.write_text("".join(json.dumps(r) + "\n" for r in rows), encoding="utf-8")
        paths.append(path)
    return paths[0], paths[1]


if __name__ == "__main__":
    print(*write_faq_retrieval(Path(sys.argv[1] if len(sys.argv) > 1 else "data/embed")))
