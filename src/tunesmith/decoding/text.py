"""Token ids to text as they arrive: streamed deltas, never half a character, cut at a stop."""

from __future__ import annotations

from collections.abc import Callable, Sequence


class TextStream:
    """New text after each token, never splitting a UTF-8 character, cut at the first stop string.

    Text that could be the start of a stop string is held back until it cannot be.
    """

    def __init__(self, decode: Callable[[list[int]], str], stop: Sequence[str]) -> None:
        self._decode = decode
        self.stop = list(stop)
        self.ids: list[int] = []
        self.text = ""  # emitted so far
        self.stopped = False

    def push(self, token: int) -> str:
        self.ids.append(token)
        full = self._decode(self.ids)
        if full.endswith("\ufffd"):  # an incomplete multi-byte character
            return ""
        for s in self.stop:
            at = full.find(s, max(0, len(self.text) - len(s)))
            if at >= 0:
                self.stopped = True
                return self._emit(full[:at])
        hold = max((_overlap(full, s) for s in self.stop), default=0)
        return self._emit(full[: len(full) - hold])

    def flush(self) -> str:
        """The held-back text at the end of generation (no stop string completed)."""
        return "" if self.stopped else self._emit(self._decode(self.ids))

    def _emit(self, upto: str) -> str:
        if not upto.startswith(self.text):  # decoding more ids rewrote earlier text: wait
            return ""
        delta, self.text = upto[len(self.text) :], upto
        return delta


def _overlap(text: str, stop: str) -> int:
    """The length of the longest suffix of ``text`` that is a proper prefix of ``stop``."""
    for n in range(min(len(stop) - 1, len(text)), 0, -1):
        if text.endswith(stop[:n]):
            return n
    return 0
