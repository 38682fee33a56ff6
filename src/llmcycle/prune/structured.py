"""Structured pruning that really shrinks the model: the lowest-scored MLP channels and query heads are cut out of
the Linear weights, whole layers that change their input least are dropped, and the config says so, so the result
loads with AutoModelForCausalLM and exports to GGUF.

transformers' Llama-family models need the same head count in every layer, so every layer loses the same number
of MLP channels and the same number of query heads from each KV group (grouped-query attention stays grouped; the
key/value projections are untouched). The head width is written into the config (`head_dim`), because it no longer
equals hidden_size / num_attention_heads.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import torch

from llmcycle.errors import ConfigError

SUPPORTED = ("llama", "mistral", "qwen2")


@dataclass(frozen=True)
class Plan:
    """How many channels and heads every layer keeps (decided from the config alone, before any weights load)."""

    channels: int
    keep_channels: int
    heads: int
    kv_heads: int
    head_dim: int
    drop_per_group: int
    layers: int = 0
    drop_layers: int = 0

    @property
    def keep_heads(self) -> int:
        return self.heads - self.kv_heads * self.drop_per_group


def plan(config: Any, sparsity: float, heads: float, multiple: int, where: str, layers: float = 0.0) -> Plan:
    """The uniform per-layer plan, or one line saying why this model's shapes cannot take it."""
    if config.model_type not in SUPPORTED:
        raise ConfigError(f"{where}: structured pruning supports {', '.join(SUPPORTED)} models (separate q/k/v and "
                          f"gate/up projections), not {config.model_type!r}")
    channels = int(config.intermediate_size)
    keep = int(round((1 - sparsity) * channels / multiple)) * multiple
    if not 0 < keep < channels:
        raise ConfigError(f"{where}: sparsity {sparsity} of {channels} MLP channels (kept in multiples of "
                          f"{multiple}) leaves {keep}: choose a sparsity that removes some but not all")
    n_heads = int(config.num_attention_heads)
    kv = int(getattr(config, "num_key_value_heads", None) or n_heads)
    group = n_heads // kv
    drop = int(round(heads * group))
    if heads > 0 and drop == 0:
        raise ConfigError(f"{where}: heads {heads} of groups of {group} query heads per KV head removes none "
                          f"(the smallest step is {1 / group:.3f})")
    if drop >= group:
        raise ConfigError(f"{where}: heads {heads} would remove all {group} query heads of each KV group "
                          f"({n_heads} heads, {kv} KV heads)")
    head_dim = int(getattr(config, "head_dim", None) or config.hidden_size // n_heads)
    depth = int(config.num_hidden_layers)
    drop_layers = int(round(layers * depth))
    if layers > 0 and not 0 < drop_layers < depth:
        raise ConfigError(f"{where}: layers {layers} of {depth} decoder layers removes {drop_layers}: choose a share "
                          f"that removes at least one (the smallest step is {1 / depth:.3f}) and keeps one")
    return Plan(channels, keep, n_heads, kv, head_dim, drop, depth, drop_layers)


def _sliced(linear: torch.nn.Linear, rows: torch.Tensor | None = None, cols: torch.Tensor | None = None):
    """A new, smaller Linear holding the kept rows (outputs) and/or columns (inputs) of `linear`."""
    weight = linear.weight.detach()
    weight = weight[rows] if rows is not None else weight
    weight = weight[:, cols] if cols is not None else weight
    bias = linear.bias
    out = torch.nn.Linear(weight.shape[1], weight.shape[0], bias=bias is not None, dtype=weight.dtype,
                          device=weight.device)
    out.weight.data.copy_(weight)
    if bias is not None:
        out.bias.data.copy_(bias.detach()[rows] if rows is not None else bias.detach())
    return out


def channel_scores(mlp: Any, norm: torch.Tensor | None) -> torch.Tensor:
    """Per channel: its down-projection column's norm times its input activation norm (Wanda) or times the norms
    of its gate and up rows (magnitude)."""
    down = mlp.down_proj.weight.detach().float().norm(dim=0)
    if norm is not None:
        return down * norm.to(down.device)
    return down * mlp.gate_proj.weight.detach().float().norm(dim=1) * mlp.up_proj.weight.detach().float().norm(dim=1)


def head_scores(attn: Any, norm: torch.Tensor | None, p: Plan) -> torch.Tensor:
    """Per query head: sum over its o_proj input columns of column norm x activation norm (Wanda), or the product
    of its q rows' and o columns' norms (magnitude)."""
    out_cols = attn.o_proj.weight.detach().float().norm(dim=0)
    if norm is not None:
        return (out_cols * norm.to(out_cols.device)).reshape(p.heads, p.head_dim).sum(dim=1)
    q_rows = attn.q_proj.weight.detach().float().norm(dim=1).reshape(p.heads, p.head_dim)
    return q_rows.norm(dim=1) * out_cols.reshape(p.heads, p.head_dim).norm(dim=1)


def kept_heads(score: torch.Tensor, p: Plan) -> torch.Tensor:
    """Indices of the kept query heads: the best (group - drop) of every KV group, in their original order."""
    group = p.heads // p.kv_heads
    best = torch.topk(score.reshape(p.kv_heads, group), group - p.drop_per_group, dim=1).indices.sort(dim=1).values
    return (best + torch.arange(p.kv_heads, device=best.device)[:, None] * group).reshape(-1)


def prune_layer(layer: Any, name: str, p: Plan, norms: dict[str, torch.Tensor] | None) -> None:
    mlp, attn = layer.mlp, layer.self_attn
    channels = torch.topk(channel_scores(mlp, norms and norms[f"{name}.mlp.down_proj"]), p.keep_channels).indices
    channels = channels.sort().values
    mlp.gate_proj = _sliced(mlp.gate_proj, rows=channels)
    mlp.up_proj = _sliced(mlp.up_proj, rows=channels)
    mlp.down_proj = _sliced(mlp.down_proj, cols=channels)
    if p.drop_per_group:
        heads = kept_heads(head_scores(attn, norms and norms[f"{name}.self_attn.o_proj"], p), p)
        dims = (heads[:, None] * p.head_dim + torch.arange(p.head_dim)[None]).reshape(-1)
        attn.q_proj = _sliced(attn.q_proj, rows=dims)
        attn.o_proj = _sliced(attn.o_proj, cols=dims)
        attn.num_key_value_groups = p.keep_heads // p.kv_heads


def remove_layers(model: Any, drop: list[int]) -> None:
    """Remove the decoder layers at DROP and renumber the rest (each attention's `layer_idx` addresses the KV
    cache); per-layer config lists (`layer_types`) lose the same entries."""
    gone = set(drop)
    kept = [layer for i, layer in enumerate(model.model.layers) if i not in gone]
    for index, layer in enumerate(kept):
        layer.self_attn.layer_idx = index
        if hasattr(layer, "layer_idx"):
            layer.layer_idx = index
    model.model.layers = torch.nn.ModuleList(kept)
    types = getattr(model.config, "layer_types", None)
    if isinstance(types, list) and len(types) == len(kept) + len(drop):
        model.config.layer_types = [t for i, t in enumerate(types) if i not in gone]
    model.config.num_hidden_layers = len(kept)


@torch.no_grad()
def prune_structured(model: Any, p: Plan, norms: dict[str, torch.Tensor] | None,
                     influence: list[float] | None = None) -> dict[str, Any]:
    """Cut every layer to the plan, drop the `p.drop_layers` layers of least influence, rewrite the config;
    returns what changed."""
    for index, layer in enumerate(model.model.layers):
        prune_layer(layer, str(index), p, norms)
    model.config.intermediate_size = p.keep_channels
    model.config.num_attention_heads = p.keep_heads
    model.config.head_dim = p.head_dim
    changes: dict[str, Any] = {"intermediate_size": [p.channels, p.keep_channels],
                               "num_attention_heads": [p.heads, p.keep_heads], "num_key_value_heads": p.kv_heads,
                               "head_dim": p.head_dim}
    if p.drop_layers:
        if influence is None or len(influence) != p.layers:
            raise ValueError("dropping layers needs each layer's influence on the calibration text")
        drop = sorted(sorted(range(p.layers), key=lambda i: influence[i])[:p.drop_layers])
        remove_layers(model, drop)
        changes.update(num_hidden_layers=[p.layers, p.layers - p.drop_layers], removed_layers=drop,
                       layer_influence=[round(x, 5) for x in influence])
    return changes
