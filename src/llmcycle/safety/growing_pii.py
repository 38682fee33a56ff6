"""Personal data in a text that only grows (a streamed reply), found without re-reading what was read before.

A streamed reply is scanned for personal data at each check, for its redaction and for the moderation's privacy
hits (cards, SSNs); the whole-text scans grew with the reply's length. A position right after a newline, or after
a space that follows anything but a digit, a capital or ")", is a rest point: no match of any pattern contains it
(e-mails, URLs, keys and IPs hold no whitespace; cards, phones and IBANs put single separators between digits,
capitals or ")"; SSNs hold none), and every match before it ends, look-ahead included, inside the text before it.
So what the whole-text scans find before the last rest point never changes as the reply grows, and the scans
resume there: each check reads the text after the last rest point (usually the last word) and no more.
"""

from __future__ import annotations

import re

from llmcycle.safety.flags import CARD, SSN
from llmcycle.safety.pii import Span, luhn_ok, scan_from

REST = re.compile(r"[^0-9A-Z)] |\n")  # ends at a rest point (case-sensitive: an IBAN's letters are capitals)


def card_from(text: str, at: int, before: int | None = None) -> bool:
    """Whether a Luhn-valid card number starts at or after `at` (and before `before`)."""
    return any((before is None or m.start() < before) and luhn_ok(re.sub(r"\D", "", m.group()))
               for m in CARD.finditer(text, at))


def ssn_from(text: str, at: int, before: int | None = None) -> bool:
    found = SSN.search(text, at)
    return found is not None and (before is None or found.start() < before)


class GrowingScan:
    """The spans (`pii.spans`) and the card and SSN finds (`flags.card_numbers`, `flags.SSN`) of a text that only
    grows: those before the last rest point are kept, the rest is scanned again at each call."""

    def __init__(self) -> None:
        self._reset()

    def _reset(self) -> None:
        self.seen = ""
        self.rest = 0  # the last rest point found
        self.settled: tuple[Span, ...] = ()  # the spans before it
        self.card = self.ssn = False  # found before it

    def _advance(self, text: str) -> None:
        if not text.startswith(self.seen):
            self._reset()
        self.seen = text
        last = None
        for last in REST.finditer(text, max(self.rest - 1, 0)):
            pass
        if last is None or last.end() <= self.rest:
            return
        point = last.end()
        self.settled += tuple(s for s in scan_from(text, self.rest) if s.start < point)
        self.card = self.card or card_from(text, self.rest, point)
        self.ssn = self.ssn or ssn_from(text, self.rest, point)
        self.rest = point

    def spans(self, text: str) -> tuple[Span, ...]:
        """`pii.spans(text)`, for a text that extends the last one."""
        self._advance(text)
        return self.settled + scan_from(text, self.rest)

    def privacy(self, text: str) -> tuple[tuple[Span, ...], bool, bool]:
        """(spans, whether a card number is there, whether an SSN is there) of `text`."""
        found = self.spans(text)
        return found, self.card or card_from(text, self.rest), self.ssn or ssn_from(text, self.rest)
