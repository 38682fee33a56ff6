"""95% intervals for what the eval stage's probes and benchmarks report, read from their per-example sample rows.

metrics.json keeps every metric under its old key (a float) and adds `<metric>_ci95: [lo, hi]` beside it, so the
report, the gates and scripts that read the old keys keep working. Perplexity needs per-conversation scores, which
`PerplexityWithIntervals` keeps while scoring each record once.
"""

from __future__ import annotations

from typing import Any, Sequence

import numpy as np

from llmcycle.evaluate.bench.report import headline
from llmcycle.evaluate.bias import pair_gaps
from llmcycle.evaluate.perplexity import PerplexityTask, Score, score_each
from llmcycle.evaluate.safety import flagged
from llmcycle.evaluate.stats import (
    Interval, bits_per_byte_score, bootstrap, bounded, bootstrap_mean, jackknife, mean_interval, perplexity_score,
    rate_interval,
)
from llmcycle.evaluate.tasks import Subject, TaskResult
from llmcycle.evaluate.textmetrics import distinct_n, generation_intervals, repetition_rate, words

CI = "_ci95"


def as_keys(intervals: dict[str, Interval]) -> dict[str, list[float]]:
    """`<metric>_ci95: [lo, hi]` entries (rounded: the interval's own error dwarfs the digits dropped)."""
    return {f"{name}{CI}": [round(iv.lo, 6), round(iv.hi, 6)] for name, iv in intervals.items()
            if np.isfinite(iv.lo) and np.isfinite(iv.hi)}


def perplexity_intervals(scores: Sequence[Score], seed: int = 0) -> dict[str, Interval]:
    """Bootstrap over conversations of perplexity (nll/tokens) and bits per byte (nll/bytes)."""
    kept = [s for s in scores if s.tokens]
    if len(kept) < 2:
        return {}
    nll = np.array([s.nll_nats for s in kept])
    return {
        "perplexity": bootstrap(np.stack([nll, [s.tokens for s in kept]], 1), perplexity_score, seed=seed),
        "bits_per_byte": bootstrap(np.stack([nll, [s.n_bytes for s in kept]], 1), bits_per_byte_score, seed=seed),
    }


class PerplexityWithIntervals(PerplexityTask):
    """The perplexity probe, scoring each record once and keeping its score so the total gets an interval."""

    def __init__(self, records: Sequence[dict[str, Any]], train: Sequence[dict[str, Any]], batch_size: int,
                 seed: int = 0):
        super().__init__(records, train, batch_size)
        self.seed = seed

    def evaluate(self, subject: Subject) -> TaskResult:
        scores = score_each(subject.model, subject.tokenizer, self.records, self.batch_size,
                            desc=f"{subject.name}: perplexity", backend=subject.backend)
        total = Score()
        for score in scores:
            total.add(score)
        metrics: dict[str, Any] = total.as_metrics()
        if self.train:
            baseline = self.baseline(subject.tokenizer)
            metrics["unigram_perplexity"] = baseline.perplexity
            metrics["unigram_bits_per_byte"] = baseline.bits_per_byte
        metrics.update(as_keys(perplexity_intervals(scores, self.seed)))
        # each conversation's sums, so two models' perplexities can be compared pair by pair (`compare.py`)
        rows = [{"probe": self.name, "id": i, "nll": s.nll_nats, "tokens": s.tokens, "bytes": s.n_bytes}
                for i, s in enumerate(scores)]
        return TaskResult(metrics, rows)


def generation_sample_intervals(rows: list[dict[str, Any]], seed: int) -> dict[str, Interval]:
    replies = [r.get("reply") or "" for r in rows]
    out = generation_intervals(replies, [r.get("reference") or "" for r in rows], seed)
    if len(rows) >= 2:
        out["eos_share"] = rate_interval(sum(r.get("finish_reason") == "eos" for r in rows), len(rows))
        out["repetition_rate"] = bootstrap_mean([repetition_rate([t]) for t in replies], seed=seed)
        out["mean_reply_words"] = mean_interval([len(words(t)) for t in replies])
        for n in (1, 2):
            out[f"distinct_{n}"] = bounded(jackknife(lambda kept, n=n: distinct_n([replies[i] for i in kept], n),
                                                     len(replies)), 0.0, 1.0)
    return out


def safety_sample_intervals(rows: list[dict[str, Any]]) -> dict[str, Interval]:
    flags = [r.get("flags") or [] for r in rows]
    n = len(rows)
    return {
        "safety_flag_rate": rate_interval(sum(flagged(rows)), n),
        "safety_toxic_rate": rate_interval(sum(any(x.startswith(("hazard:", "toxic:")) for x in f) for f in flags),
                                           n),
        "safety_pii_rate": rate_interval(sum(any(x.startswith("pii:") for x in f) for f in flags), n),
    }


def bias_sample_intervals(rows: list[dict[str, Any]]) -> dict[str, Interval]:
    out = {}
    for name, gaps in pair_gaps(rows).items():
        if len(gaps) >= 2:
            out[f"bias_{name}_gap"] = bounded(mean_interval([abs(g) for g in gaps]), 0.0)
            out[f"bias_{name}_signed"] = mean_interval(gaps)
    return out


def bench_intervals(name: str, metrics: dict[str, Any], rows: list[dict[str, Any]]) -> dict[str, Interval]:
    """Accuracies of multiple-choice benchmarks (k of n), and the mean per-item score of generation ones."""
    n = int(metrics.get(f"{name}_n") or 0)
    out = {}
    for key in (f"{name}_acc", f"{name}_acc_norm"):
        if isinstance(metrics.get(key), float) and n and not any("score" in r for r in rows):
            out[key] = rate_interval(round(metrics[key] * n), n)
    scores = [float(r["score"]) for r in rows if isinstance(r.get("score"), (int, float))]
    if len(scores) >= 2:
        key = headline(name)
        if isinstance(metrics.get(key), float) and abs(metrics[key] - float(np.mean(scores))) < 1e-9:
            binary = set(scores) <= {0.0, 1.0}
            out[key] = rate_interval(int(sum(scores)), len(scores)) if binary else mean_interval(scores)
    return out


def task_intervals(task_name: str, result: TaskResult, seed: int = 0) -> dict[str, list[float]]:
    """`<metric>_ci95` entries for one task's result (empty for a task whose rows carry no per-example values)."""
    rows = [r for r in result.samples if r.get("probe") == task_name]
    if task_name == "generation":
        intervals = generation_sample_intervals(rows, seed)
    elif task_name == "safety":
        intervals = safety_sample_intervals(rows) if rows else {}
    elif task_name == "bias":
        intervals = bias_sample_intervals(rows)
    elif task_name == "ppl":
        intervals = {}  # PerplexityWithIntervals reports its own
    else:
        intervals = bench_intervals(task_name, result.metrics, rows)
    return as_keys(intervals)
