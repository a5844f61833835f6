"""PII scrubbing: typed placeholders for e-mail addresses, phone numbers, card numbers, IP addresses
and API-key-like secrets.

Matches are replaced in this order (so a later pattern never sees an earlier one's text): secret,
email, credit card, IP address, phone. Only counts leave this module; the scrubbed-away text is
never logged or stored.

* ``credit_card``: 13-19 digits (contiguous, or grouped 4-4-4-4[-x] / 4-6-5 with one kind of
  separator), starting with 2-6 (the major networks) and passing the Luhn check; a number that
  fails Luhn is left alone.
* ``email``: also when a transfer encoding hides it: a quoted-printable soft line break inside
  the address, ``=40`` / ``%40`` / ``&#64;`` for the ``@`` (:mod:`tunesmith.prep.pii_email`).
* ``phone``: with ``phonenumbers`` installed (the ``prep`` extra), every number libphonenumber
  finds valid for a region of ``phone_regions`` (default: all) written in that region's own
  grouping, or valid after ``+`` / ``00`` (:mod:`tunesmith.prep.pii_phone`); and always the
  hand-written pattern: ``+`` numbers (8-15 digits) and North-American 3-3-4 numbers. Dates,
  versions, prices and bare digit runs are not phones.
* ``ip_address``: dotted-quad IPv4 with valid octets; IPv6 (validated with :mod:`ipaddress`)
  with at least three non-empty groups, so ``a[::2]`` or ``12:30:45`` are left alone.
* ``secret``: vendor key formats (``sk-...``, ``AKIA...``, ``ghp_...``, ``github_pat_...``,
  ``xox?-...``, ``AIza...``, Stripe ``sk_live_...``, JWTs); ``key_``/``tok_``-style prefixes
  followed by a long high-entropy token; and values assigned to key-ish names
  (``api_key=...``, ``password: ...``) that mix letters and digits.
"""

from __future__ import annotations

import ipaddress
import math
import re
from collections import Counter
from collections.abc import Callable, Iterable
from dataclasses import dataclass, replace
from typing import Any

from tunesmith.data.records import Example, Message
from tunesmith.prep import pii_phone
from tunesmith.prep.pii_email import email_spans

PLACEHOLDERS: dict[str, str] = {
    "secret": "<SECRET>",
    "email": "<EMAIL>",
    "credit_card": "<CREDIT_CARD>",
    "ip_address": "<IP_ADDRESS>",
    "phone": "<PHONE>",
}
"""PII type -> placeholder, in the order the types are applied."""

_VENDOR_SECRET = re.compile(
    r"""\b(?:
        sk-(?:proj-|ant-)?[A-Za-z0-9_-]{20,}
      | (?:AKIA|ASIA)[0-9A-Z]{16}
      | gh[pousr]_[A-Za-z0-9]{36,}
      | github_pat_[A-Za-z0-9_]{22,}
      | xox[abprs]-[A-Za-z0-9-]{10,}
      | AIza[0-9A-Za-z_-]{35}
      | (?:sk|pk|rk)_(?:live|test)_[0-9A-Za-z]{16,}
      | eyJ[A-Za-z0-9_-]{8,}\.eyJ[A-Za-z0-9_-]{8,}\.[A-Za-z0-9_-]{8,}
    )(?![\w-])""",
    re.X,
)
_PREFIXED_SECRET = re.compile(
    r"\b(?:key|tok|token|sess|secret|api|auth|pat|pk|sk)[_-][A-Za-z0-9]{24,}\b", re.I
)
_ASSIGNED_SECRET = re.compile(
    r"""\b(?:api[_-]?key|apikey|secret(?:[_-]?key)?|access[_-]?(?:key|token)|auth[_-]?token
        |token|password|passwd|pwd|private[_-]?key|client[_-]?secret)
        ["']?\s*[:=]\s*["']?(?P<value>[A-Za-z0-9_\-+/=.!@#$%^&*]{8,})""",
    re.X | re.I,
)
_EMAIL = re.compile(r"(?<![\w.+-])[A-Za-z0-9][A-Za-z0-9._%+-]*@(?:[A-Za-z0-9-]+\.)+[A-Za-z]{2,}\b")
_CARD = re.compile(
    r"(?<![\d.-])(?:\d{4}([ -])\d{4}\1\d{4}\1\d{1,7}|\d{4}([ -])\d{6}\2\d{5}|\d{13,19})(?![\d])"
)
_OCTET = r"(?:25[0-5]|2[0-4]\d|1\d\d|[1-9]?\d)"
_IPV4 = re.compile(rf"(?<![\w.]){_OCTET}(?:\.{_OCTET}){{3}}(?![\w]|\.\d)")
_IPV6 = re.compile(r"(?<![\w:])[0-9A-Fa-f]{0,4}(?::[0-9A-Fa-f]{0,4}){2,7}(?![\w:])")
_PHONE = re.compile(
    r"""(?<![\w+])(?:
        \+\d{1,3}[ .-]?(?:\(\d{1,4}\)|\d{1,4})(?:[ .-]?\d{2,4}){2,4}
      | (?:1[ .-])?(?:\(\d{3}\)[ ]?|\d{3}[ .-])\d{3}[ .-]\d{4}
    )(?![\w]|[.-]\d)""",
    re.X,
)
_DIGIT = re.compile(r"\d")


