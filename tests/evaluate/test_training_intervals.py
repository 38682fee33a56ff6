"""Intervals for what training stages record: the val loss over its evaluation batches (the ratio estimator's
linearized standard error with Student's t, textbook survey-sampling formulas), its change before -> after on the
same batches (paired), accuracies and margins."""

from __future__ import annotations

import math

import numpy as np
import pytest

from llmcycle.evaluate.stats import t975
from llmcycle.evaluate.training import loss_change, stage_intervals

BEFORE = [[2100.0, 400.0], [1500.0, 300.0], [2600.0, 500.0], [900.0, 200.0], [1800.0, 350.0]]
AFTER = [[2000.0, 400.0], [1440.0, 300.0], [2480.0, 500.0], [880.0, 200.0], [1720.0, 350.0]]
T4 = 2.7764  # Student's t, 97.5%, 4 degrees of freedom


def ratio_se(rows):
    """Cochran's ratio-estimator standard error: sqrt(Σ(L - R·W)² / (k(k-1))) / mean(W)."""
    x = np.asarray(rows)
    r, k = x[:, 0].sum() / x[:, 1].sum(), len(x)
    return math.sqrt(np.sum((x[:, 0] - r * x[:, 1]) ** 2) / (k * (k - 1))) / x[:, 1].mean()


def test_val_loss_interval_is_the_ratio_estimators_with_students_t():
    loss = 8900 / 1750
    got = stage_intervals({"val_loss": loss, "val_perplexity": math.exp(loss), "val_loss_batches": BEFORE})
    half = T4 * ratio_se(BEFORE)
    assert got["val_loss"].value == pytest.approx(loss) and got["val_loss"].n == 5
    assert got["val_loss"].ci95 == pytest.approx([loss - half, loss + half])
    assert got["val_perplexity"].ci95 == pytest.approx([math.exp(loss - half), math.exp(loss + half)])
    assert t975(4) == T4 and t975(60) == pytest.approx(2.0003, abs=1e-4)  # the expansion beyond the table


def test_loss_change_is_paired_over_the_same_batches():
    change = loss_change({"val_loss_before_batches": BEFORE, "val_loss_batches": AFTER})
    before, after = np.asarray(BEFORE), np.asarray(AFTER)
    rb, ra = 8900 / 1750, 8520 / 1750
    influence = ((after[:, 0] - ra * after[:, 1]) - (before[:, 0] - rb * before[:, 1])) / 350.0
    half = T4 * math.sqrt(np.sum((influence - influence.mean()) ** 2) / 20)
    assert change.value == pytest.approx(ra - rb)
    assert change.ci95 == pytest.approx([ra - rb - half, ra - rb + half])
    assert change.hi < 0  # every batch fell: the paired interval sees it
    unpaired = stage_intervals({"val_loss": ra, "val_loss_before": rb, "val_loss_batches": AFTER,
                                "val_loss_before_batches": BEFORE})
    assert unpaired["val_loss"].lo < unpaired["val_loss_before"].hi  # side by side, the two intervals overlap
    assert loss_change({"val_loss_before_batches": BEFORE, "val_loss_batches": AFTER[:4]}) is None
    assert stage_intervals({"val_loss": 5.0, "val_loss_batches": BEFORE[:1]}) == {}  # one batch: no interval


def test_accuracies_and_margins_get_theirs_from_pair_counts_and_standard_errors():
    got = stage_intervals({"val_pairwise_accuracy": 0.75, "val_pairs": 128, "margin_after": 0.3,
                           "margin_se_after": 0.1, "pairs_after": 16, "pair_accuracy_after": 0.5})
    se = math.sqrt(0.75 * 0.25 / 127)
    assert got["val_pairwise_accuracy"].ci95 == pytest.approx([0.75 - 1.959964 * se, 0.75 + 1.959964 * se])
    assert got["margin_after"].ci95 == pytest.approx([0.3 - 0.1959964, 0.3 + 0.1959964])
    assert got["pair_accuracy_after"].method == "wilson" and got["pair_accuracy_after"].n == 16
