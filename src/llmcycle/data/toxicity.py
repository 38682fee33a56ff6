"""The data stage's toxicity step: drop records the shared scorer (`llmcycle.safety.toxicity`) calls toxic.

A record goes when it holds one severe term, or when profane words make up more than `toxicity_max_ratio` of
its words.
"""

from __future__ import annotations

from llmcycle.data.config import DataConfig
from llmcycle.data.example import Example, StepReport
from llmcycle.safety.toxicity import ToxicityScorer


def filter_toxicity(examples: list[Example], cfg: DataConfig) -> tuple[list[Example], StepReport]:
    scorer = ToxicityScorer()
    report = StepReport("toxicity", True, details={"severe": 0, "profane": 0})
    kept = []
    for example in examples:
        verdict = scorer.is_toxic(example.joined_text(), cfg.toxicity_max_ratio)
        if verdict is None:
            kept.append(example)
        else:
            report.details[verdict] += 1
    report.removed = len(examples) - len(kept)
    return kept, report