def luhn_valid(number: str) -> bool:
    """Whether the digits of ``number`` pass the Luhn checksum (non-digits are ignored)."""
    digits = [int(c) for c in number if c.isdigit()]
    if not digits:
        return False
    total = 0
    for i, d in enumerate(reversed(digits)):
        if i % 2 == 1:
            d = d * 2 - 9 if d > 4 else d * 2
        total += d
    return total % 10 == 0


def shannon_entropy(text: str) -> float:
    """Bits per character of ``text``'s character distribution."""
    if not text:
        return 0.0
    n = len(text)
    return -sum(c / n * math.log2(c / n) for c in Counter(text).values())


def _is_card(match: re.Match[str]) -> bool:
    digits = "".join(c for c in match.group(0) if c.isdigit())
    return 13 <= len(digits) <= 19 and digits[0] in "23456" and luhn_valid(digits)


def _is_ipv6(match: re.Match[str]) -> bool:
    text = match.group(0)
    if sum(1 for part in text.split(":") if part) < 3:
        return False
    try:
        ipaddress.IPv6Address(text)
    except ValueError:
        return False
    return True


def _is_phone(match: re.Match[str]) -> bool:
    digits = sum(c.isdigit() for c in match.group(0))
    return 8 <= digits <= 15 if match.group(0).startswith("+") else 10 <= digits <= 11


def _is_secret_value(value: str) -> bool:
    has_mix = any(c.isdigit() for c in value) and any(c.isalpha() for c in value)
    return has_mix and shannon_entropy(value) >= 3.0


def _is_vendor_secret(match: re.Match[str]) -> bool:
    value = match.group(0)
    return not value.startswith("sk-") or _is_secret_value(value)


@dataclass(frozen=True)
class _Rule:
    """One pattern of one PII type; ``check`` vets a match, ``group`` replaces only that group."""

    kind: str
    pattern: re.Pattern[str]
    check: Callable[[re.Match[str]], bool] | None = None
    group: str | None = None
    gate: Callable[[str], bool] | None = None
    spans: Callable[[str], list[tuple[int, int]]] | None = None  # replaces pattern matching


def _has_digit(text: str) -> bool:
    return _DIGIT.search(text) is not None


def _has_dash(text: str) -> bool:
    return "-" in text or "_" in text


def _maybe_vendor_secret(text: str) -> bool:
    return _has_dash(text) or any(p in text for p in ("AKIA", "ASIA", "AIza", "eyJ"))


# The gates are cheap substring tests that skip a pattern which cannot match (a 2-3x speed-up on
# ordinary prose).
_RULES: tuple[_Rule, ...] = (
    _Rule("secret", _VENDOR_SECRET, _is_vendor_secret, gate=_maybe_vendor_secret),
    _Rule(
        "secret",
        _PREFIXED_SECRET,
        lambda m: shannon_entropy(m.group(0)) >= 3.5,
        gate=_has_dash,
    ),
    _Rule(
        "secret",
        _ASSIGNED_SECRET,
        lambda m: _is_secret_value(m.group("value")),
        "value",
        gate=lambda t: ":" in t or "=" in t,
    ),
    _Rule("email", _EMAIL, gate=lambda t: "@" in t or "40" in t or "64;" in t or "&commat;" in t),
    _Rule("credit_card", _CARD, _is_card, gate=_has_digit),
    _Rule("ip_address", _IPV6, _is_ipv6, gate=lambda t: "::" in t or t.count(":") >= 3),
    _Rule("ip_address", _IPV4, gate=lambda t: "." in t),
    _Rule("phone", _PHONE, _is_phone, gate=_has_digit),
)


