"""PII scrubbing: every type, its negatives, field opt-in, counts only."""

from __future__ import annotations

import pytest

from tunesmith.data.records import Example, Message
from tunesmith.prep.pii import PiiScrubber, luhn_valid, shannon_entropy


def scrub(text: str, *types: str) -> str:
    return PiiScrubber(types or ("email", "phone", "credit_card", "ip_address", "secret")).scrub(
        text
    )


@pytest.mark.parametrize(
    ("number", "valid"),
    [
        ("4111111111111111", True),
        ("4111 1111 1111 1111", True),
        ("5500-0000-0000-0004", True),
        ("378282246310005", True),
        ("79927398713", True),
        ("4111111111111112", False),
        ("1234567812345678", False),
        ("", False),
    ],
)
def test_luhn(number: str, valid: bool) -> None:
    assert luhn_valid(number) is valid


@pytest.mark.parametrize(
    "text",
    ["mail john.doe+x@example.com now", "a@b.co", "First.Last@sub.example.co.uk"],
)
def test_email(text: str) -> None:
    assert "<EMAIL>" in scrub(text) and "@" not in scrub(text)


@pytest.mark.parametrize("text", ["user@localhost", "@handle", "a @ b.com", "x@y"])
def test_not_email(text: str) -> None:
    assert scrub(text, "email") == text


@pytest.mark.parametrize(
    "text",
    [
        "call (415) 555-2671",
        "call 415-555-2671.",
        "call 415.555.2671",
        "call +1 415 555 2671",
        "call +1-415-555-2671",
        "call +44 20 7946 0958",
        "call +33 1 23 45 67 89",
        "call 1-800-555-1234",
    ],
)
def test_phone(text: str) -> None:
    out = scrub(text, "phone")
    assert out.startswith("call <PHONE>") and not any(c.isdigit() for c in out)


@pytest.mark.parametrize(
    "text",
    [
        "on 2024-01-15",
        "years 2020 2021 2022",
        "pi is 3.14159265358979",
        "id 1234567890",
        "see 1 2 3 4 5 6 7 8 9 10",
        "version 10.20.30",
    ],
)
def test_not_phone(text: str) -> None:
    assert scrub(text) == text


@pytest.mark.parametrize(
    "text",
    [
        "card 4111 1111 1111 1111 ok",
        "card 4111-1111-1111-1111 ok",
        "card 4111111111111111 ok",
        "amex 3782 822463 10005 ok",
        "card 5555555555554444 ok",
    ],
)
def test_credit_card(text: str) -> None:
    out = scrub(text)
    assert "<CREDIT_CARD>" in out and not any(c.isdigit() for c in out)


@pytest.mark.parametrize(
    "text",
    [
        "order 4111 1111 1111 1112 ok",  # 16 digits failing Luhn: not replaced
        "ts 1700000000000",  # starts with 1: not a card network
        "code 4111111111",  # too short
    ],
)
def test_not_credit_card(text: str) -> None:
    assert scrub(text) == text


@pytest.mark.parametrize(
    "text",
    [
        "host 192.168.0.1.",
        "host 8.8.8.8:53",
        "host 2001:db8::8a2e:370:7334 up",
        "host 2001:0db8:85a3:0000:0000:8a2e:0370:7334 up",
        "host fe80::1ff:fe23:4567:890a up",
    ],
)
def test_ip_address(text: str) -> None:
    out = scrub(text, "ip_address")
    assert "<IP_ADDRESS>" in out and not any(c.isdigit() for c in out.replace("53", ""))


@pytest.mark.parametrize(
    "text",
    ["256.1.1.1", "1.2.3", "v1.2.3.4.5", "a[::2]", "std::vector", "at 12:30:45", "dead::beef"],
)
def test_not_ip_address(text: str) -> None:
    assert scrub(text, "ip_address") == text


@pytest.mark.parametrize(
    "secret",
    [
        "sk-proj-Ab3dE5fG7hJ9kL1mN3pQ5rS7",
        "sk-ant-api03-Zx9Yw8Vu7Ts6Rq5Po4Nm",
        "AKIAIOSFODNN7EXAMPLE",
        "ghp_" + "a1B2c3D4e5F6g7H8i9J0" * 2,
        "github_pat_11ABCDEFG0123456789_abcdefghijklmnop",
        "xoxb-123456789012-abcdefABCDEF",
        "AIza" + "SyA1b2C3d4E5f6G7h8I9j0K1l2M3n4O5p6Q",
        "sk_live_4eC39HqLyjWDarjtT1zdp7dc",
        "key_8f3a9b2c7d1e4f6a0b5c9d8e7f6a",
    ],
)
def test_secret_formats(secret: str) -> None:
    assert scrub(f"use {secret} here", "secret") == "use <SECRET> here"


def test_assigned_secret_keeps_the_name() -> None:
    assert scrub('api_key="9f8e7d6c5b4a3f2e1d"', "secret") == 'api_key="<SECRET>"'
    assert scrub("password: hunter2isbest", "secret") == "password: <SECRET>"


@pytest.mark.parametrize(
    "text",
    [
        "sk-learn is a library",
        "sk-this-is-a-very-long-hyphenated-phrase",  # no digits: not a key
        "token = tokenizer.encode(x)",
        "ghp_short",
        "key_aaaaaaaaaaaaaaaaaaaaaaaaaaaaaa",  # low entropy
        "password: see below",
    ],
)
def test_not_secret(text: str) -> None:
    assert scrub(text, "secret") == text


def test_entropy() -> None:
    assert shannon_entropy("") == 0.0
    assert shannon_entropy("aaaa") == 0.0
    assert shannon_entropy("abcd") == pytest.approx(2.0)


def test_counts_by_type_and_only_chosen_types() -> None:
    s = PiiScrubber(["email", "phone"])
    out = s.scrub("a@example.com b@example.com 415-555-2671 4111111111111111 10.0.0.1")
    assert out == "<EMAIL> <EMAIL> <PHONE> 4111111111111111 10.0.0.1"
    assert dict(s.counts) == {"email": 2, "phone": 1}
    with pytest.raises(ValueError, match="unknown PII types"):
        PiiScrubber(["ssn"])


def test_fields_are_opt_in_by_role() -> None:
    ex = Example(
        "f",
        1,
        messages=(
            Message("system", "admin@example.com"),
            Message("user", "me@example.com"),
            Message("assistant", "you@example.com"),
        ),
        meta={"contact": ["x@example.com", {"deep": "y@example.com"}], "n": 3},
    )
    s = PiiScrubber()
    assert s.scrub_example(ex, []) is ex
    out = s.scrub_example(ex, ["user", "meta"])
    assert [m.content for m in out.messages] == ["admin@example.com", "<EMAIL>", "you@example.com"]
    assert out.meta == {"contact": ["<EMAIL>", {"deep": "<EMAIL>"}], "n": 3}
    text = s.scrub_example(Example("f", 2, text="t@example.com"), ["text"])
    assert text.text == "<EMAIL>" and s.counts["email"] == 4


def test_scrub_json_for_raw_rows() -> None:
    s = PiiScrubber()
    raw = '{"messages": [{"content": "mail z@example.com"'
    assert s.scrub_json(raw) == '{"messages": [{"content": "mail <EMAIL>"'
    assert s.scrub_json([1, None, {"a": "z@example.com"}]) == [1, None, {"a": "<EMAIL>"}]
