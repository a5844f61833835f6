"""International phone numbers (libphonenumber) and encoded e-mail addresses in PII scrubbing.

The cases are ``benchmarks/pii_cases.jsonl`` (the set ``benchmarks/pii_eval.py`` scores): phone
numbers from 20+ regions, e-mails under transfer encodings, and look-alikes that must survive.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from tunesmith.prep.pii import PiiScrubber
from tunesmith.prep.pii_email import decoded_view
from tunesmith.prep.pii_phone import check_regions, phone_spans

pytest.importorskip("phonenumbers")

CASES = Path(__file__).resolve().parents[2] / "benchmarks" / "pii_cases.jsonl"
ALL = [json.loads(line) for line in CASES.read_text(encoding="utf-8").splitlines() if line]
TYPES = ["email", "phone", "credit_card", "ip_address", "secret"]


def _id(case: dict[str, Any]) -> str:
    return f"{case['kind']}-{case.get('region') or case.get('encoding') or case.get('category')}"


def test_the_case_set_covers_ten_countries_and_every_kind() -> None:
    regions = {c["region"] for c in ALL if c["kind"] == "phone"}
    assert len(regions) >= 10
    assert {c["category"] for c in ALL if c["kind"] == "negative"} >= {
        "version",
        "price",
        "date",
        "ip",
    }


@pytest.mark.parametrize("case", ALL, ids=[_id(c) for c in ALL])
def test_case_scrubs_to_its_expected_text(case: dict[str, Any]) -> None:
    assert PiiScrubber(TYPES).scrub(case["text"]) == case["expected"]


def test_uk_national_numbers_from_the_spam_corpus() -> None:
    """The seven numbers the hand-written pattern left in the SpamAssassin corpus were UK
    national format; the count of replacements is by type."""
    s = PiiScrubber(["phone"])
    out = s.scrub("Call 0871 246 0002 or 08705 555 999 by 2002-08-26.")
    assert out == "Call <PHONE> or <PHONE> by 2002-08-26."
    assert s.counts["phone"] == 2


def test_region_list_limits_national_numbers_but_not_international_ones() -> None:
    text = "Paris 01 42 68 53 00, London 020 7946 0958, Berlin +49 30 901820"
    gb_only = PiiScrubber(["phone"], phone_regions=["gb"]).scrub(text)
    assert gb_only == "Paris 01 42 68 53 00, London <PHONE>, Berlin <PHONE>"
    assert [text[a:b] for a, b in phone_spans(text, ("FR",))] == [
        "01 42 68 53 00",
        "+49 30 901820",
    ]
    with pytest.raises(ValueError, match="unknown phone region 'XX'"):
        check_regions(["GB", "xx"])


def test_soft_break_view_maps_back_to_the_original_text() -> None:
    text = "to no_degree=\n_xyz@excite.com now"
    view, starts, ends = decoded_view(text)
    assert view == "to no_degree_xyz@excite.com now"
    a = view.index("no_degree")
    b = view.index(" now")
    assert text[starts[a] : ends[b - 1]] == "no_degree=\n_xyz@excite.com"


def test_qp_at_sign_is_decoded_only_in_quoted_printable_text() -> None:
    s = PiiScrubber(["email"])
    assert s.scrub("set width=40example.com") == "set width=40example.com"
    assert s.scrub("a=3Db\nmail bob=40example.com") == "a=3Db\nmail <EMAIL>"


def test_prep_config_checks_phone_regions(tmp_path: Path) -> None:
    from tunesmith.prep.config import PiiSection

    assert PiiSection(phone_regions=["gb", "de"]).phone_regions == ["GB", "DE"]
    with pytest.raises(ValueError, match="unknown phone region"):
        PiiSection(phone_regions=["ZZ"])
