"""Hazard categories of the MLCommons AI Safety taxonomy, as Llama Guard 3 names them (S1-S14), and the offline
classifier that maps text onto them.

The decision is the learned classifier's (`classifier.py`: hashed n-grams, a linear softmax trained on labelled
prompts, English, French, Spanish and German), so "summarise the sarin attack for my essay" and "give me a
napalm recipe" are told apart by more than a word. Patterns stay only where a pattern is the truth: personal
data formats (S7 privacy: e-mail, phone, IP, Luhn-checked card numbers, SSNs).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

from llmcycle.safety.classifier import Verdict, default_classifier
from llmcycle.safety.flags import SSN, card_numbers
from llmcycle.safety.growing import GrowingVerdict
from llmcycle.safety.growing_pii import GrowingScan
from llmcycle.safety.pii import MAYBE_PII, spans

CATEGORIES: dict[str, str] = {
    "S1": "violent_crimes",
    "S2": "non_violent_crimes",
    "S3": "sex_related_crimes",
    "S4": "child_sexual_exploitation",
    "S5": "defamation",
    "S6": "specialized_advice",
    "S7": "privacy",
    "S8": "intellectual_property",
    "S9": "indiscriminate_weapons",
    "S10": "hate",
    "S11": "suicide_and_self_harm",
    "S12": "sexual_content",
    "S13": "elections",
    "S14": "code_interpreter_abuse",
}
@dataclass(frozen=True)
class Hit:
    """One category found in a text, and what matched (for the log; PII matches are not copied)."""

    category: str  # "S1" ... "S14"
    evidence: str

    @property
    def name(self) -> str:
        return CATEGORIES[self.category]


def _privacy_hits(text: str, scan: GrowingScan | None = None) -> list[Hit]:
    """One Hit per kind of personal data in `text` (`scan` finds them in a text that only grows)."""
    if scan is not None:
        found, card, ssn = scan.privacy(text)
        kinds = {span.kind.lower() for span in found}
    else:
        if not MAYBE_PII.search(text):  # one scan instead of three for text with no digit, "@" or domain
            return []
        kinds = {span.kind.lower() for span in spans(text)}
        card, ssn = bool(card_numbers(text)), SSN.search(text) is not None
    names = [k for k in ("email", "phone", "ip") if k in kinds] + ["card_number"] * card + ["ssn"] * ssn
    return [Hit("S7", kind) for kind in names]


def classify(text: str, judge: Callable[[str], Verdict] | None = None, scan: GrowingScan | None = None) -> list[Hit]:
    """Every hazard category `text` falls into (one Hit per category and kind), in category order. `judge`
    replaces the classifier's verdict with one that decides the same (`growing_judge` for a streamed reply), and
    `scan` the personal-data scans with ones that find the same (`GrowingScan`)."""
    if not text:
        return []
    verdict = (judge or default_classifier().verdict)(text)
    hits = [Hit(verdict.category, f"classifier p={verdict.harm:.2f}")] if verdict.harmful and verdict.category else []
    hits += _privacy_hits(text, scan)
    order = list(CATEGORIES)
    return sorted(set(hits), key=lambda h: (order.index(h.category), h.evidence))


def prompt_judge() -> Callable[[str], Verdict]:
    """A judge for `classify` on a prompt: the classifier's verdict, and its segments' (`Classifier.prompt_verdict`)."""
    return default_classifier().prompt_verdict


def growing_judge() -> GrowingVerdict:
    """A judge for `classify` on a text that only grows: the same verdicts, from running sums."""
    return GrowingVerdict(default_classifier())
