"""Hazard categories of the MLCommons AI Safety taxonomy, as Llama Guard 3 names them (S1-S14), and an offline
classifier that maps text onto them.

The classifier is patterns, not a model: intent phrases per category ("how do I make a pipe bomb"), the shared
toxicity list and threat phrases (S10 hate, S1 threats), and the PII patterns (S7 privacy). It runs in
microseconds on every request and reply; its misses are predictable. A model-based classifier (Llama Guard
itself) can replace `classify` behind the same `Hit` list.
"""

from __future__ import annotations

import re
from collections import Counter
from dataclasses import dataclass

from llmcycle.safety.flags import SSN, card_numbers, term_scorer
from llmcycle.safety.pii import scrub
from llmcycle.safety.toxicity import WORD as TERM_WORD

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
HOW = r"(?:how (?:do|can|could|would|should) (?:i|you|we|one)|how to|tell me how to|teach me to|steps to|guide to|ways? to|help me)"
_INTENT: dict[str, list[str]] = {
    "S1": [rf"{HOW} (?:kill|murder|stab|strangle|poison|kidnap|torture) (?:a |my |an? )?(?:someone|somebody|person|"
           r"people|him|her|them|man|woman|neighbou?r|wife|husband|boss)",
           r"\b(?:i will|i'm going to|i am going to|gonna) (?:kill|murder|shoot|stab)\b",
           rf"{HOW} (?:get away with|cover up) (?:a )?murder", r"\bhire (?:a )?hitman\b"],
    "S2": [rf"{HOW} (?:hack into|break into|steal|shoplift|launder|counterfeit|forge|pick a lock|hotwire|"
           r"cook meth|make meth|sell drugs|evade taxes|commit fraud|phish)",
           r"\b(?:synthesi[sz]e|cook|make) (?:meth|methamphetamine|heroin|fentanyl|crack)\b",
           r"\bstolen credit cards?\b", r"\bransomware\b"],
    "S3": [r"\bsex traffick", r"\b(?:how to|help me) (?:rape|drug and|sexually assault)\b", r"\bnon-?consensual\b"],
    "S4": [r"\b(?:child|children|kid|kids|minor|minors|underage|preteen|\d{1,2}[- ]year[- ]old)\b.{0,40}"
           r"\b(?:sex|sexual|nude|naked|porn|explicit)\b",
           r"\b(?:sex|sexual|nude|naked|porn|explicit)\b.{0,40}\b(?:child|children|kid|kids|minor|minors|underage|"
           r"preteen)\b", r"\bcsam\b"],
    "S5": [r"\bwrite (?:a |an )?(?:fake|false|defamatory) (?:story|article|review|claim)s? (?:about|that)\b"],
    "S6": [r"\bwhat (?:dose|dosage) of\b", r"\bshould i (?:stop taking|take) (?:my )?(?:medication|meds|insulin)\b",
           r"\bdiagnose (?:me|my)\b", r"\b(?:legal|medical|financial) advice\b"],
    "S8": [r"\b(?:full|entire|complete) (?:lyrics|text|script|book|chapter) of\b", r"\bpirat(?:e|ed|ing) (?:movies?|software|games?)\b",
           r"\b(?:crack|keygen|bypass) (?:drm|a license|activation)\b"],
    "S9": [r"\b(?:pipe bomb|nail bomb|dirty bomb|nuclear bomb|nerve agent|sarin|vx gas|ricin|anthrax|mustard gas|"
           r"bioweapon|chemical weapon|enrich(?:ed|ing)? uranium)\b",
           rf"{HOW} (?:make|build|assemble|create) (?:a |an )?(?:bomb|explosive|grenade|molotov|ied)\b"],
    "S11": [r"\b(?:kill|hurt|harm|cut) myself\b", r"\b(?:commit|committing) suicide\b", r"\bend my (?:own )?life\b",
            r"\bsuicide (?:method|note)s?\b", r"\bwant to die\b", r"\bself[- ]harm\b"],
    "S12": [r"\b(?:write|describe|tell me) (?:an? )?(?:explicit|erotic|graphic sex|porn\w*)\b", r"\bsex scene\b"],
    "S13": [r"\b(?:vote|voting|polls?) (?:on|by) (?:text|sms|phone)\b", r"\belection (?:is|was) (?:rigged|stolen)\b",
            r"\b(?:polling stations?|ballots?) (?:are|is) closed\b"],
    "S14": [r"\brm -rf /(?:\s|$)", r":\(\)\s*\{\s*:\|:&\s*\};:", r"\bos\.system\(|\bsubprocess\.(?:run|popen|call)\(",
            r"\bimport os\b.{0,80}\b(?:remove|rmdir|unlink)\b", r"\b__import__\("],
}
PATTERNS = {code: re.compile("|".join(f"(?:{p})" for p in pats), re.IGNORECASE | re.DOTALL)
            for code, pats in _INTENT.items()}
THREATS = ("kill you", "hurt you", "beat you", "i will find you", "shoot you", "punch you", "burn your",
           "destroy you")


@dataclass(frozen=True)
class Hit:
    """One category found in a text, and what matched (for the log; PII matches are not copied)."""

    category: str  # "S1" ... "S14"
    evidence: str

    @property
    def name(self) -> str:
        return CATEGORIES[self.category]


def _privacy_hits(text: str) -> list[Hit]:
    counts: Counter = Counter()
    scrub(text, counts)
    kinds = [k for k in ("email", "phone", "ip") if counts[k]]
    if card_numbers(text):
        kinds.append("card_number")
    if SSN.search(text):
        kinds.append("ssn")
    return [Hit("S7", kind) for kind in kinds]


def _toxicity_hits(text: str) -> list[Hit]:
    """Severe terms of the toxicity list (slurs) are hate (S10); threats are violent (S1). Mere profanity and
    insults are rude, not hazards: eval's probe counts them, moderation lets them pass."""
    lowered = text.lower()
    scorer = term_scorer()
    hits = [Hit("S10", w) for w in set(TERM_WORD.findall(lowered)) if scorer.severity(w) == "severe"]
    if scorer.terms.phrases is not None:
        hits += [Hit("S10", m.group()) for m in scorer.terms.phrases.finditer(lowered)]
    return hits + [Hit("S1", t) for t in THREATS if t in lowered]


def classify(text: str) -> list[Hit]:
    """Every hazard category `text` falls into (one Hit per category and kind), in category order."""
    if not text:
        return []
    hits = [Hit(code, m.group()[:60]) for code, pattern in PATTERNS.items() for m in [pattern.search(text)] if m]
    hits += _toxicity_hits(text) + _privacy_hits(text)
    order = list(CATEGORIES)
    return sorted(set(hits), key=lambda h: (order.index(h.category), h.evidence))
