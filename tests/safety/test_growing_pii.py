"""The personal-data scans of a growing text find, at every length, exactly what a scan of the whole text finds:
text drawn from the characters of cards, phones, IBANs, SSNs, e-mails, URLs and IPs, with real ones mixed in,
grown by random pieces."""

from __future__ import annotations

import random

from llmcycle.safety.flags import SSN, card_numbers
from llmcycle.safety.growing_pii import GrowingScan
from llmcycle.safety.pii import spans

INSERTS = ["4111 1111 1111 1111", "5500-0000-0000-0004", "(415) 555-0132", "+44 20 7946 0958", "078-05-1120",
           "GB82 WEST 1234 5698 7654 32", "jo@example.com", "www.example.com/docs", "192.168.1.20", "1-800-555-0199"]


def texts(rng: random.Random, count: int) -> list[str]:
    alphabet = "0123456789" * 4 + "   \n--..()+" + "GBWESTAKI" + "abcmo@:/,;"
    out = []
    for _ in range(count):
        text = "".join(rng.choice(alphabet) for _ in range(rng.randint(10, 120)))
        for _ in range(rng.randint(0, 3)):
            at = rng.randint(0, len(text))
            text = text[:at] + rng.choice(["", " ", "a ", "x\n"]) + rng.choice(INSERTS) + text[at:]
        out.append(text)
    return out


def test_growing_scans_equal_whole_text_scans():
    rng, found = random.Random(5), 0
    for text in texts(rng, 300):
        scan, at = GrowingScan(), 0
        while at < len(text):
            at = min(len(text), at + rng.randint(1, 6))
            prefix = text[:at]
            got = scan.privacy(prefix)
            assert got == (tuple(spans(prefix)), bool(card_numbers(prefix)), SSN.search(prefix) is not None), prefix
            found += bool(got[0])
    assert found > 1000


def test_the_scan_resumes_after_the_last_rest_point():
    scan = GrowingScan()
    text = "call me on (415) 555-0132 or write to jo@example.com and then"
    assert scan.spans(text) == tuple(spans(text))
    assert scan.rest == len(text) - len("then") and len(scan.settled) == 2
    longer = text + " more words 4111 1111 1111 1111"
    assert scan.spans(longer) == tuple(spans(longer))
