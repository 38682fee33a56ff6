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
# Where a match that may contain a space could still be under way at the end of a text, so later text could
# complete it: a run of number characters from a digit, "+" or "(" (cards, phones), or an IBAN's start (two
# capitals, two digits, then capitals, digits and single spaces). It over-approximates the patterns above (no
# look-behinds, looser order): holding back too much only delays text. Every other pattern matches no whitespace,
# so it cannot reach back past the last word.
OPEN_NUMBER = rf"[\d(+][\d .()\-]{{0,{MAX_SPACED_MATCH}}}"
OPEN_IBAN = rf"[A-Z](?:[A-Z](?:\d(?:\d[A-Z\d ]{{0,{MAX_SPACED_MATCH}}})?)?)?"
OPEN_TAIL = re.compile(rf"(?:{OPEN_NUMBER}|{OPEN_IBAN})\Z")
# The shapes a match without spaces (e-mail, URL, key, IP) has while it is still being written: every prefix of
# every such match is one of them (they over-approximate the patterns above, and only shrink as text is added, so
# a start found dead stays dead). A start from which the rest of the text is none of them cannot begin a match
# that later text completes or changes.
GROWING_SHAPES = re.compile("|".join([
    r"[\w.+-]{0,64}(?:@(?:[A-Za-z0-9-]{1,63}\.){0,8}[A-Za-z0-9-]{0,63})?",  # e-mail
    r"(?:[A-Za-z0-9-]{1,63}\.){0,8}[A-Za-z0-9-]{0,63}",  # a domain (a URL without a scheme)
    r"(?:[A-Za-z0-9-]{1,63}\.){1,8}[A-Za-z]{2,24}/[^\s<>\"']{0,2048}",  # ... with its path
    r"(?:https?://|ftp://|www\.)[^\s<>\"']{0,2048}",
    r"(?-i:(?:sk-|AKIA|gh[pousr]_|github_pat_|xox[abprs]-|AIza|hf_)[\w-]{0,200})",
    r"[0-9a-fA-F:.]{0,45}",  # IPv4, IPv6
]), re.IGNORECASE)
GROWING_STARTS = ("http://", "https://", "ftp://", "www.")  # compared lower-cased
KEY_STARTS = ("sk-", "AKIA", "github_pat_", "AIza", "hf_") + tuple(f"gh{c}_" for c in "pousr") + tuple(
    f"xox{c}-" for c in "abprs")
NONWORD = re.compile(r"\W")


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
    return scan_from(text, 0)


def scan_from(text: str, at: int) -> tuple[Span, ...]:
    """The spans the scan of the whole text finds from `at` on, when no match of any pattern can contain position
    `at` - 1 (see `growing_pii.REST`): the scan is then at rest there, and look-behinds still see the text before."""
    if not MAYBE_PII.search(text, at):
        return ()
    found = []
    for match in SCANNER.finditer(text, at):
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
    return pulled_before(cut, found)


def open_start(text: str) -> int:
    """The earliest position where a match with spaces (card, phone, IBAN) that later text could still complete
    or extend may start; len(text) when there is none. Text before it and before the last word is settled: no
    continuation changes which spans it holds."""
    found = OPEN_TAIL.search(text, max(0, len(text) - MAX_SPACED_MATCH - 8))
    return found.start() if found else len(text)


def may_grow(tail: str) -> bool:
    """Whether `tail` may be the start of an e-mail, URL, key or IP still being written."""
    if GROWING_SHAPES.fullmatch(tail):
        return True
    lowered = tail.lower()
    return any(s.startswith(tail) for s in KEY_STARTS) or any(s.startswith(lowered) for s in GROWING_STARTS)


def open_word(text: str, start: int) -> int:
    """The earliest position at or after `start` (inside the last word: no whitespace from `start` on) where an
    e-mail, URL, key or IP that later text could complete or change may start; len(text) when there is none.

    A match can only start where the character before is no word character (every pattern's look-behind), and
    only if the rest of the text could be its beginning (`may_grow`): a long run of letters, or of brackets, is
    settled, so a reply without spaces is not held back to its end. Every position before the result is settled
    for good, so a caller whose text only grows can pass the last result as the next `start`."""
    at = start
    while True:
        if (at == 0 or NONWORD.match(text, at - 1)) and may_grow(text[at:]):
            return at
        found = NONWORD.search(text, at)
        if found is None:
            return len(text)
        at = found.end()


def pulled_before(cut: int, found: list[Span]) -> int:
    """`cut`, moved back to the start of any span it would split."""
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
