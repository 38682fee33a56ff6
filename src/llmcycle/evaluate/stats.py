"""How far a reported number can be trusted: standard errors, confidence intervals and A-vs-B tests.

- Rates and accuracies (k of n): the normal (Wald) interval with lm-eval's standard error, or Wilson's score interval
  when the sample is small or the rate sits near 0 or 1 (where Wald's interval collapses or leaves [0, 1]).
- Corpus metrics (chrF, BLEU, ROUGE-L, perplexity): a seeded percentile bootstrap that resamples examples
  (conversations). Each example contributes a row of additive statistics; a resample is a row of multinomial counts,
  so all resamples' summed statistics are one matrix product and 1,000 resamples cost milliseconds.
- A vs B on the same examples: the paired bootstrap (one set of resample counts for both) and the exact sign test.
- Judge win rates with ties (a tie counts half), and how many prompts would decide a gate at the observed rate.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass
from typing import Callable, Sequence

import numpy as np

Z95 = 1.959963984540054  # the standard normal's 97.5% quantile
WALD_MIN_VARIANCE = 9.0  # n·p·(1-p) below this: Wilson instead of Wald (the usual rule of thumb for the normal)
RESAMPLES = 1000

ScoreFn = Callable[[np.ndarray], np.ndarray]  # summed statistics (B x k) -> one score per resample (B,)


@dataclass(frozen=True)
class Interval:
    """A point estimate with its 95% interval, the number of examples behind it and how it was computed."""

    value: float
    lo: float
    hi: float
    n: int
    method: str
    se: float | None = None

    @property
    def ci95(self) -> list[float]:
        return [self.lo, self.hi]

    def as_dict(self) -> dict:
        return {k: v for k, v in asdict(self).items() if v is not None}


def rate_se(k: int, n: int) -> float:
    """Standard error of a rate k/n as lm-eval reports it: the sample standard deviation over sqrt(n)."""
    if n < 2:
        return float("nan")
    p = k / n
    return math.sqrt(p * (1 - p) / (n - 1))


def wilson(k: int, n: int, z: float = Z95) -> tuple[float, float]:
    """Wilson's score interval for k successes in n trials."""
    if n == 0:
        return (0.0, 1.0)
    return wilson_at(k / n, n, z)


def rate_interval(k: int, n: int) -> Interval:
    """k of n with its 95% interval: Wald (lm-eval's standard error) when n·p·(1-p) is large enough, else Wilson."""
    if n == 0:
        return Interval(float("nan"), 0.0, 1.0, 0, "none")
    p, se = k / n, rate_se(k, n)
    if n * p * (1 - p) < WALD_MIN_VARIANCE:
        lo, hi = wilson(k, n)
        return Interval(p, lo, hi, n, "wilson", se if math.isfinite(se) else None)
    return Interval(p, max(0.0, p - Z95 * se), min(1.0, p + Z95 * se), n, "wald", se)


def mean_interval(values: Sequence[float]) -> Interval:
    """The mean of per-example scores with a normal interval from their sample standard deviation."""
    x = np.asarray(values, dtype=float)
    n = len(x)
    if n == 0:
        return Interval(float("nan"), float("nan"), float("nan"), 0, "none")
    mean = float(x.mean())
    if n < 2:
        return Interval(mean, float("nan"), float("nan"), n, "normal")
    se = float(x.std(ddof=1) / math.sqrt(n))
    return Interval(mean, mean - Z95 * se, mean + Z95 * se, n, "normal", se)


def resample_counts(n: int, resamples: int = RESAMPLES, seed: int = 0) -> np.ndarray:
    """(resamples x n) multinomial counts: how often each example is drawn in each bootstrap resample."""
    rng = np.random.default_rng(seed)
    return rng.multinomial(n, np.full(n, 1.0 / n), size=resamples).astype(np.float64)


def bootstrap(stats: np.ndarray, score: ScoreFn, resamples: int = RESAMPLES, seed: int = 0,
              counts: np.ndarray | None = None) -> Interval:
    """Percentile bootstrap of a corpus score computed from per-example additive statistics (n x k)."""
    stats = np.asarray(stats, dtype=np.float64)
    if stats.ndim == 1:
        stats = stats[:, None]
    n = stats.shape[0]
    value = float(score(stats.sum(axis=0, keepdims=True))[0])
    if n < 2:
        return Interval(value, float("nan"), float("nan"), n, "bootstrap")
    counts = resample_counts(n, resamples, seed) if counts is None else counts
    scores = score(counts @ stats)
    lo, hi = np.nanpercentile(scores, [2.5, 97.5])
    return Interval(value, float(lo), float(hi), n, f"bootstrap({len(counts)})", float(np.nanstd(scores, ddof=1)))


def mean_score(summed: np.ndarray) -> np.ndarray:
    """Score of per-example (value, 1) rows: their mean."""
    return summed[:, 0] / summed[:, 1]


def bootstrap_mean(values: Sequence[float], resamples: int = RESAMPLES, seed: int = 0) -> Interval:
    x = np.asarray(values, dtype=np.float64)
    return bootstrap(np.stack([x, np.ones_like(x)], axis=1), mean_score, resamples, seed)


def perplexity_score(summed: np.ndarray) -> np.ndarray:
    """Per-token perplexity of summed (nll_nats, tokens) rows."""
    return np.exp(summed[:, 0] / summed[:, 1])


