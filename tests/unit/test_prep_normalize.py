"""Normalisation, shingles and hashes used by de-duplication."""

from __future__ import annotations

from tunesmith.data.records import Example, Message
from tunesmith.prep.normalize import (
    content_hash,
    dedup_text,
    normalize_text,
    response_text,
    shingles,
)


def test_case_whitespace_and_punctuation_fold() -> None:
    assert normalize_text("  Hello,   WORLD!\n\tIt's   me... ") == "hello world it s me"
    assert normalize_text("snake_case-and—dashes") == "snake case and dashes"
    assert normalize_text("Ｆｕｌｌｗｉｄｔｈ") == "fullwidth"  # NFKC
    assert normalize_text("Straße") == normalize_text("STRASSE")  # casefold
    assert normalize_text("!!! ...") == ""


def test_different_words_stay_different() -> None:
    assert normalize_text("the cat sat") != normalize_text("the cat sits")
    assert normalize_text("1 + 1 = 2") == normalize_text("1 1 2")  # symbols fold too


def test_hash_is_stable_and_64_bit() -> None:
    h = content_hash("hello world")
    assert h == content_hash("hello world") and 0 <= h < 2**64
    assert h != content_hash("hello world!")
    assert h == 0x50B1A332AA338687  # blake2b-64: the same on every machine and run


def test_shingles_short_and_long() -> None:
    assert shingles("a b c", 5) == [b"a b c"]
    assert shingles("", 5) == [b""]
    assert shingles("a b c d e f", 5) == [b"a b c d e", b"b c d e f"]
    assert shingles("a b c", 1) == [b"a", b"b", b"c"]


def test_dedup_text_ignores_system_prompt() -> None:
    turns = (Message("user", "Hi"), Message("assistant", "Hello"))
    a = Example("f", 1, messages=(Message("system", "You are A."), *turns))
    b = Example("f", 2, messages=(Message("system", "You are B."), *turns))
    assert dedup_text(a) == dedup_text(b) == "user: Hi\nassistant: Hello"
    assert dedup_text(Example("f", 3, text="plain")) == "plain"


def test_response_text_joins_assistant_turns() -> None:
    ex = Example(
        "f",
        1,
        messages=(
            Message("user", "q1"),
            Message("assistant", "a1"),
            Message("user", "q2"),
            Message("assistant", "a2"),
        ),
    )
    assert response_text(ex) == "a1\na2"
    assert response_text(Example("f", 1, text="t")) == "t"
