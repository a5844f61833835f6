"""Text normalisation for de-duplication and the word-level helpers the filters share.

Normalised text is NFKC-folded, case-folded, and every run of whitespace, punctuation, symbols and
underscores becomes one space, so ``"Hello,  World!"`` and ``"hello world"`` compare equal.
"""

from __future__ import annotations

import hashlib
import re
import unicodedata

from tunesmith.data.records import Example

_NON_WORD = re.compile(r"[\W_]+")


def normalize_text(text: str) -> str:
    """Case, whitespace and punctuation folded: ``"It's  OK!"`` -> ``"it s ok"``."""
    if not text.isascii():
        text = unicodedata.normalize("NFKC", text)
    return _NON_WORD.sub(" ", text.casefold()).strip()


def dedup_text(ex: Example) -> str:
    """The text two records are compared on: user and assistant turns (or the plain text).

    System prompts are left out on purpose: many datasets share one long system prompt across
    all rows, which would make every row look like a near-duplicate of every other.
    """
    if ex.text is not None:
        return ex.text
    return "\n".join(f"{m.role}: {m.content}" for m in ex.messages if m.role != "system")


def content_hash(normalized: str) -> int:
    """A deterministic 64-bit hash of normalised text (stable across processes and machines)."""
    digest = hashlib.blake2b(normalized.encode("utf-8"), digest_size=8).digest()
    return int.from_bytes(digest, "little")


def shingles(normalized: str, n: int) -> list[bytes]:
    """Word ``n``-grams of normalised text; a text of fewer than ``n`` words is one shingle."""
    words = normalized.split()
    if len(words) < n:
        return [" ".join(words).encode("utf-8")]
    return [" ".join(words[i : i + n]).encode("utf-8") for i in range(len(words) - n + 1)]


def response_text(ex: Example) -> str:
    """What the quality filters judge: the assistant turns joined, or the plain text."""
    if ex.text is not None:
        return ex.text
    return "\n".join(m.content for m in ex.messages if m.role == "assistant")
