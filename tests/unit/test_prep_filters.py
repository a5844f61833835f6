"""Quality filters: each one with a positive and a negative, switches, order, token counting."""

from __future__ import annotations

from typing import Any

import pytest

from tunesmith.data.records import Example, Message
from tunesmith.prep.config import FiltersSection
from tunesmith.prep.filters import (
    QualityFilters,
    broken_markup,
    refusal,
    repeats_prompt,
    repetition,
    repetition_ratio,
    short_response,
    too_long,
    unbalanced_fence,
)
from tunesmith.prep.normalize import normalize_text
from tunesmith.prep.tokens import TokenizerCounter, WordCounter

WORDS = WordCounter()
CLEAN = "The river carries copper kettles before sunrise and the kite paints maps."


def chat(user: str, answer: str) -> Example:
    return Example("f.jsonl", 7, messages=(Message("user", user), Message("assistant", answer)))


def test_short_response() -> None:
    assert short_response("Ok.", WORDS, 2) == "response has 1 tokens (< 2)"
    assert short_response("", WORDS, 1) is not None
    assert short_response("Fine, thanks.", WORDS, 2) is None


def test_too_long() -> None:
    assert too_long(513, 512) == "513 tokens > max_length 512"
    assert too_long(512, 512) is None


def test_repeats_prompt() -> None:
    assert repeats_prompt(
        chat("What is the capital of France?", "What is the capital of France!"), 0.9
    )
    assert (
        repeats_prompt(
            chat("What is the capital of France?", "The capital of France is Paris."), 0.9
        )
        is None
    )
    assert repeats_prompt(Example("f", 1, text="anything"), 0.9) is None


def test_repetition() -> None:
    ratio, total = repetition_ratio("a b c a b c a b c", 3)
    assert total == 7 and ratio == pytest.approx(1 - 3 / 7)
    assert repetition("the cat sat on the mat " * 6, 3, 0.5) is not None
    assert repetition(CLEAN, 3, 0.5) is None
    assert repetition("yes yes yes yes", 3, 0.5) is None  # too few n-grams to judge


def test_refusal() -> None:
    phrases = [normalize_text("As an AI language model")]
    assert refusal("As an AI language model, I can't.", phrases) is not None
    assert refusal("as an  AI-language model i cannot", phrases) is not None
    assert refusal("She works as an AI language modeller.", phrases) is None  # whole words
    assert refusal(CLEAN, phrases) is None


@pytest.mark.parametrize(
    ("text", "broken"),
    [
        ("```python\nprint(1)\n```", False),
        ("text\n```\ncode\n```\nmore ```inline``` text", False),
        ("~~~\n```\nstill code\n~~~", False),
        ("````\n```\n````", False),
        ("```python\nprint(1)\n", True),
        ("```\na\n```\n```\nb", True),
        ("~~~\ncode\n```", True),
        ("no fences at all", False),
    ],
)
def test_unbalanced_fence(text: str, broken: bool) -> None:
    assert unbalanced_fence(text) is broken


def test_broken_markup_per_turn() -> None:
    # A fence opened in one turn and closed in the next is still broken.
    ex = Example(
        "f",
        1,
        messages=(
            Message("user", "a"),
            Message("assistant", "```\ncode"),
            Message("user", "b"),
            Message("assistant", "```"),
        ),
    )
    assert broken_markup(ex) == "unbalanced code fence"
    assert broken_markup(chat("a", "```\nx\n```")) is None


def quality(**overrides: Any) -> QualityFilters:
    return QualityFilters(FiltersSection.model_validate(overrides), 40, WORDS)


def test_quality_filters_order_and_switches() -> None:
    refusing = chat("Hi there friend", "As an AI language model I cannot answer that question.")
    verdict = quality().check(refusing, 12)
    assert verdict is not None and verdict.rule == "refusal"
    assert quality(refusal={"enabled": False}).check(refusing, 12) is None
    # The first failing rule wins: short before refusal.
    short = chat("Hi", "As an AI")
    assert quality(short_response={"min_tokens": 5}).check(short, 3).rule == "short_response"
    assert quality().check(chat("Hi", CLEAN), 50).rule == "too_long"
    assert quality(too_long={"enabled": False}).check(chat("Hi", CLEAN), 50) is None
    assert quality().check(chat("Hi", CLEAN), 15) is None
    assert quality().rules == [
        "short_response",
        "too_long",
        "repeats_prompt",
        "repetition",
        "refusal",
        "broken_markup",
    ]


def test_custom_refusal_phrases() -> None:
    f = quality(refusal={"phrases": ["I must decline"]})
    assert f.check(chat("Hi", "Sorry, I must decline this one, friend."), 8).rule == "refusal"
    assert f.check(chat("Hi", "As an AI language model I cannot answer that."), 9) is None


def test_word_counter() -> None:
    ex = chat("one two", "three four five")
    assert WORDS.text("a  b\nc") == 3 and WORDS.example(ex) == 5
    assert WORDS.example(Example("f", 1, text="x y")) == 2


def test_tokenizer_counter(tiny_tokenizer: Any) -> None:
    counter = TokenizerCounter(tiny_tokenizer, "chatml", name="tokenizer:tiny")
    ex = chat("Hello! How are you today?", "I am fine, thank you.")
    n_text = counter.text("I am fine, thank you.")
    assert (
        0
        < n_text
        == len(tiny_tokenizer("I am fine, thank you.", add_special_tokens=False)["input_ids"])
    )
    # The full length includes the chat template's markers, so it exceeds the words.
    assert counter.example(ex) > WORDS.example(ex) and counter.name == "tokenizer:tiny"
