"""Write data/classify/{train,test}.jsonl: support tickets labelled billing / shipping /
technical / account, from varied templates and vocabulary with a fixed seed.

The test set uses templates never seen in training (the last third of each class's list), and
the classes are imbalanced (billing is the majority), so neither memorising templates nor
predicting the majority class scores well.

    python scripts/make_classify_data.py [--out data/classify] [--seed 7]
"""

from __future__ import annotations

import argparse
import json
import random
from pathlib import Path

SLOTS: dict[str, list[str]] = {
    "product": [
        "router",
        "headphones",
        "blender",
        "laptop stand",
        "yoga mat",
        "coffee grinder",
        "desk lamp",
        "phone case",
        "backpack",
        "smart watch",
        "kettle",
        "keyboard",
    ],
    "amount": ["$12.99", "$49", "$120.50", "$7.25", "$310", "$64.10", "$15", "$89.99"],
    "carrier": ["UPS", "FedEx", "DHL", "the postal service", "the courier"],
    "app": ["the mobile app", "the website", "the desktop client", "the browser extension"],
    "error": [
        "error 500",
        "a blank screen",
        "a spinning wheel",
        "error code E42",
        "a timeout message",
        "an 'unexpected error' banner",
    ],
    "days": ["three days", "a week", "two weeks", "ten days", "over a month"],
    "when": ["yesterday", "last week", "this morning", "on Monday", "twice this month"],
}

TEMPLATES: dict[str, list[str]] = {
    "billing": [
        "I was charged {amount} twice for my {product} order",
        "Why does my invoice show {amount} when the {product} was on sale?",
        "Please refund the {amount} you took {when}",
        "My card was billed {amount} but I cancelled the subscription",
        "Can I get a receipt for the {amount} payment?",
        "There is an unknown charge of {amount} on my statement",
        "The discount code did not apply and I paid {amount} for the {product}",
        "I need the VAT invoice for my {product} purchase",
        "You charged me {when} although my plan was paused",
        "How do I change the credit card used for payments?",
        "The refund of {amount} for the {product} never reached my bank",
        "My bank flagged a payment of {amount} from your store",
    ],
    "shipping": [
        "My {product} has not arrived after {days}",
        "The tracking number from {carrier} does not work",
        "{carrier} says the {product} was delivered but I never got it",
        "Can you ship the {product} to a different address?",
        "The box with my {product} arrived crushed",
        "How long does delivery take with {carrier}?",
        "My parcel has been stuck in customs for {days}",
        "The {product} was left at the wrong house {when}",
        "Is express delivery available for the {product}?",
        "Half of my order arrived and the {product} is missing",
        "The courier tried to deliver {when} while I was out, how do I reschedule?",
        "Where is my package? It shipped {days} ago",
    ],
    "technical": [
        "{app} shows {error} when I open my orders",
        "I get {error} every time I try to pair the {product}",
        "The {product} firmware update failed with {error}",
        "{app} crashes on startup since {when}",
        "Search in {app} returns {error}",
        "My {product} keeps disconnecting from wifi",
        "The setup guide for the {product} does not match what I see",
        "Notifications from {app} stopped working {when}",
        "{app} freezes with {error} during checkout",
        "The {product} will not turn on after charging",
        "Bluetooth pairing with the {product} fails after {days}",
        "Pages in {app} load forever and then show {error}",
    ],
    "account": [
        "I cannot log in to my account on {app}",
        "How do I reset my password? The email never comes",
        "Please delete my account and all my data",
        "I want to change the email address on my profile",
        "My account was locked after too many attempts {when}",
        "Someone else may have accessed my account {when}",
        "How do I turn on two-factor authentication in {app}?",
        "I need to merge two accounts into one",
        "The verification code for my login expired",
        "Can I change my username?",
        "My profile still shows my old address after I updated it",
        "I was signed out of {app} and my saved details are gone",
    ],
}

PREFIXES = ["", "", "Hi, ", "Hello team, ", "Urgent: ", "hey - ", "Good morning. "]
SUFFIXES = ["", "", ".", "!", " Thanks.", " Please help.", " This is frustrating.", "??"]
WEIGHTS = {"billing": 0.37, "shipping": 0.25, "technical": 0.22, "account": 0.16}


def ticket(rng: random.Random, template: str) -> str:
    filled = template.format(**{k: rng.choice(v) for k, v in SLOTS.items()})
    return rng.choice(PREFIXES) + filled + rng.choice(SUFFIXES)


def rows(rng: random.Random, n: int, held_out: bool) -> list[dict[str, str]]:
    labels, weights = list(WEIGHTS), list(WEIGHTS.values())
    out = []
    for _ in range(n):
        label = rng.choices(labels, weights)[0]
        templates = TEMPLATES[label]
        cut = len(templates) * 2 // 3
        pool = templates[cut:] if held_out else templates[:cut]
        out.append({"text": ticket(rng, rng.choice(pool)), "label": label})
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--out", default="data/classify")
    parser.add_argument("--seed", type=int, default=7)
    parser.add_argument("--train", type=int, default=400)
    parser.add_argument("--test", type=int, default=160)
    args = parser.parse_args()
    rng = random.Random(args.seed)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    for name, n, held in (("train", args.train, False), ("test", args.test, True)):
        with (out / f"{name}.jsonl").open("w", encoding="utf-8") as fh:
            for row in rows(rng, n, held):
                fh.write(json.dumps(row) + "\n")


if __name__ == "__main__":
    main()
