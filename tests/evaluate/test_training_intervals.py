"""Intervals for what training stages record: the val loss over its evaluation batches (a percentile bootstrap of
the ratio of summed loss to summed units), its change before -> after on the same batches (paired), accuracies
and margins; checked against a loop over the same seeded draws."""

from __future__ import annotations

import numpy as np
import pytest

from llmcycle.evaluate.stats import resample_counts
from llmcycle.evaluate.training import loss_change, stage_intervals

BEFORE = [[2100.0, 400.0], [1500.0, 300.0], [2600.0, 500.0], [900.0, 200.0], [1800.0, 350.0]]
AFTER = [[2000.0, 400.0], [1440.0, 300.0], [2480.0, 500.0], [880.0, 200.0], [1720.0, 350.0]]


def ratio(rows, counts):
    rows = np.asarray(rows)
    return float((counts @ rows[:, 0]) / (counts @ rows[:, 1]))


def test_val_loss_interval_is_the_bootstrap_over_batches_of_the_token_mean():
    got = stage_intervals({"val_loss": 8900 / 1750, "val_perplexity": float(np.exp(8900 / 1750)),
                           "val_loss_batches": BEFORE})
    draws = resample_counts(5, seed=0)
    expected = np.percentile([ratio(BEFORE, c) for c in draws], [2.5, 97.5])
    assert got["val_loss"].value == pytest.approx(8900 / 1750) and got["val_loss"].n == 5
    assert got["val_loss"].ci95 == pytest.approx(list(expected))
    assert got["val_perplexity"].ci95 == pytest.approx(list(np.exp(expected)))


def test_loss_change_is_paired_over_the_same_batches():
    change = loss_change({"val_loss_before_batches": BEFORE, "val_loss_batches": AFTER})
    draws = resample_counts(5, seed=0)
    diffs = [ratio(AFTER, c) - ratio(BEFORE, c) for c in draws]
    assert change.delta == pytest.approx(8520 / 1750 - 8900 / 1750)
    assert [change.lo, change.hi] == pytest.approx(list(np.percentile(diffs, [2.5, 97.5])))
    assert change.hi < 0  # every batch fell
    assert loss_change({"val_loss_before_batches": BEFORE, "val_loss_batches": AFTER[:4]}) is None
    assert stage_intervals({"val_loss": 5.0, "val_loss_batches": BEFORE[:1]}) == {}  # one batch: no interval
