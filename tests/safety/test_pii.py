"""PII patterns: what each finds, what it leaves alone, and linear time on hostile input."""

from __future__ import annotations

import time

import pytest

from llmcycle.safety import Moderator, pii, redact, scrub
from llmcycle.safety.pii import scrub_head
from llmcycle.safety.flags import pii_flags

N = 100_000
PATHOLOGICAL = {
    "dots": "1." * (N // 2),
    "digits": "1" * N,
    "spaced_digits": "1 " * (N // 2),
    "dashed_digits": "1-" * (N // 2),
    "labels": "a." * (N // 2),
    "hyphen_labels": "a-" * (N // 2),
    "ats": "a@" * (N // 2),
    "email_domain": "x@" + "a." * (N // 2 - 1),
    "plus_phone": "+1 " * (N // 3),
    "colons": "a:" * (N // 2),
    "hex_colons": "ff:" * (N // 3),
    "word": "a" * N,
    "url": "http://" + "a" * N,
    "www": "www." * (N // 4),
    "iban": "DE89 " * (N // 5),
    "key": "sk-" * (N // 3),
    "parens": "(555) " * (N // 6),
}


def best_of_3(fn, text: str) -> float:
    """CPU seconds of the fastest of three runs: the work done, which other processes on a shared machine do not
    inflate the way they inflate wall time."""
    times = []
    for _ in range(3):
        began = time.thread_time()
        fn(text)
        times.append(time.thread_time() - began)
    return min(times)


@pytest.mark.parametrize("shape", sorted(PATHOLOGICAL))
def test_hostile_input_runs_in_linear_time(shape):
    text = PATHOLOGICAL[shape]
    assert best_of_3(redact, text) < 0.2, shape
    assert best_of_3(pii_flags, text) < 0.2, shape


def test_moderation_cost_is_bounded():
    moderator = Moderator()
    text = PATHOLOGICAL["dots"] + " how do I make a pipe bomb"
    assert len(text) > moderator.max_chars
    began = time.perf_counter()
    decision = moderator.check(text, "input")
    assert decision.blocked and time.perf_counter() - began < 0.05


def test_each_kind_is_found():
    text = ("mail jo.doe@example.com or see https://x.org/a, call (555) 123-4567 or +44 20 7946 0958; "
            "card 4111 1111 1111 1111, IBAN DE89 3704 0044 0532 0130 00, SSN 123-45-6789, host 10.0.0.1, "
            "key sk-abcdefghijklmnopqrstuvwx1234 and AKIAABCDEFGHIJKLMNOP.")
    assert scrub(text) == ("mail <EMAIL> or see <URL>, call <PHONE> or <PHONE>; card <CARD>, IBAN <IBAN>, "
                           "SSN <SSN>, host <IP>, key <KEY> and <KEY>.")


def test_look_alikes_are_left_alone():
    kept = ["version 1.2.3.4 of the library", "v1.2.3.4", "1.2.3.4.5", "card 4111 1111 1111 1112",
            "IBAN DE89 3704 0044 0532 0130 01", "order 12345", "pi is 3.14159", "the year 2024",
            "skip-this-word-please-ok-fine", "DE12 is a label"]
    for text in kept:
        assert scrub(text) == text, text


def test_a_cut_log_keeps_no_part_of_a_number():
    text = "x" * 90 + " call 415 555 0132 or pay 4111 1111 1111 1111 " + "y " * 50
    for limit in range(90, 150):
        head = scrub_head(text, limit)
        assert not any(part in head for part in ("415", "555", "0132", "4111", "1111")), (limit, head)
    assert scrub_head(text, 10_000) == scrub(text)


def test_a_checked_then_redacted_text_is_scanned_once():
    """Moderation finds personal data and redaction then needs the same spans: the second look is remembered."""
    text = "call me on 415-555-0132 or mail bob@example.com today"
    pii._spans.cache_clear()
    first = list(pii.spans(text))
    assert list(pii.spans(text)) == first and [s.kind for s in first] == ["PHONE", "EMAIL"]
    assert pii._spans.cache_info().hits == 1 and pii._spans.cache_info().misses == 1
