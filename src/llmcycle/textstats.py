"""Word-level statistics of text that several layers need (training rewards, eval metrics, gates): a few lines of
our own on lower-cased word tokens, so they are easy to check by hand and sit below everything that uses them."""

from __future__ import annotations

import re
from typing import Sequence

WORD = re.compile(r"\w+|[^\w\s]")


def words(text: str) -> list[str]:
    """Lower-cased words and punctuation marks: the unit of ROUGE-L, distinct-n, repetition and length."""
    return WORD.findall(text.lower())


def ngrams(tokens: Sequence[str], n: int) -> list[tuple[str, ...]]:
    return [tuple(tokens[i : i + n]) for i in range(len(tokens) - n + 1)]


def distinct_n(texts: Sequence[str], n: int) -> float:
    """Distinct n-grams over all n-grams of all replies (0-1): low means the model says the same thing to everyone."""
    grams = [g for text in texts for g in ngrams(words(text), n)]
    return len(set(grams)) / len(grams) if grams else 0.0


def repetition_rate(texts: Sequence[str], n: int = 2) -> float:
    """Mean share of a reply's word n-grams that repeat an earlier n-gram of the same reply (0-1).

    Catches the degenerate loops ("i know i know i know") of small or badly tuned models. Replies too short to
    hold an n-gram count as 0.
    """
    if not texts:
        return 0.0
    total = 0.0
    for text in texts:
        grams = ngrams(words(text), n)
        if grams:
            total += 1 - len(set(grams)) / len(grams)
    return total / len(texts)
