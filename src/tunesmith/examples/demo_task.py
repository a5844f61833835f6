"""The quickstart demo task: extract a person's details from one sentence as one line of JSON.

Each prompt asks, in plain words, for the name, age and city in a short sentence "as JSON", for
example::

    Extract the person's name, age and city as JSON.
    Meet Maria Lopez, a 34-year-old from Lisbon.

and the reference reply is exactly ``{"name": "Maria Lopez", "age": 34, "city": "Lisbon"}``. The
prompt does not spell out the key names, their order, or that ``age`` is an integer, and the reply
must be the JSON alone, so an untuned instruct model mostly fails (prose, code fences, other keys,
a string age) while a few minutes of LoRA on ``data/demo/train.jsonl`` teach it the format.

Scoring is strict: :func:`score_reply` is true only when the stripped reply is a JSON object equal
to the reference object, with the same JSON types (``34`` is not ``"34"`` or ``34.0``). Key order
and whitespace inside the JSON are not checked; anything around the JSON (prose, code fences)
fails.
"""

from __future__ import annotations

import json
from typing import Any

__all__ = ["score_reply"]


def _canonical(text: str) -> str | None:
    """The JSON object in ``text`` (the whole text) in canonical form, or None."""
    try:
        value: Any = json.loads(text.strip())
    except ValueError:
        return None
    if not isinstance(value, dict):
        return None
    return json.dumps(value, sort_keys=True, ensure_ascii=False)


def score_reply(reply: str, reference: str) -> bool:
    """True when ``reply``, stripped, is a JSON object equal to ``reference`` (types included)."""
    got = _canonical(reply)
    return got is not None and got == _canonical(reference)
