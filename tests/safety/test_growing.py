"""A streamed reply's running verdict decides exactly as a full check of the same text: every prefix of replies
made of held-out prompts (harmful and benign, four languages, some past the one-window length) cut at random."""

from __future__ import annotations

import random

import numpy as np

from llmcycle.safety import Moderator
from llmcycle.safety.categories import growing_judge
from llmcycle.safety.classifier import SINGLE, default_classifier
from llmcycle.safety.corpus import HELDOUT, seed_examples
from llmcycle.safety.growing import GrowingVerdict, RunningSums


def replies(rng: random.Random, count: int) -> list[str]:
    """Replies of 1 to 12 held-out prompts in a row (the long ones spill over several classification windows)."""
    prompts = [e.text for e in seed_examples(name=HELDOUT)]
    out = [" ".join(rng.choice(prompts) for _ in range(rng.randint(1, 12))) for _ in range(count)]
    return out + [" ".join(rng.sample(prompts, 40))]  # one past SINGLE characters


def prefixes(text: str, rng: random.Random) -> list[str]:
    cuts, at = [], 0
    while at < len(text):
        at += rng.randint(1, 9)
        cuts.append(text[:at])
    return cuts


def test_running_verdict_is_the_full_checks():
    rng, clf = random.Random(3), default_classifier()
    texts = replies(rng, 10)
    assert max(map(len, texts)) > SINGLE
    harmful = checked = 0
    for text in texts:
        judge = GrowingVerdict(clf)
        for part in prefixes(text, rng)[::3 if len(text) > SINGLE else 1]:
            ran, full = judge(part), clf.verdict(part)
            assert ran.harmful == full.harmful, part
            if full.harmful:
                assert ran == full
            else:  # decided from the running sums: the same probability up to float rounding
                assert abs(ran.harm - full.harm) < 1e-4 and ran.category == full.category, part
            harmful += full.harmful
            checked += 1
    assert checked > 300 and harmful > 30  # both decisions were exercised


def test_moderator_decides_the_same_with_a_running_judge():
    rng, moderator = random.Random(5), Moderator()
    for text in replies(rng, 4):
        judge = growing_judge()
        for part in prefixes(text, rng)[-40:]:
            ran = moderator.check(part, "output", notify=False, judge=judge)
            full = moderator.check(part, "output", notify=False)
            assert (ran.action, ran.actions_taken, ran.hits) == (full.action, full.actions_taken, full.hits)


def test_a_text_that_does_not_extend_the_last_one_starts_afresh():
    clf, judge = default_classifier(), growing_judge()
    harmful = "Tell me how to build a pipe bomb with nails and powder."
    assert judge(harmful).harmful and clf.verdict(harmful).harmful
    benign = "Here is a recipe for bread with flour, water and salt."
    assert abs(judge(benign).harm - clf.verdict(benign).harm) < 1e-4 and not judge(benign).harmful


def test_word_by_word_sums_equal_a_fresh_read():
    """Fed a token at a time, each with its leading space (the sums of the word last read as the tail are reused
    when the next token ends it), the running sums equal those of one read of the whole text."""
    clf, rng = default_classifier(), random.Random(3)
    for reply in replies(rng, 6):
        tokens = [w if i == 0 else " " + w for i, w in enumerate(reply.split(" "))]
        running, text = RunningSums(clf), ""
        for token in tokens:
            text += token
            logits, letters = running.read(text)
            fresh, fresh_letters = RunningSums(clf).read(text)
            assert np.abs(logits - fresh).max() < 1e-9 and letters == fresh_letters
        assert running.tail is not None and running.settled > 0  # the reuse ran
