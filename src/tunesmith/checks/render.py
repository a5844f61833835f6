"""Examples as the model sees them, trained tokens highlighted: terminal text and an HTML page."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from tunesmith.checks.checks import Check
from tunesmith.data.templates import IGNORE_INDEX, Encoded

RESET = "\x1b[0m"
# Alternating styles make token boundaries visible: trained = black on green, masked = grey.
TRAINED_STYLES = ("\x1b[30;42m", "\x1b[30;102m")
MASKED_STYLES = ("\x1b[90m", "\x1b[37m")
STATUS_STYLES = {"PASS": "\x1b[32m", "WARN": "\x1b[33m", "FAIL": "\x1b[1;31m", "SKIP": "\x1b[90m"}
OPEN, CLOSE = "[[", "]]"
NEWLINE = "↵"


@dataclass(frozen=True)
class RenderedExample:
    """One encoded example with its per-token text."""

    name: str
    input_ids: list[int]
    labels: list[int]
    pieces: list[str]
    truncated: bool

    @property
    def n_trained(self) -> int:
        return sum(label != IGNORE_INDEX for label in self.labels)

    def header(self) -> str:
        cut = ", truncated" if self.truncated else ""
        return f"{self.name}: {len(self.input_ids)} tokens, {self.n_trained} trained{cut}"


def rendered(enc: Encoded, tokenizer: Any, name: str) -> RenderedExample:
    pieces = [tokenizer.decode([t], clean_up_tokenization_spaces=False) for t in enc.input_ids]
    return RenderedExample(name, list(enc.input_ids), list(enc.labels), pieces, enc.truncated)


def _ansi(text: str, style: str) -> str:
    """Style ``text`` line by line (a style must not run into the next line's indent)."""
    return "\n".join(f"{style}{part}{RESET}" if part else "" for part in text.split("\n"))


def render_terminal(ex: RenderedExample, color: bool) -> str:
    """The example's text with newlines shown as ↵; trained tokens in green (``color``) or
    between ``[[`` and ``]]``. Token boundaries alternate shades in colour."""
    out: list[str] = []
    trained_before = False
    for k, (piece, label) in enumerate(zip(ex.pieces, ex.labels, strict=True)):
        text = piece.replace("\n", NEWLINE + "\n")
        trained = label != IGNORE_INDEX
        if color:
            styles = TRAINED_STYLES if trained else MASKED_STYLES
            out.append(_ansi(text, styles[k % 2]))
        else:
            if trained != trained_before:
                out.append(OPEN if trained else CLOSE)
            out.append(text)
        trained_before = trained
    if trained_before and not color:
        out.append(CLOSE)
    return ("  " + "".join(out).replace("\n", "\n  ")).rstrip()


def status_word(check: Check, color: bool) -> str:
    word = f"{check.status:<4}"
    return f"{STATUS_STYLES[check.status]}{word}{RESET}" if color else word


def check_line(check: Check, color: bool) -> str:
    return f"{status_word(check, color)}  {check.name:<13} {check.detail}"


# ----------------------------------------------------------------------------- HTML
