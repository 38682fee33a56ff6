"""Streamed redaction is leak-free and early: whatever a reply's pieces are, every release is a prefix of the whole
reply's redacted form (so no character redaction would hide is ever sent), and ordinary words are released as soon
as they end, not a fixed window later."""

from __future__ import annotations

import random

import pytest

from llmcycle.safety import Moderator, parse_policy
from llmcycle.safety.pii import open_start, scrub
from llmcycle.serve.generation import OutputGuard

REPLIES = [
    "Sure! Call me at 415-555-0132 or pay with card 4111 1111 1111 1111 before noon.",
    "Card:4111111111111111 expires soon, phone (415) 555-0132.",
    "Wire it to GB82 WEST 1234 5698 7654 32 today, or DE89 3704 0044 0532 0130 00 tomorrow.",
    "Reach our London desk on +44 20 7946 0958 or +1 (415) 555-0132 any time.",
    "The numbers 12 and 345 are fine; my SSN is 078-05-1120 and my card 5500-0000-0000-0004.",
    "Mail jo@example.com, see www.example.com/docs, or ping 192.168.1.20 with key "
    "sk-abcdefghijklmnopqrstuvwx1234 now.",
    "In 2024 the IBAN was FR1420041010050500013M02606 and the phone 1-800-555-0199",
]


def redaction_only() -> Moderator:
    """Only the privacy category acts (redact): the classifier's other categories cannot end a random reply."""
    policy = parse_policy("off")
    policy["S7"] = "redact"
    return Moderator(policy)


def pieces(text: str, rng: random.Random, longest: int) -> list[str]:
    out, at = [], 0
    while at < len(text):
        step = rng.randint(1, longest)
        out.append(text[at:at + step])
        at += step
    return out


def stream(moderator: Moderator, parts: list[str]) -> list[str]:
    """Each release, checking after every piece that what was sent so far is a prefix of the final redaction."""
    whole = scrub("".join(parts))
    guard, sent = OutputGuard(moderator), []
    for part in parts:
        sent.append(guard.feed(part))
        assert whole.startswith("".join(sent)), ("".join(parts), parts, "".join(sent))
    sent.append(guard.feed("", final=True))
    assert "".join(sent) == whole
    return sent


@pytest.mark.parametrize("reply", REPLIES)
def test_every_release_is_a_prefix_of_the_whole_redaction(reply):
    moderator, rng = redaction_only(), random.Random(reply)
    stream(moderator, list(reply))  # one character at a time
    for _ in range(12):
        stream(moderator, pieces(reply, rng, 4))


def test_random_number_shaped_text_never_leaks():
    """Text drawn mostly from the characters of cards, phones and IBANs, split at random: whatever the patterns
    find in the whole text was never sent, not even one character of it (this would fail if the hold missed a
    shape the patterns accept)."""
    moderator, rng = redaction_only(), random.Random(7)
    alphabet = "0123456789" * 6 + "      --..()+" + "GBDEFRWST" + "ab,:\n"
    leaked = 0
    for _ in range(400):
        text = "".join(rng.choice(alphabet) for _ in range(rng.randint(10, 70)))
        if "4" in text:  # some Luhn-valid cards and valid IBANs among the noise
            text = text.replace("4", " 4111 1111 1111 1111 ", 1)
        if "G" in text:
            text = text.replace("G", "GB82 WEST 1234 5698 7654 32 ", 1)
        stream(moderator, pieces(text, rng, 3))
        leaked += scrub(text) != text
    assert leaked > 100  # the noise did hold personal data to hide


def test_plain_words_are_released_as_they_end_with_redaction_on():
    guard = OutputGuard(redaction_only())
    shown = [guard.feed(piece) for piece in ["Sure", ",", " here", " is", " the", " plan"]]
    assert shown == ["", "", "Sure, ", "here ", "is ", "the "]
    assert guard.feed("", final=True) == "plan"


