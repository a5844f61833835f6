"""E-mail addresses hidden by transfer encodings, for PII scrubbing.

Mail archives keep addresses in forms a plain pattern misses: a quoted-printable soft line break
inside the address (``no_degree=\\n_xyz@excite.com``: ``=`` at a line end joins the lines), the
``@`` written as quoted-printable ``=40`` (in quoted-printable text only), URL-encoded ``%40``
(``mailto:ann%40example.org``) or an HTML entity (``&#64;``, ``&#x40;``, ``&commat;``).

:func:`decoded_view` reads the text as if those were decoded and keeps, for every character of
the view, the span of the original text it came from; :func:`email_spans` matches the e-mail
pattern on the view and returns the *original* spans, so the placeholder replaces the encoded
address whole (soft breaks included) and the rest of the text is left byte for byte.
"""

from __future__ import annotations

import re

_SOFT_BREAK = r"=\r?\n"
_QP_HINT = re.compile(r"=\r?\n|=3D|=20|=0A", re.I)
_ENCODED = re.compile(rf"{_SOFT_BREAK}|%40|&#0*64;|&#x0*40;|&commat;", re.I)
_ENCODED_QP = re.compile(rf"{_SOFT_BREAK}|=40|%40|&#0*64;|&#x0*40;|&commat;", re.I)


def decoded_view(text: str) -> tuple[str, list[int], list[int]]:
    """``(view, starts, ends)``: the text with soft breaks removed and encoded ``@`` decoded;
    view character ``i`` came from ``text[starts[i]:ends[i]]``."""
    pattern = _ENCODED_QP if _QP_HINT.search(text) else _ENCODED
    view: list[str] = []
    starts: list[int] = []
    ends: list[int] = []
    pos = 0
    for m in pattern.finditer(text):
        for i in range(pos, m.start()):
            view.append(text[i])
            starts.append(i)
            ends.append(i + 1)
        if not m.group(0).startswith("=\n") and not m.group(0).startswith("=\r"):
            view.append("@")
            starts.append(m.start())
            ends.append(m.end())
        elif starts:  # a soft break belongs to the character before it
            ends[-1] = m.end()
        pos = m.end()
    for i in range(pos, len(text)):
        view.append(text[i])
        starts.append(i)
        ends.append(i + 1)
    return "".join(view), starts, ends


def needs_view(text: str) -> bool:
    """Whether ``text`` holds an encoding :func:`decoded_view` undoes (else match it as is)."""
    return _ENCODED_QP.search(text) is not None


def email_spans(text: str, pattern: re.Pattern[str]) -> list[tuple[int, int]]:
    """``(start, end)`` in ``text`` of every match of the e-mail ``pattern`` on the decoded view;
    a soft break right after an address stays in the text."""
    if not needs_view(text):
        return [m.span() for m in pattern.finditer(text)]
    view, starts, ends = decoded_view(text)
    spans = []
    for m in pattern.finditer(view):
        a, b = m.span()
        end = ends[b - 1]
        if text[end - 2 : end] == "=\n" or text[end - 3 : end] == "=\r\n":
            end = end - 2 if text[end - 2 : end] == "=\n" else end - 3
        spans.append((starts[a], end))
    return spans


__all__ = ["decoded_view", "email_spans", "needs_view"]
