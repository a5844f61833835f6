"""International phone numbers for PII scrubbing, with Google's libphonenumber (``phonenumbers``).

A candidate is a run of 7-15 digits in at least two groups (separators: space, ``-``, ``.``,
``/``, parentheses), or one starting with ``+``. It is a phone number when:

* it starts with ``+`` (or the ``00`` international prefix): libphonenumber says the number is
  valid for its country code;
* otherwise (national format) some region of the list (default: every region libphonenumber
  knows) parses it to a *valid* number, and the candidate's digit groups are exactly those of
  that number's national or international format in that region (``0871 246 0002`` is how the
  UK writes 0871 numbers; ``2023-10-05`` is not how Denmark writes its 8-digit numbers), or it
  starts with that region's trunk prefix (``08705 555 999``);
* a candidate that is none of these is split at clear breaks (two spaces, a spaced dash, a
  space before ``(``) and each piece tried (``10018 - (212) 533-1775``: a ZIP code, a number).

Dates (``2023-10-05``, ``25.12.2023``), dotted quads and amounts after a currency sign are never
phones, whatever a region accepts. Without ``phonenumbers`` installed (the ``prep`` extra) the
caller falls back to its hand-written pattern.
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from functools import cache, lru_cache

CANDIDATE = re.compile(r"(?<![\w+.,/$€£¥-])(?:\+|\(\+?)?\d[\d().\-/ ]{5,22}\d\)?(?![\w]|[.,/-]\d)")
"""Digits with phone separators between, bounded by non-word text (vetted by :func:`is_phone`)."""

_DATE = re.compile(
    r"(?:\d{4}([-./])\d{1,2}\1\d{1,2}|\d{1,2}([-./])\d{1,2}\2(?:\d{4}|\d{2}))(?:\s+\d{1,2}:\d{2})?"
)
_QUAD = re.compile(r"\d{1,3}(?:\.\d{1,3}){3}")
_YEARS = re.compile(r"(?<!\d)(?:19|20)\d\d\s*[-/]\s*(?:19|20)\d\d(?!\d)")
_GROUP = re.compile(r"\d+")
_CURRENCY = re.compile(r"[$€£¥]\s?$|(?:USD|EUR|GBP|CHF|JPY|Rs\.?)\s?$")


def available() -> bool:
    """Whether ``phonenumbers`` is installed (``pip install tunesmith[prep]``)."""
    try:
        import phonenumbers  # noqa: F401
    except ImportError:
        return False
    return True


def _groups(text: str) -> tuple[int, ...]:
    return tuple(len(g) for g in _GROUP.findall(text))


def _never_phone(candidate: str) -> bool:
    """Dates (with a time after), year ranges, dotted quads, decimals: never phones."""
    digits = sum(c.isdigit() for c in candidate)
    if not 7 <= digits <= 15:
        return True
    core = candidate.strip("()")
    if _DATE.match(core) or _QUAD.fullmatch(core) or _YEARS.search(core):
        return True
    if candidate.startswith(("+", "(+")):
        return False
    groups = _groups(candidate)
    # 0.187293, 8198.9697, 5740.52432.861: a dotted phone has 3+ groups of 2-4 digits
    dotted = "." in core and (len(groups) < 3 or any(not 2 <= g <= 4 for g in groups))
    return len(groups) < 2 or dotted


@cache
def _region_table(regions: tuple[str, ...] | None) -> tuple[tuple[str, str, frozenset[int]], ...]:
    """(region, national prefix, possible national lengths) of every region asked for."""
    import phonenumbers as pn

    names = sorted(pn.SUPPORTED_REGIONS) if regions is None else regions
    table = []
    for region in names:
        meta = pn.PhoneMetadata.metadata_for_region(region)
        if meta is None:
            raise ValueError(f"unknown phone region {region!r} (ISO 3166 codes such as GB, DE)")
        lengths = frozenset(meta.general_desc.possible_length or ())
        table.append((region, meta.national_prefix or "", lengths))
    return tuple(table)


def _international(candidate: str) -> bool:
    import phonenumbers as pn

    digits = "".join(c for c in candidate if c.isdigit())
    text = candidate if candidate.lstrip("(").startswith("+") else "+" + digits[2:]
    try:
        number = pn.parse(text, None)
    except pn.NumberParseException:
        return False
    return bool(pn.is_valid_number(number))


def _national(candidate: str, table: Iterable[tuple[str, str, frozenset[int]]]) -> bool:
    import phonenumbers as pn

    digits = "".join(c for c in candidate if c.isdigit())
    groups = _groups(candidate)
    formats = (pn.PhoneNumberFormat.NATIONAL, pn.PhoneNumberFormat.INTERNATIONAL)
    for region, prefix, lengths in table:
        national = digits[len(prefix) :] if prefix and digits.startswith(prefix) else digits
        if lengths and len(national) not in lengths and len(digits) not in lengths:
            continue
        try:
            number = pn.parse(candidate, region)
        except pn.NumberParseException:
            continue
        if not pn.is_valid_number_for_region(number, region):
            continue
        national_groups = _groups(pn.format_number(number, formats[0]))
        if prefix and digits.startswith(prefix) and len(national_groups) == len(groups):
            return True  # led by the trunk prefix ("08705 555 999"): group lengths may vary
        if any(_groups(pn.format_number(number, f).lstrip("+")) == groups for f in formats):
            return True
    return False


@lru_cache(maxsize=65536)
def is_phone(candidate: str, regions: tuple[str, ...] | None = None) -> bool:
    """Whether ``candidate`` (a :data:`CANDIDATE` match) is a valid phone number (module doc)."""
    candidate = candidate.strip()
    if _never_phone(candidate):
        return False
    if candidate.lstrip("(").startswith("+") or candidate.startswith("00"):
        return _international(candidate)
    return _national(candidate, _region_table(regions))


_BREAK = re.compile(r"\s{2,}|\s-+\s|\s(?=\()")


def _within(
    text: str, start: int, end: int, regions: tuple[str, ...] | None
) -> list[tuple[int, int]]:
    """The phone spans inside one candidate ``text[start:end]``: the whole, else each piece
    between clear breaks (two spaces, a spaced dash, a space before ``(``) that is one
    ("10018 - (212) 533-1775": a ZIP code, then the number)."""
    if is_phone(text[start:end], regions):
        return [(start, end)]
    spans: list[tuple[int, int]] = []
    pos = start
    for brk in [*_BREAK.finditer(text, start, end), None]:
        stop = end if brk is None else brk.start()
        if pos < stop and (pos, stop) != (start, end) and is_phone(text[pos:stop], regions):
            spans.append((pos, stop))
        pos = end if brk is None else brk.end()
    return spans


def phone_spans(text: str, regions: tuple[str, ...] | None = None) -> list[tuple[int, int]]:
    """``(start, end)`` of every phone number in ``text``, in order, non-overlapping."""
    spans = []
    for match in CANDIDATE.finditer(text):
        if _CURRENCY.search(text, max(0, match.start() - 4), match.start()):
            continue
        start, end = match.span()
        raw = match.group(0)
        if raw.endswith(")") and raw.count("(") < raw.count(")"):
            end -= 1  # "(call 020 7946 0958)": the closing parenthesis is not the number's
        spans += _within(text, start, end, regions)
    return spans


def check_regions(regions: Iterable[str]) -> tuple[str, ...]:
    """The regions upper-cased, each one libphonenumber knows (else ValueError naming it)."""
    names = tuple(r.upper() for r in regions)
    _region_table(names)
    return names


__all__ = ["CANDIDATE", "available", "check_regions", "is_phone", "phone_spans"]
