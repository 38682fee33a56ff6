"""Offline profanity/toxicity scorer from llmcycle's own word list (resources/toxic_terms.txt).

Word-level matching (so "Scunthorpe" is safe) after undoing common character swaps (f@g, 5h1t). A record goes when
it holds one severe term, or when profane words make up more than `toxicity_max_ratio` of its words.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from functools import lru_cache
from importlib import resources
from typing import Optional

WORD = re.compile(r"[a-z0-9@$]+")
LEET = str.maketrans({"0": "o", "1": "i", "3": "e", "4": "a", "5": "s", "7": "t", "@": "a", "$": "s"})


@dataclass
class TermList:
    words: dict[str, str] = field(default_factory=dict)  # word -> severity
    prefixes: dict[str, re.Pattern] = field(default_factory=dict)  # severity -> pattern matching word starts
    phrases: Optional[re.Pattern] = None  # severe phrases

    def word_severity(self, word: str) -> Optional[str]:
        if word in self.words:
            return self.words[word]
        for severity, pattern in self.prefixes.items():
            if pattern.match(word):
                return severity
        return None


def parse_terms(text: str) -> TermList:
    terms = TermList()
    phrases: list[str] = []
    prefixes: dict[str, list[str]] = {}
    for raw in text.splitlines():
        line = raw.split("#", 1)[0].strip()
        if not line:
            continue
        severity, term = line.split(None, 1)
        if " " in term:
            phrases.append(r"\b" + r"\s+".join(map(re.escape, term.split())) + r"\b")
        elif term.endswith("*"):
            prefixes.setdefault(severity, []).append(term[:-1])
        else:
            terms.words[term] = severity
    # severe first, so a word matching both kinds counts as severe
    for severity in sorted(prefixes, key=lambda s: s != "severe"):
        terms.prefixes[severity] = re.compile("|".join(map(re.escape, prefixes[severity])))
    terms.phrases = re.compile("|".join(phrases)) if phrases else None
    return terms


@lru_cache(maxsize=1)
def default_terms() -> TermList:
    return parse_terms(resources.files("llmcycle").joinpath("resources/toxic_terms.txt").read_text("utf-8"))


class ToxicityScorer:
    """Counts severe and profane words of a text; caches per word because chat vocabularies are small."""

    def __init__(self, terms: TermList | None = None) -> None:
        self.terms = terms or default_terms()
        self.cache: dict[str, Optional[str]] = {}

    def severity(self, word: str) -> Optional[str]:
        if word not in self.cache:
            plain = word.translate(LEET) if not word.isalpha() else word
            self.cache[word] = self.terms.word_severity(plain)
        return self.cache[word]

    def score(self, text: str) -> tuple[int, int, int]:
        """(words, profane words, severe hits)."""
        lowered = text.lower()
        words = WORD.findall(lowered)
        profane = severe = 0
        for word in words:
            level = self.severity(word)
            if level == "severe":
                severe += 1
            elif level == "profane":
                profane += 1
        if self.terms.phrases is not None and self.terms.phrases.search(lowered):
            severe += 1
        return len(words), profane, severe

    def is_toxic(self, text: str, max_ratio: float) -> Optional[str]:
        """'severe', 'profane' or None."""
        words, profane, severe = self.score(text)
        if severe:
            return "severe"
        if words and profane / words > max_ratio:
            return "profane"
        return None
