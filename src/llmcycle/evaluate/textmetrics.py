"""Reference-based and reference-free metrics of generated replies.

BLEU and chrF come from sacrebleu (corpus scores, the standard ones); ROUGE-L, distinct-n and the repetition rate
are a few lines of our own on lower-cased word tokens, so they are easy to check by hand.
"""

from __future__ import annotations

from typing import Any, Sequence

import numpy as np

from llmcycle.evaluate.stats import RESAMPLES, Interval, bootstrap, bootstrap_mean
from llmcycle.textstats import WORD, distinct_n, ngrams, repetition_rate, words


def sacre_metric(name: str) -> Any:
    """sacrebleu's BLEU (as `bleu` scores it) or chrF object, whose per-sentence statistics add up to the corpus's."""
    from sacrebleu.metrics import BLEU, CHRF

    return BLEU(effective_order=True) if name == "bleu" else CHRF()


def corpus_stats(name: str, hypotheses: Sequence[str], references: Sequence[str]) -> np.ndarray:
    """Per-reply sufficient statistics of corpus BLEU or chrF (one row per reply; the corpus score is of their sum)."""
    metric = sacre_metric(name)
    return np.asarray(metric._extract_corpus_statistics(list(hypotheses), [list(references)]), dtype=np.float64)


def corpus_scorer(name: str) -> Any:
    """summed statistics (B x k) -> B corpus scores of BLEU or chrF."""
    metric = sacre_metric(name)

    def score(summed: np.ndarray) -> np.ndarray:
        return np.array([metric._compute_score_from_stats([int(round(x)) for x in row]).score for row in summed])

    return score


def corpus_interval(name: str, hypotheses: Sequence[str], references: Sequence[str], resamples: int = RESAMPLES,
                    seed: int = 0) -> Interval:
    """Bootstrap interval of corpus BLEU or chrF: replies are resampled, each keeping its own n-gram statistics."""
    return bootstrap(corpus_stats(name, hypotheses, references), corpus_scorer(name), resamples, seed)


def bleu(hypotheses: Sequence[str], references: Sequence[str]) -> float:
    """Corpus BLEU (0-100), sacrebleu's 13a tokenisation and exponential smoothing.

    Effective order: n-gram orders no reply is long enough to have are left out instead of zeroing the score, so a
    set of short but perfect replies still scores 100.
    """
    from sacrebleu.metrics import BLEU

    if not hypotheses:
        return 0.0
    return float(BLEU(effective_order=True).corpus_score(list(hypotheses), [list(references)]).score)


def chrf(hypotheses: Sequence[str], references: Sequence[str]) -> float:
    """Corpus chrF (0-100): character n-gram F-score, kinder than BLEU to short, differently worded replies."""
    import sacrebleu

    if not hypotheses:
        return 0.0
    return float(sacrebleu.corpus_chrf(list(hypotheses), [list(references)]).score)


def lcs_length(a: Sequence[str], b: Sequence[str]) -> int:
    """Length of the longest common subsequence, one row of the DP table at a time."""
    if len(a) < len(b):
        a, b = b, a
    row = [0] * (len(b) + 1)
    for x in a:
        prev_diag = 0
        for j, y in enumerate(b, 1):
            keep = row[j]
            row[j] = prev_diag + 1 if x == y else max(row[j], row[j - 1])
            prev_diag = keep
    return row[-1]


def rouge_l(hypothesis: str, reference: str) -> float:
    """ROUGE-L F1 of one pair (0-1): LCS-based precision and recall over words."""
    hyp, ref = words(hypothesis), words(reference)
    if not hyp or not ref:
        return 0.0
    common = lcs_length(hyp, ref)
    if common == 0:
        return 0.0
    precision, recall = common / len(hyp), common / len(ref)
    return 2 * precision * recall / (precision + recall)


def mean_rouge_l(hypotheses: Sequence[str], references: Sequence[str]) -> float:
    if not hypotheses:
        return 0.0
    return sum(rouge_l(h, r) for h, r in zip(hypotheses, references)) / len(hypotheses)


def mean_words(texts: Sequence[str]) -> float:
    return sum(len(words(t)) for t in texts) / len(texts) if texts else 0.0


def generation_metrics(replies: Sequence[str], references: Sequence[str]) -> dict[str, float]:
    """Every text metric of a set of replies against their references, keyed by metric name."""
    return {
        "bleu": bleu(replies, references),
        "chrf": chrf(replies, references),
        "rouge_l": mean_rouge_l(replies, references),
        "distinct_1": distinct_n(replies, 1),
        "distinct_2": distinct_n(replies, 2),
        "repetition_rate": repetition_rate(replies),
        "mean_reply_words": mean_words(replies),
    }


def generation_intervals(replies: Sequence[str], references: Sequence[str], seed: int = 0) -> dict[str, Interval]:
    """95% intervals of the reference-based metrics, resampling the test conversations (seeded)."""
    if len(replies) < 2:
        return {}
    return {
        "bleu": corpus_interval("bleu", replies, references, seed=seed),
        "chrf": corpus_interval("chrf", replies, references, seed=seed),
        "rouge_l": bootstrap_mean([rouge_l(h, r) for h, r in zip(replies, references)], seed=seed),
    }
