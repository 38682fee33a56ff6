"""PII detection and scrubbing: e-mails, URLs, IP addresses, API keys, card numbers (Luhn checked), IBANs (mod-97
checked), SSNs and phone numbers become <EMAIL>, <URL>, <IP>, <KEY>, <CARD>, <IBAN>, <SSN>, <PHONE>.

Regexes, not a model: a format is the truth here. They run in one pass and their misses are predictable (names and
street addresses are not caught). Patterns lean towards precision: a bare number is only a phone when it is
phone-shaped, and a dotted quad after "v" or "version" is a version, not an address.

Every pattern runs in linear time on any input, so a hostile prompt cannot stall the caller: a match may only
start at a token boundary (a look-behind), and every repetition is bounded, so the work per start position is a
constant. Pathological shapes ("1." repeated, long digit runs, "a@a@a...") are in the tests with a time bound.
"""

from __future__ import annotations

import re
from collections import Counter
from functools import lru_cache
from typing import Iterator, NamedTuple

TLDS = "com|org|net|edu|gov|mil|io|co|uk|us|ca|de|fr|es|it|nl|au|info|biz|me|tv|ly|app|dev|ai|xyz"
OCTET = r"(?:25[0-5]|2[0-4]\d|1\d\d|[1-9]?\d)"
HEX = r"[0-9a-fA-F]{1,4}"
LABEL = r"[A-Za-z0-9](?:[A-Za-z0-9-]{0,61}[A-Za-z0-9])?"
PATH = r"[^\s<>\"']{0,2048}"
# Order matters: at one position the first kind that matches wins (a card number is not read as a phone).
PATTERNS = {
    "EMAIL": rf"(?<![\w.+-])[\w.+-]{{1,64}}@(?:{LABEL}\.){{1,8}}[A-Za-z]{{2,24}}(?![\w-])",
    "URL": (
        rf"(?<![\w/])(?:https?://|ftp://|www\.)[^\s<>\"']{{1,2048}}"
        rf"|(?<![\w.@/-])(?:{LABEL}\.){{1,8}}(?:{TLDS})(?![\w-])(?:/{PATH})?"
    ),
    "KEY": (
        r"(?-i:(?<![\w-])(?:sk-(?:proj-)?[A-Za-z0-9_-]{20,200}|AKIA[0-9A-Z]{16}|gh[pousr]_[A-Za-z0-9]{36,80}"
        r"|github_pat_\w{22,120}|xox[abprs]-[A-Za-z0-9-]{10,120}|AIza[0-9A-Za-z_-]{35}|hf_[A-Za-z0-9]{30,80})"
        r"(?![\w-]))"
    ),
    "IP": (
        rf"(?<![\w.])(?<!\bversion )(?<!\bver )(?<!\bversion: ){OCTET}(?:\.{OCTET}){{3}}(?![\w.]\w)(?!\.?\d)"
        rf"|(?<![\w:])(?:{HEX}:){{7}}{HEX}(?![\w:])"
        rf"|(?<![\w:])[0-9a-fA-F]{{2,4}}:(?:{HEX}:){{0,5}}:(?:{HEX}(?::{HEX}){{0,6}})?(?![\w:])"
    ),
    "CARD": r"(?<![\w-])(?<!\d[ -])\d(?:[ -]?\d){12,18}+(?![ -]?\d)",
    "IBAN": r"(?-i:(?<!\w)[A-Z]{2}\d{2}(?: ?[A-Z0-9]{4}){2,7}(?: ?[A-Z0-9]{1,3})?(?!\w))",
    "SSN": r"(?<![\w-])\d{3}-\d{2}-\d{4}(?![\w-])",
    "PHONE": (
        r"(?<![\w+])\+\d{1,3}[ .-]?(?:\(?\d{1,4}\)?[ .-]?){1,4}\d{2,4}(?!\w)"
        r"|(?<![\w(])(?:1[ .-]?)?(?:\(\d{3}\)|\d{3})[ .-]?\d{3}[ .-]?\d{4}(?!\w)"
        r"|(?<![\w-])\d{3}-\d{4}(?![\w-])"
    ),
}
KINDS = tuple(PATTERNS)
SCANNER = re.compile("|".join(f"(?P<{kind}>{pattern})" for kind, pattern in PATTERNS.items()), re.IGNORECASE)
# A necessary condition for any pattern above (an @, a colon, a digit, www. or a known TLD): most chat turns have
# none, and checking this first makes the step about 5x faster.
MAYBE_PII = re.compile(rf"[@:\d]|www\.|\.(?:{TLDS})\b", re.IGNORECASE)
TRAILING_PUNCTUATION = ".,;:!?)]}'\""
# No match of a pattern that may contain whitespace is longer than this (phones, cards, IBANs): a stream that
# holds back this many characters, and the last run of non-space characters, never releases part of a match.
MAX_SPACED_MATCH = 64


