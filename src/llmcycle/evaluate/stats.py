"""How far a reported number can be trusted: standard errors, confidence intervals and A-vs-B tests.

- Rates and accuracies (k of n): the normal (Wald) interval with lm-eval's standard error, or Wilson's score interval
  when the sample is small or the rate sits near 0 or 1 (where Wald's interval collapses or leaves [0, 1]).
- Corpus metrics (chrF, BLEU, ROUGE-L, perplexity): a seeded percentile bootstrap that resamples examples
  (conversations). Each example contributes a row of additive statistics; a resample is a row of multinomial counts,
  so all resamples' summed statistics are one matrix product and 1,000 resamples cost milliseconds.
- A vs B on the same examples: the paired bootstrap (one set of resample counts for both) and the exact sign test;
  for yes/no outcomes (a flagged reply) the exact paired interval on the discordant examples (McNemar's view) with
  Clopper and Pearson's interval for their split.
- Judge win rates with ties (a tie counts half), and how many prompts would decide a gate at the observed rate.
- A ratio of sums over a few clusters (a val loss: summed loss over tokens, per validation batch): the linearized
  cluster standard error with Student's t, alone or as a paired change on the same clusters.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, replace
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


def bounded(interval: Interval, lo: float = -math.inf, hi: float = math.inf) -> Interval:
    """`interval` cut to the range its statistic can take: a normal or jackknife interval of a share near 1 (or of
    a mean of absolute values near 0) can reach past it, which reads as an error and covers nothing more."""
    return replace(interval, lo=max(interval.lo, lo), hi=min(interval.hi, hi))


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


def jackknife(statistic: Callable[[list[int]], float], n: int) -> Interval:
    """A statistic of n examples (called with the indices it keeps) with the leave-one-out jackknife's normal
    interval: for statistics that resampling with replacement biases, e.g. distinct-n, where a drawn-twice reply
    adds n-grams but no new ones. For a mean its standard error is the sample one, s/sqrt(n)."""
    value = float(statistic(list(range(n))))
    if n < 2:
        return Interval(value, float("nan"), float("nan"), n, "jackknife")
    left_out = np.array([statistic([j for j in range(n) if j != i]) for i in range(n)], dtype=np.float64)
    se = float(math.sqrt((n - 1) / n * np.sum((left_out - left_out.mean()) ** 2)))
    return Interval(value, value - Z95 * se, value + Z95 * se, n, "jackknife", se)


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


def per_example(values: Sequence[float]) -> np.ndarray:
    """(value, 1) rows: per-example values as additive statistics whose score is their mean (`mean_score`)."""
    x = np.asarray(values, dtype=np.float64)
    return np.stack([x, np.ones_like(x)], 1)


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


def paired_mean_change(values_a: Sequence[float], values_b: Sequence[float], resamples: int = RESAMPLES,
                       seed: int = 0) -> Comparison:
    """mean(B) - mean(A) of per-example values on the same examples, by the seeded paired bootstrap."""
    return paired_bootstrap(per_example(values_a), per_example(values_b), mean_score, resamples, seed)


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


def binomial_cdf(k: int, n: int, p: float) -> float:
    """P(X <= k) for X ~ Binomial(n, p), summed in log space so large n does not overflow."""
    if k < 0:
        return 0.0
    if k >= n or p <= 0.0:
        return 1.0
    if p >= 1.0:
        return 0.0
    lp, lq = math.log(p), math.log1p(-p)
    log_n = math.lgamma(n + 1)
    return min(1.0, sum(math.exp(log_n - math.lgamma(i + 1) - math.lgamma(n - i + 1) + i * lp + (n - i) * lq)
                        for i in range(k + 1)))


def _root(increasing: Callable[[float], float]) -> float:
    """The p in (0, 1) where an increasing function crosses zero, by bisection (to ~1e-12)."""
    lo, hi = 0.0, 1.0
    for _ in range(42):
        mid = (lo + hi) / 2
        lo, hi = (mid, hi) if increasing(mid) < 0 else (lo, mid)
    return (lo + hi) / 2


def clopper_pearson(k: int, n: int, alpha: float = 0.05) -> tuple[float, float]:
    """Clopper and Pearson's exact interval for k successes in n trials: the rates under which k or more (k or
    fewer) successes have probability alpha/2. Exact, hence never narrower than it should be at small n, where the
    gates decide on it."""
    if n == 0:
        return (0.0, 1.0)
    lo = 0.0 if k == 0 else _root(lambda p: (1 - binomial_cdf(k - 1, n, p)) - alpha / 2)
    hi = 1.0 if k >= n else _root(lambda p: alpha / 2 - binomial_cdf(k, n, p))
    return (lo, hi)


def paired_rate_change(flags_a: Sequence[bool], flags_b: Sequence[bool]) -> Comparison:
    """B's rate minus A's on the same examples (e.g. flagged replies to the same prompts), exactly.

    Only the discordant examples say anything about the difference (McNemar): with `only_b` examples true for B
    alone and `only_a` for A alone, m = only_b + only_a, the difference is (m/n)(2θ - 1) where θ = only_b/m; θ gets
    Clopper-Pearson's interval, conditional on m. p is the exact sign test on the discordant examples, so the
    interval clears 0 exactly when that test is significant.
    """
    if len(flags_a) != len(flags_b) or not flags_a:
        raise ValueError(f"a paired rate change needs the same examples: {len(flags_a)} vs {len(flags_b)}")
    n = len(flags_a)
    only_b = sum(1 for x, y in zip(flags_a, flags_b) if y and not x)
    only_a = sum(1 for x, y in zip(flags_a, flags_b) if x and not y)
    m = only_a + only_b
    lo, hi = clopper_pearson(only_b, m) if m else (0.5, 0.5)
    return Comparison((only_b - only_a) / n, m / n * (2 * lo - 1), m / n * (2 * hi - 1), sign_test(only_b, only_a),
                      n, "exact paired (McNemar, Clopper-Pearson)")


def flags_to_decide(only_a: int, only_b: int, n: int, tolerance: float = 0.0, most: int = 10_000) -> int | None:
    """How many examples in all would put `paired_rate_change`'s interval wholly above `tolerance` if the shares of
    discordant examples held (None when the change is not above it, or `most` would not do)."""
    if n == 0 or (only_b - only_a) / n <= tolerance:
        return None

    def decided(size: int) -> bool:
        b, a = round(only_b * size / n), round(only_a * size / n)
        lo, _ = clopper_pearson(b, a + b) if a + b else (0.5, 0.5)
        return (a + b) / size * (2 * lo - 1) > tolerance

    if decided(n):
        return n
    small, large = n, n
    while not decided(large):
        small, large = large, large * 2
        if large > most:
            return None
    while large - small > 1:
        mid = (small + large) // 2
        small, large = (small, mid) if decided(mid) else (mid, large)
    return large


T975 = (12.7062, 4.3027, 3.1824, 2.7764, 2.5706, 2.4469, 2.3646, 2.3060, 2.2622, 2.2281, 2.2010, 2.1788, 2.1604,
        2.1448, 2.1314, 2.1199, 2.1098, 2.1009, 2.0930, 2.0860, 2.0796, 2.0739, 2.0687, 2.0639, 2.0595, 2.0555,
        2.0518, 2.0484, 2.0452, 2.0423)  # Student's t, 97.5% quantile, 1-30 degrees of freedom


def t975(df: int) -> float:
    """Student's t 97.5% quantile: the table to 30 degrees of freedom, Cornish and Fisher's expansion beyond
    (within 1e-4)."""
    if df <= len(T975):
        return T975[max(1, df) - 1]
    z = Z95
    return z + (z ** 3 + z) / (4 * df) + (5 * z ** 5 + 16 * z ** 3 + 3 * z) / (96 * df ** 2)


def _linearized(rows: Sequence[Sequence[float]]) -> tuple[float, np.ndarray]:
    """(ΣL/ΣW, each cluster's influence on it (L - R·W)/mean(W)) of (L, W) rows."""
    x = np.asarray(rows, dtype=np.float64).reshape(len(rows), 2)
    ratio = float(x[:, 0].sum() / x[:, 1].sum())
    return ratio, (x[:, 0] - ratio * x[:, 1]) / x[:, 1].mean()


def _t_interval(value: float, influence: np.ndarray, method: str) -> Interval:
    k = len(influence)
    if k < 2:
        return Interval(value, float("nan"), float("nan"), k, method)
    se = float(math.sqrt(np.sum((influence - influence.mean()) ** 2) / (k * (k - 1))))
    half = t975(k - 1) * se
    return Interval(value, value - half, value + half, k, method, se)


def ratio_interval(rows: Sequence[Sequence[float]]) -> Interval:
    """A ratio of sums over clusters, e.g. a val loss from its batches' (summed loss, tokens): the linearized
    (delta-method) cluster standard error with Student's t on k-1 degrees of freedom, so a loss measured on four
    batches gets the wide interval four batches deserve (a bootstrap over four would be far too narrow)."""
    ratio, influence = _linearized(rows)
    return _t_interval(ratio, influence, "ratio, t")


def paired_ratio_change(rows_a: Sequence[Sequence[float]], rows_b: Sequence[Sequence[float]]) -> Interval:
    """ratio(B) - ratio(A) measured on the same clusters (a val loss before and after training, on the same
    batches): the per-cluster influences are differenced, so what makes a batch hard for both cancels out."""
    if len(rows_a) != len(rows_b):
        raise ValueError(f"a paired change needs the same clusters: {len(rows_a)} vs {len(rows_b)}")
    (a, inf_a), (b, inf_b) = _linearized(rows_a), _linearized(rows_b)
    return _t_interval(b - a, inf_b - inf_a, "paired ratio, t")
