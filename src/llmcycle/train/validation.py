"""Validation inside the training loop: the unit-weighted mean loss over the val batches (tokens for
cross-entropy, pairs for preference objectives), and each batch's summed loss and units so a stage can record
what an interval around that loss needs (the report resamples the batches)."""

from __future__ import annotations

import itertools
from typing import Any, Optional

import torch

from llmcycle.train.objectives import CrossEntropy

__all__ = ["evaluate", "evaluate_rows"]


def evaluate(model, val_batches, cfg: Any, accelerator, objective: Any = None) -> Optional[float]:
    """Unit-weighted mean val loss over at most `cfg.eval_batches` batches (per process), or None."""
    return evaluate_rows(model, val_batches, cfg, accelerator, objective)[0]


def evaluate_rows(model, val_batches, cfg: Any, accelerator, objective: Any = None
                  ) -> tuple[Optional[float], list[list[float]]]:
    """The mean val loss (or None) and each batch's [summed loss, units] from every process: the batches are the
    units an interval around the val loss resamples (the report's, from the stage's manifest)."""
    source = val_batches() if val_batches is not None else None
    if source is None:
        return None, []
    world, rank, device = accelerator.num_processes, accelerator.process_index, accelerator.device
    totals = torch.zeros(2, device=device)
    rows = []
    objective = objective or CrossEntropy()
    model.eval()
    it = iter(source)
    with torch.no_grad():
        for n in itertools.count():
            group = list(itertools.islice(it, world))
            if len(group) < world or (cfg.eval_batches is not None and n >= cfg.eval_batches):
                break
            batch = {k: (v.to(device) if hasattr(v, "to") else v) for k, v in group[rank].items()}
            before = totals.clone()
            with accelerator.autocast():
                totals[0] += objective.loss(model, batch)
            totals[1] += objective.weight(batch)
            rows.append(totals - before)
    model.train()
    per_batch = torch.stack(rows) if rows else totals.new_zeros((0, 2))
    if world > 1:
        totals, per_batch = accelerator.reduce(totals, "sum"), accelerator.gather(per_batch)
    value = float(totals[0] / totals[1]) if float(totals[1]) > 0 else None
    return value, per_batch.cpu().tolist()