def test_a_number_is_held_only_while_it_could_grow():
    guard = OutputGuard(redaction_only())
    shown = [guard.feed(piece) for piece in ["Call", " 415", " 555", " 0132", " now", " please"]]
    assert shown == ["", "Call ", "", "", "<PHONE> ", "now "]
    assert open_start("I have 3 cats ") == len("I have 3 cats ")
    assert open_start("IBAN GB82 WEST 12") == len("IBAN ")
    assert open_start("dial +44 (20) 79") == len("dial ")


SPACELESS = [
    "rup" * 30 + "mail:jo.smith@example.com)})})" + "x" * 30,
    ")}" * 20 + "http://example.com/a/b?c=1" + ")}" * 15 + "sk-abcdefghijklmnopqrstuvwx1234" + "]" * 30,
    "umeric" * 8 + "(192.168.1.20)" + "umeric" * 8 + "(2001:db8:0:0:0:0:2:1)" + "ab" * 20,
    "_" * 40 + "/www.example.org/" + "=" * 30 + "ghp_" + "a" * 40 + ";" + "hf_" + "b" * 34 + "!" * 20,
    "word-" * 12 + ";jo@example.com;" + "-x" * 12 + ",AKIAABCDEFGHIJKLMNOP" + "." * 25,
]


@pytest.mark.parametrize("reply", SPACELESS)
def test_a_reply_without_spaces_never_leaks(reply):
    """Long words are released before they end: still never a character of an e-mail, URL, key or IP."""
    assert scrub(reply) != reply
    moderator, rng = redaction_only(), random.Random(reply)
    stream(moderator, list(reply))
    for _ in range(6):
        stream(moderator, pieces(reply, rng, 6))


def test_random_spaceless_text_never_leaks():
    """Runs drawn from the characters of e-mails, URLs, keys and IPs, with real ones mixed in, split at random."""
    moderator, rng = redaction_only(), random.Random(11)
    alphabet = "abcdefxyz" * 3 + "0123456789" + "@.:/-_)(]+" + "ABKIhpsk"
    inserts = ["jo@example.com", "www.example.com/x", "10.0.0.1", "sk-abcdefghijklmnopqrstuvwx1234", "a.b.io"]
    leaked = 0
    for _ in range(300):
        text = "".join(rng.choice(alphabet) for _ in range(rng.randint(20, 90)))
        at = rng.randint(0, len(text))
        text = text[:at] + rng.choice(["", ";"]) + rng.choice(inserts) + rng.choice(["", ")"]) + text[at:]
        stream(moderator, pieces(text, rng, 4))
        leaked += scrub(text) != text
    assert leaked > 120


def test_a_long_run_without_spaces_is_released_before_its_end():
    """A run that cannot be the start of a match is released once longer than the longest e-mail local part
    (64 characters), and then as it comes, not held to the end of the reply."""
    guard = OutputGuard(redaction_only())
    shown = [guard.feed("rup") for _ in range(40)]
    first = next(i for i, s in enumerate(shown) if s)
    assert 3 * (first + 1) <= 66 and shown[first + 1:] == ["rup"] * (39 - first)
    brackets = OutputGuard(redaction_only())  # nothing can start there: released once the word is long
    shown = [brackets.feed(")}") for _ in range(20)]
    assert "".join(shown[:13]) == ")}" * 13 and shown[13:] == [")}"] * 7


def test_with_moderation_off_every_piece_goes_out_as_it_comes():
    guard = OutputGuard(Moderator(parse_policy("off")))
    assert not guard.moderator.enabled
    assert [guard.feed(p) for p in ["你好", "，世", "界", " hal", "f a wo", "rd"]] == ["你好", "，世", "界", " hal",
                                                                                   "f a wo", "rd"]


def test_a_long_word_streams_under_the_classifier_alone():
    """Moderation on, redaction off: a reply without spaces (Chinese, say) is released before its end too."""
    policy = parse_policy("off")
    policy["S1"] = "block"
    guard = OutputGuard(Moderator(policy))
    assert guard.moderator.enabled and not guard.redacting
    shown = [guard.feed("天气很好") for _ in range(30)]
    first = next(i for i, s in enumerate(shown) if s)  # once longer than an e-mail's local part could be
    assert 4 * (first + 1) <= 68 and shown[first + 1:] == ["天气很好"] * (29 - first)