class Span(NamedTuple):
    start: int
    end: int
    kind: str  # one of KINDS


def luhn_ok(digits: str) -> bool:
    """Card numbers carry a Luhn check digit; random digit runs mostly do not."""
    total = 0
    for i, ch in enumerate(reversed(digits)):
        d = int(ch)
        if i % 2 == 1:
            d = d * 2 - 9 if d > 4 else d * 2
        total += d
    return total % 10 == 0


def iban_ok(text: str) -> bool:
    """The ISO 13616 check: the rearranged number, letters as 10..35, is 1 modulo 97."""
    compact = text.replace(" ", "")
    if not 15 <= len(compact) <= 34:
        return False
    return int("".join(str(int(c, 36)) for c in compact[4:] + compact[:4])) % 97 == 1


def _valid(kind: str, found: str) -> bool:
    if kind == "CARD":
        return luhn_ok(re.sub(r"\D", "", found))
    if kind == "IBAN":
        return iban_ok(found)
    return True


def spans(text: str) -> Iterator[Span]:
    """Every piece of personal data in `text`, left to right, without overlaps."""
    yield from _spans(text)


@lru_cache(maxsize=64)
def _spans(text: str) -> tuple[Span, ...]:
    """`spans`, remembered for the last texts: a streamed reply's check looks for personal data (moderation) and
    then redacts it in the same text, and the scan is most of a check's time once a reply holds a digit."""
    if not MAYBE_PII.search(text):
        return ()
    found = []
    for match in SCANNER.finditer(text):
        kind, start, end = match.lastgroup, match.start(), match.end()
        if not _valid(kind, match.group()):
            continue
        if kind == "URL":  # "see www.x.com." keeps its full stop
            end = start + len(match.group().rstrip(TRAILING_PUNCTUATION))
        found.append(Span(start, end, kind))
    return tuple(found)


def replace_spans(text: str, found: list[Span] | Iterator[Span], upto: int | None = None) -> str:
    """`text[:upto]` with each span replaced by its placeholder (spans past `upto` are left out)."""
    upto = len(text) if upto is None else upto
    out, at = [], 0
    for span in found:
        if span.start >= upto:
            break
        out.append(text[at:span.start])
        out.append(f"<{span.kind}>")
        at = span.end
    out.append(text[at:upto])
    return "".join(out)


def safe_cut(text: str, found: list[Span], limit: int) -> int:
    """The last word boundary at or before `limit` that splits no span: cutting there leaves no partial match
    behind (part of a phone or card number that no pattern would catch on its own)."""
    if limit >= len(text):
        return len(text)
    cut = max(text.rfind(" ", 0, limit + 1), text.rfind("\n", 0, limit + 1)) + 1
    for span in found:
        if span.start < cut < span.end:
            cut = span.start
    return cut


def scrub_head(text: str, limit: int) -> str:
    """The scrubbed text, cut at a safe point near `limit` characters when longer (with a note of what was cut):
    bounded work for logs that keep a long message."""
    if len(text) <= limit:
        return scrub(text)
    window = text[:limit + MAX_SPACED_MATCH + 8]  # every span starting before `limit` lies inside it
    found = list(spans(window))
    cut = safe_cut(window, found, limit)
    return replace_spans(window, found, cut) + f" [... {len(text) - cut} more characters]"


def scrub(text: str, counts: Counter | None = None) -> str:
    """`text` with every piece of personal data replaced by its placeholder; `counts` gets one per kind found."""
    found = list(spans(text))
    if counts is not None:
        for span in found:
            counts[span.kind.lower()] += 1
    return replace_spans(text, found) if found else text
