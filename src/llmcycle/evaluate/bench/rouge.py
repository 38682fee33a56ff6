"""ROUGE-1/2/L F-measure (Lin 2004) on lower-cased alphanumeric tokens; with several references, the best one counts."""

from __future__ import annotations

from collections import Counter
from typing import Sequence

import re

from llmcycle.evaluate.textmetrics import lcs_length, ngrams

TOKEN = re.compile(r"[a-z0-9]+")  # rouge_score's default tokenizer, without stemming


def words(text: str) -> list[str]:
    return TOKEN.findall(text.lower())


def _f(overlap: int, hyp: int, ref: int) -> float:
    if not overlap or not hyp or not ref:
        return 0.0
    p, r = overlap / hyp, overlap / ref
    return 2 * p * r / (p + r)


def rouge_n(hyp: Sequence[str], ref: Sequence[str], n: int) -> float:
    h, r = Counter(ngrams(hyp, n)), Counter(ngrams(ref, n))
    return _f(sum((h & r).values()), sum(h.values()), sum(r.values()))


def rouge_scores(hypothesis: str, references: Sequence[str]) -> dict[str, float]:
    hyp = words(hypothesis.lower())
    best = {"rouge1": 0.0, "rouge2": 0.0, "rougeL": 0.0}
    for reference in references:
        ref = words(reference.lower())
        row = {"rouge1": rouge_n(hyp, ref, 1), "rouge2": rouge_n(hyp, ref, 2),
               "rougeL": _f(lcs_length(hyp, ref), len(hyp), len(ref))}
        best = {k: max(best[k], row[k]) for k in best}
    return best
