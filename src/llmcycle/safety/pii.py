"""PII scrubbing: emails, URLs, IP addresses and phone numbers become <EMAIL>, <URL>, <IP>, <PHONE>.

Regexes, not a model: they run offline in one pass and their misses are predictable (names and street addresses
are not caught). Patterns lean towards precision: a bare number is only a phone when it is phone-shaped.
"""

from __future__ import annotations

import re
from collections import Counter


TLDS = "com|org|net|edu|gov|mil|io|co|uk|us|ca|de|fr|es|it|nl|au|info|biz|me|tv|ly|app|dev|ai|xyz"
OCTET = r"(?:25[0-5]|2[0-4]\d|1\d\d|[1-9]?\d)"
HEX = r"[0-9a-fA-F]{1,4}"
PATTERNS = {
    "EMAIL": r"(?<![\w.+-])[\w.+-]+@[A-Za-z0-9-]+(?:\.[A-Za-z0-9-]+)*\.[A-Za-z]{2,}\b",
    "URL": (
        r"\b(?:https?://|ftp://|www\.)[^\s<>\"']+"
        rf"|\b(?:[A-Za-z0-9](?:[A-Za-z0-9-]*[A-Za-z0-9])?\.)+(?:{TLDS})\b(?:/[^\s<>\"']*)?"
    ),
    "IP": (
        rf"(?<![\w.]){OCTET}(?:\.{OCTET}){{3}}(?![\w.]\w)"
        rf"|(?<![\w:])(?:{HEX}:){{7}}{HEX}(?![\w:])"
        rf"|(?<![\w:])[0-9a-fA-F]{{2,4}}:(?:{HEX}:){{0,5}}:(?:{HEX}(?::{HEX})*)?(?![\w:])"
    ),
    "PHONE": (
        r"(?<![\w+])\+\d{1,3}[ .-]?(?:\(?\d{1,4}\)?[ .-]?){1,4}\d{2,4}(?!\w)"
        r"|(?<![\w(])(?:1[ .-]?)?(?:\(\d{3}\)|\d{3})[ .-]?\d{3}[ .-]?\d{4}(?!\w)"
        r"|(?<![\w-])\d{3}-\d{4}(?![\w-])"
    ),
}
SCRUBBER = re.compile("|".join(f"(?P<{kind}>{pattern})" for kind, pattern in PATTERNS.items()), re.IGNORECASE)
# A necessary condition for any pattern above (an @, a colon, a digit, www. or a known TLD): most chat turns have
# none, and checking this first makes the step about 5x faster.
MAYBE_PII = re.compile(rf"[@:\d]|www\.|\.(?:{TLDS})\b", re.IGNORECASE)
TRAILING_PUNCTUATION = ".,;:!?)]}'\""


def scrub(text: str, counts: Counter | None = None) -> str:
    """`text` with every email, URL, IP address and phone number replaced by its placeholder."""

    def replace(match: re.Match) -> str:
        kind = match.lastgroup
        found = match.group()
        tail = ""
        if kind == "URL":  # "see www.x.com." keeps its full stop
            stripped = found.rstrip(TRAILING_PUNCTUATION)
            tail = found[len(stripped):]
        if counts is not None:
            counts[kind.lower()] += 1
        return f"<{kind}>{tail}"

    return SCRUBBER.sub(replace, text) if MAYBE_PII.search(text) else text
