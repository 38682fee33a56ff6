"""95% intervals for what the training stages record in their manifests, so the run report can put one beside
every number it quotes from them.

- a validation loss from its evaluation batches' [summed loss, units] (`val_loss_batches`): the ratio of sums (the
  loss the stage reports) with the batches' linearized standard error and Student's t, since a stage validates on
  as few as two to four batches; perplexity is its exponential;
- a loss before -> after training on the same batches (`val_loss_before_batches`): the same on the per-batch
  differences, which cancel what makes a batch hard for both;
- held-out accuracies (k of n pairs): `rate_interval`;
- a preference margin with its standard error over n pairs: the normal interval.
"""

from __future__ import annotations

import math
from typing import Any

from llmcycle.evaluate.stats import Z95, Interval, paired_ratio_change, rate_interval, ratio_interval

ACCURACIES = {"val_pairwise_accuracy": "val_pairs", "val_pairwise_accuracy_before": "val_pairs",
              "pair_accuracy_after": "pairs_after"}  # accuracy -> the manifest key of its number of pairs


def batch_rows(metrics: dict[str, Any], key: str) -> list[list[float]] | None:
    """The [summed loss, units] rows recorded for `key` (None unless there are two or more, all with units)."""
    rows = metrics.get(f"{key}_batches")
    if not isinstance(rows, list) or len(rows) < 2 or any(len(r) != 2 or r[1] <= 0 for r in rows):
        return None
    return rows


def loss_change(metrics: dict[str, Any]) -> Interval | None:
    """val_loss - val_loss_before on the same validation batches (None when they were not recorded alike)."""
    before, after = batch_rows(metrics, "val_loss_before"), batch_rows(metrics, "val_loss")
    if before is None or after is None or len(before) != len(after):
        return None
    return paired_ratio_change(before, after)


def stage_intervals(metrics: dict[str, Any]) -> dict[str, Interval]:
    """{metric: its 95% interval} for the manifest metrics whose interval the stage recorded what it takes."""
    out: dict[str, Interval] = {}
    for key in ("val_loss", "val_loss_before"):
        rows = batch_rows(metrics, key)
        if rows is not None:
            out[key] = ratio_interval(rows)
    if "val_loss" in out and isinstance(metrics.get("val_perplexity"), (int, float)):
        loss = out["val_loss"]
        out["val_perplexity"] = Interval(math.exp(min(loss.value, 50)), math.exp(min(loss.lo, 50)),
                                         math.exp(min(loss.hi, 50)), loss.n, loss.method)
    for key, pairs in ACCURACIES.items():
        n = metrics.get(pairs)
        if isinstance(metrics.get(key), (int, float)) and isinstance(n, (int, float)) and n >= 1:
            out[key] = rate_interval(round(metrics[key] * n), int(n))
    margin, se, n = metrics.get("margin_after"), metrics.get("margin_se_after"), metrics.get("pairs_after")
    if all(isinstance(x, (int, float)) for x in (margin, se, n)) and n >= 2:
        out["margin_after"] = Interval(margin, margin - Z95 * se, margin + Z95 * se, int(n), "normal", se)
    return out
