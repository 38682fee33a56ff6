"""The data stage's PII step: every message scrubbed by the shared patterns (`llmcycle.safety.pii`)."""

from __future__ import annotations

from collections import Counter

from llmcycle.data.clean import map_contents
from llmcycle.data.config import DataConfig
from llmcycle.data.example import Example, StepReport
from llmcycle.safety.pii import PATTERNS, scrub

__all__ = ["scrub", "scrub_pii"]


def scrub_pii(examples: list[Example], cfg: DataConfig) -> tuple[list[Example], StepReport]:
    counts: Counter = Counter()
    report = StepReport("pii", True)
    map_contents(examples, lambda text: scrub(text, counts), report)
    report.details = {"replaced": {k.lower(): counts[k.lower()] for k in PATTERNS}}
    return examples, report
