"""Unstructured and N:M pruning masks from weight scores (magnitude or Wanda), applied in place.

Scores are compared within each output row (as Wanda does), so every row of a layer keeps the same number of
weights and the achieved sparsity is exactly round(sparsity * in_features) / in_features per layer.
"""

from __future__ import annotations

from typing import Any

import torch

from llmcycle.errors import ConfigError


def scores(weight: torch.Tensor, norm: torch.Tensor | None) -> torch.Tensor:
    """|W| (magnitude) or |W| * ||X_j|| (Wanda, broadcast over the output rows)."""
    magnitude = weight.detach().abs().float()
    return magnitude if norm is None else magnitude * norm.to(magnitude.device)[None, :]


def row_mask(score: torch.Tensor, sparsity: float) -> torch.Tensor:
    """True where a weight is kept: the lowest round(sparsity * columns) scores of each row are dropped."""
    drop = round(sparsity * score.shape[1])
    keep = torch.ones_like(score, dtype=torch.bool)
    if drop:
        lowest = torch.topk(score, drop, dim=1, largest=False).indices
        keep.scatter_(1, lowest, False)
    return keep


def nm_mask(score: torch.Tensor, n: int, m: int) -> torch.Tensor:
    """True where kept: the N highest scores of every M consecutive inputs in a row."""
    rows, cols = score.shape
    groups = score.reshape(rows, cols // m, m)
    lowest = torch.topk(groups, m - n, dim=2, largest=False).indices
    keep = torch.ones_like(groups, dtype=torch.bool)
    keep.scatter_(2, lowest, False)
    return keep.reshape(rows, cols)


def check_nm_shapes(linears: dict[str, torch.nn.Linear], m: int, where: str) -> None:
    """Refuse before any work when a layer's input width is not a multiple of M."""
    for name, module in linears.items():
        if module.in_features % m:
            raise ConfigError(f"{where}: pattern N:{m} needs input widths divisible by {m}; layer {name} has "
                              f"{module.in_features}")


@torch.no_grad()
def apply_masks(linears: dict[str, torch.nn.Linear], norms: dict[str, torch.Tensor] | None, sparsity: float,
                nm: tuple[int, int] | None) -> dict[str, Any]:
    """Zero the pruned weights in place; returns the achieved sparsity over the pruned layers."""
    zeros = total = 0
    for name, module in linears.items():
        score = scores(module.weight, None if norms is None else norms[name])
        keep = nm_mask(score, *nm) if nm else row_mask(score, sparsity)
        module.weight.mul_(keep.to(module.weight.dtype))
        zeros += int((module.weight == 0).sum())
        total += module.weight.numel()
    return {"pruned_layers": len(linears), "pruned_layer_weights": total, "zero_weights": zeros,
            "achieved_sparsity": round(zeros / max(1, total), 6)}