def _phone_spans(text: str, regions: tuple[str, ...] | None) -> list[tuple[int, int]]:
    """libphonenumber's valid numbers, plus the hand-written pattern's (``+`` numbers and
    North-American 3-3-4 shapes, such as the fictional 555 numbers libphonenumber rejects)."""
    spans = pii_phone.phone_spans(text, regions)
    for m in _PHONE.finditer(text):
        if _is_phone(m) and not any(a < m.end() and m.start() < b for a, b in spans):
            spans.append(m.span())
    return sorted(spans)


def _span_rule(rule: _Rule, phone_regions: Iterable[str] | None) -> _Rule:
    """E-mail through the encoding-aware view; phone through libphonenumber where installed."""
    if rule.kind == "email":
        return replace(rule, spans=lambda text: email_spans(text, _EMAIL))
    if rule.kind == "phone" and pii_phone.available():
        regions = None if phone_regions is None else pii_phone.check_regions(phone_regions)
        return replace(rule, spans=lambda text: _phone_spans(text, regions))
    if rule.kind == "phone" and phone_regions is not None:
        raise ValueError("pii.phone_regions needs phonenumbers: pip install 'tunesmith[prep]'")
    return rule


class PiiScrubber:
    """Replaces PII of the chosen ``types`` with placeholders and counts replacements by type."""

    def __init__(
        self, types: Iterable[str] = tuple(PLACEHOLDERS), phone_regions: Iterable[str] | None = None
    ) -> None:
        wanted = set(types)
        unknown = wanted - set(PLACEHOLDERS)
        if unknown:
            raise ValueError(f"unknown PII types {sorted(unknown)}; known: {list(PLACEHOLDERS)}")
        self._rules = [_span_rule(rule, phone_regions) for rule in _RULES if rule.kind in wanted]
        self.counts: Counter[str] = Counter()

    def scrub(self, text: str) -> str:
        """``text`` with every PII match replaced; :attr:`counts` grows by type."""
        for rule in self._rules:
            if rule.gate is not None and not rule.gate(text):
                continue
            if rule.spans is not None:
                text = self._replace_spans(text, rule.kind, rule.spans(text))
            else:
                text = rule.pattern.sub(lambda m, r=rule: self._replace(m, r), text)
        return text

    def _replace_spans(self, text: str, kind: str, spans: list[tuple[int, int]]) -> str:
        for start, end in reversed(spans):
            text = text[:start] + PLACEHOLDERS[kind] + text[end:]
        self.counts[kind] += len(spans)
        return text

    def _replace(self, match: re.Match[str], rule: _Rule) -> str:
        if rule.check is not None and not rule.check(match):
            return match.group(0)
        self.counts[rule.kind] += 1
        placeholder = PLACEHOLDERS[rule.kind]
        if rule.group is None:
            return placeholder
        start, end = match.span(rule.group)
        whole = match.group(0)
        offset = match.start()
        return whole[: start - offset] + placeholder + whole[end - offset :]

    def scrub_json(self, value: Any) -> Any:
        """Every string inside a JSON-like value scrubbed (for raw rows that could not be read)."""
        if isinstance(value, str):
            return self.scrub(value)
        if isinstance(value, list):
            return [self.scrub_json(v) for v in value]
        if isinstance(value, dict):
            return {k: self.scrub_json(v) for k, v in value.items()}
        return value

    def scrub_example(self, ex: Example, fields: Iterable[str]) -> Example:
        """``ex`` with the chosen fields scrubbed: roles (system/user/assistant), text, meta."""
        chosen = set(fields)
        if not chosen:
            return ex
        changes: dict[str, Any] = {}
        if ex.text is not None and "text" in chosen:
            changes["text"] = self.scrub(ex.text)
        if ex.messages and chosen & {"system", "user", "assistant"}:
            changes["messages"] = tuple(
                Message(m.role, self.scrub(m.content)) if m.role in chosen else m
                for m in ex.messages
            )
        if ex.meta and "meta" in chosen:
            changes["meta"] = self.scrub_json(ex.meta)
        return replace(ex, **changes) if changes else ex