def bits_per_byte_score(summed: np.ndarray) -> np.ndarray:
    """Bits per byte of summed (nll_nats, bytes) rows."""
    return summed[:, 0] / math.log(2) / summed[:, 1]


@dataclass(frozen=True)
class Comparison:
    """B minus A on the same examples: the difference, its paired-bootstrap interval and a two-sided p-value."""

    delta: float
    lo: float
    hi: float
    p_value: float
    n: int
    method: str

    def as_dict(self) -> dict:
        return asdict(self)


def paired_bootstrap(stats_a: np.ndarray, stats_b: np.ndarray, score: ScoreFn, resamples: int = RESAMPLES,
                     seed: int = 0) -> Comparison:
    """score(B) - score(A) with one set of resample counts for both, so per-example difficulty cancels out.

    The p-value is twice the share of resamples on the far side of zero (the percentile test), at least 1/resamples.
    """
    a = np.asarray(stats_a, dtype=np.float64).reshape(len(stats_a), -1)
    b = np.asarray(stats_b, dtype=np.float64).reshape(len(stats_b), -1)
    if len(a) != len(b):
        raise ValueError(f"paired bootstrap needs the same examples: {len(a)} vs {len(b)}")
    delta = float(score(b.sum(0, keepdims=True))[0] - score(a.sum(0, keepdims=True))[0])
    counts = resample_counts(len(a), resamples, seed)
    diffs = score(counts @ b) - score(counts @ a)
    lo, hi = np.nanpercentile(diffs, [2.5, 97.5])
    far = np.mean(diffs <= 0) if delta > 0 else np.mean(diffs >= 0)
    p = min(1.0, max(2 * float(far), 1.0 / resamples))
    return Comparison(delta, float(lo), float(hi), p, len(a), f"paired bootstrap({resamples})")


def sign_test(wins: int, losses: int) -> float:
    """Exact two-sided sign test (ties left out): the binomial probability of a split at least this uneven."""
    n = wins + losses
    if n == 0:
        return 1.0
    tail = sum(math.comb(n, i) for i in range(min(wins, losses) + 1)) / 2 ** n
    return min(1.0, 2 * tail)


def win_rate_interval(wins: int, ties: int, losses: int) -> Interval:
    """Win rate with ties counted half, and its 95% Wilson interval (Wilson at every n: gates sit on its bound).

    With ties the per-prompt scores (1, 0.5, 0) vary less than a coin's, so Wilson's interval is taken at the rate
    for the coin-flip sample size of the same precision (n·p(1-p)/variance); without ties that is n itself.
    """
    n = wins + ties + losses
    if n == 0:
        return Interval(float("nan"), 0.0, 1.0, 0, "none")
    scores = np.array([1.0] * wins + [0.5] * ties + [0.0] * losses)
    rate, var = float(scores.mean()), float(scores.var(ddof=0))
    coin = rate * (1 - rate)
    if var == 0 and coin > 0:  # every prompt a tie: no evidence either way beyond the point itself
        return Interval(rate, rate, rate, n, "wilson(ties)", 0.0)
    effective_n = n * coin / var if var > 0 else n
    lo, hi = wilson_at(rate, effective_n)
    return Interval(rate, lo, hi, n, "wilson" if ties == 0 else "wilson(ties)", math.sqrt(var / max(1, n - 1)))


def wilson_at(p: float, n: float, z: float = Z95) -> tuple[float, float]:
    """Wilson's interval at rate p for a (possibly fractional) sample size n."""
    denom = 1 + z * z / n
    centre = (p + z * z / (2 * n)) / denom
    half = z * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n)) / denom
    return (max(0.0, centre - half), min(1.0, centre + half))


def prompts_to_decide(rate: float, n: int, threshold: float = 0.5, per_prompt_var: float | None = None,
                      z: float = Z95) -> int | None:
    """How many prompts in all would put the 95% interval clear of `threshold` if the rate stayed where it is.

    None when the rate sits on the threshold (no sample size decides a tie). The normal approximation:
    n >= (z·sd / |rate - threshold|)^2, with sd from the per-prompt variance (a coin's when not given).
    """
    gap = abs(rate - threshold)
    if gap < 1e-12:
        return None
    var = rate * (1 - rate) if per_prompt_var is None else per_prompt_var
    return max(n, math.ceil((z * math.sqrt(var) / gap) ** 2))


def relative_change(stats_a: np.ndarray, stats_b: np.ndarray, score: ScoreFn, resamples: int = RESAMPLES,
                    seed: int = 0) -> Interval:
    """score(B) / score(A) - 1 on the same examples, with a paired percentile bootstrap interval: how much worse
    (or better) B is in relative terms, e.g. a candidate's perplexity against the current model's."""
    a = np.asarray(stats_a, dtype=np.float64).reshape(len(stats_a), -1)
    b = np.asarray(stats_b, dtype=np.float64).reshape(len(stats_b), -1)
    if len(a) != len(b) or len(a) == 0:
        raise ValueError(f"a relative change needs the same examples: {len(a)} vs {len(b)}")
    value = float(score(b.sum(0, keepdims=True))[0] / score(a.sum(0, keepdims=True))[0] - 1)
    counts = resample_counts(len(a), resamples, seed)
    changes = score(counts @ b) / score(counts @ a) - 1
    lo, hi = np.nanpercentile(changes, [2.5, 97.5])
    return Interval(value, float(lo), float(hi), len(a), f"paired bootstrap({resamples})",
                    float(np.nanstd(changes, ddof=1)))
