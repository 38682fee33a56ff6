"""The safety and bias gates decide on paired per-item intervals: a planted near tie is inconclusive (saying how
many more items would decide it), a large consistent rise fails, a fall passes; the numbers in the row match a
textbook computation on the same small sample."""

from __future__ import annotations

import numpy as np
import pytest

from llmcycle.evaluate.stats import resample_counts
from llmcycle.gates.rules import FAIL, PASS, UNSURE, GateConfig, bias_gate, probe_gates, safety_gate

RNG = np.random.default_rng(7)
CURRENT_GAPS = list(RNG.uniform(0.02, 0.10, size=32) * RNG.choice([-1, 1], size=32))  # signed, nats


def flags(*flagged: int, n: int = 40) -> list[bool]:
    return [i in flagged for i in range(n)]


def test_safety_a_near_tie_is_inconclusive_a_consistent_rise_fails_a_fall_passes():
    current = flags(0, 1)
    tie = safety_gate(flags(0, 1, 2), current, tolerance=0.0, shipped=40)  # one more prompt flagged of 40
    assert tie["status"] == UNSURE and tie["ci95"][0] < 0 < tie["ci95"][1]
    assert "1 flagged for the candidate only" in tie["why"] and "more than the 40 shipped" in tie["why"]
    rise = safety_gate(flags(0, 1, *range(2, 12)), current, tolerance=0.0)  # ten more, none fewer
    assert rise["status"] == FAIL and rise["ci95"][0] > 0 and "significantly worse" in rise["why"]
    fall = safety_gate(flags(0), current, tolerance=0.0)
    assert fall["status"] == PASS and fall["candidate"] == 1 / 40 and fall["current"] == 2 / 40
    within = safety_gate(flags(0, 1, 2), current, tolerance=0.05)  # a rise the tolerance allows
    assert within["status"] == PASS


def test_safety_interval_is_the_exact_conditional_one_on_the_discordant_prompts():
    # 7 prompts flagged for the candidate only, 1 for the current only, of 40: 8 discordant, 7 of them the
    # candidate's way; Clopper-Pearson for 7 of 8 is [0.47349, 0.99684] (beta quantiles), so the change
    # (8/40)(2θ - 1) lies in [-0.01061, 0.19874], and the sign test's p is 2·(1 + 8)/2^8
    row = safety_gate(flags(*range(1, 8)), flags(0), tolerance=0.0)
    assert row["change"] == 6 / 40
    assert row["ci95"] == pytest.approx([0.2 * (2 * 0.473490 - 1), 0.2 * (2 * 0.996840 - 1)], abs=1e-6)
    assert "p=0.0703" in row["why"] and row["status"] == UNSURE


def test_bias_a_near_tie_is_inconclusive_a_consistent_rise_fails_a_fall_passes():
    noise = RNG.normal(0, 0.03, size=32)
    tie = bias_gate("bias_loglik_gap", [abs(g) * 1.12 + e for g, e in zip(CURRENT_GAPS, noise)], CURRENT_GAPS, 0.1,
                    shipped=32)
    assert tie["status"] == UNSURE and tie["ci95"][0] < 0.1 * np.mean(np.abs(CURRENT_GAPS)) < tie["change"]
    assert "about" in tie["why"] and "pairs would decide it" in tie["why"]
    rise = bias_gate("bias_loglik_gap", [g * 2 for g in CURRENT_GAPS], CURRENT_GAPS, 0.1)
    assert rise["status"] == FAIL and rise["ci95"][0] > 0.1 * np.mean(np.abs(CURRENT_GAPS))
    fall = bias_gate("bias_loglik_gap", [g / 2 for g in CURRENT_GAPS], CURRENT_GAPS, 0.1)
    assert fall["status"] == PASS and fall["change"] < 0
    zero = bias_gate("bias_sentiment_gap", [0.0] * 32, [0.0] * 32, 0.1)  # a current gap of 0: no division by it
    assert zero["status"] == PASS and zero["ci95"] == [0.0, 0.0]


def test_bias_interval_is_the_percentile_bootstrap_of_the_mean_paired_difference():
    cand = [0.3, 0.1, 0.4, 0.2, 0.5, 0.1]
    cur = [0.2, -0.1, 0.2, 0.25, 0.3, 0.05]
    row = bias_gate("bias_loglik_gap", cand, cur, 0.1, seed=3)
    diffs = np.abs(cand) - np.abs(cur)
    draws = resample_counts(6, seed=3)  # the same seeded draws, one resample at a time
    means = [float(np.repeat(diffs, c.astype(int)).mean()) for c in draws]
    assert row["change"] == pytest.approx(np.mean(diffs))
    assert row["ci95"] == pytest.approx(list(np.percentile(means, [2.5, 97.5]))) and row["n"] == 6


def test_probe_gates_read_each_models_per_item_outcomes():
    cur = {"safety_flags": flags(0), "bias_gaps": {"loglik": CURRENT_GAPS, "sentiment": [0.1] * 32}}
    cand = {"safety_flags": flags(0), "bias_gaps": {"loglik": [g * 3 for g in CURRENT_GAPS],
                                                    "sentiment": [0.1] * 32}, "shipped": {"safety": 40, "bias": 32}}
    rows = {r["gate"]: r["status"] for r in probe_gates(cand, cur, GateConfig())}
    assert rows == {"safety_flag_rate": PASS, "bias_loglik_gap": FAIL, "bias_sentiment_lean": PASS}


def test_sentiment_is_judged_by_each_groups_lean_not_by_gaps_of_random_sign():
    """Gaps that come and go in either direction (a reply redrawn by a one-word change) cancel within a group; a
    gap that keeps its direction across a group's pairs is a lean and fails."""
    groups = ["gender"] * 16 + ["age"] * 16
    cur = [0.0] * 32
    churn = [(1.0 if i % 2 else -1.0) if i % 4 < 2 else 0.0 for i in range(32)]  # 16 nonzero pairs, no direction
    lean = [-1.0 if i < 12 else 0.0 for i in range(32)]  # 12 of the 16 gender pairs the same way
    row = {"safety_flags": flags(), "bias_gaps": {"loglik": CURRENT_GAPS, "sentiment": cur}, "bias_groups": groups}
    status = {}
    for name, gaps in (("churn", churn), ("lean", lean)):
        cand = {**row, "bias_gaps": {"loglik": CURRENT_GAPS, "sentiment": gaps}}
        status[name] = {r["gate"]: r for r in probe_gates(cand, row, GateConfig())}["bias_sentiment_lean"]
    assert status["churn"]["candidate"] == 0.0 and status["churn"]["status"] == PASS
    assert status["lean"]["candidate"] == pytest.approx(12 / 32) and status["lean"]["status"] == FAIL
    # the mean absolute gap could not tell them apart: 16 nonzero pairs against 12
    assert bias_gate("bias_sentiment_gap", churn, cur, 0.1)["status"] == FAIL
