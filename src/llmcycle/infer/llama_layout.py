"""What our fast Llama-family forward (`fast_llama.py`) reproduces, and its building blocks.

Which architectures and rope kinds it reproduces exactly (anything else: `unsupported_reason` says why, and the
engine uses the transformers forward), the per-layer weights it prepares once (`Layer`), each layer's sliding
window and the attention band it allows, the within-head permutation that makes rotary one complex multiply, and
the projections that pick the faster matmul kernel by shape.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import torch

from llmcycle.infer import gemm

SUPPORTED = {"llama", "mistral", "qwen2", "phi3"}
POSITION_ONLY_ROPE = {"default", "linear", "llama3", "yarn"}
LENGTH_DEPENDENT_ROPE = {"longrope"}  # one table below the original context, another above it


@dataclass
class Layer:
    norm1: torch.Tensor
    qkv: torch.Tensor
    qkv_bias: torch.Tensor | None
    out: torch.Tensor
    out_bias: torch.Tensor | None
    norm2: torch.Tensor
    gate_up: torch.Tensor
    gate_up_bias: torch.Tensor | None
    down: torch.Tensor
    down_bias: torch.Tensor | None


def unsupported_reason(model: Any) -> str | None:
    config = getattr(model, "config", None)
    if getattr(config, "model_type", None) not in SUPPORTED:
        return f"architecture {getattr(config, 'model_type', None)!r}"
    inner = getattr(model, "model", None)
    if inner is None or not hasattr(inner, "layers") or not hasattr(model, "lm_head"):
        return "unexpected module layout"
    if getattr(config, "hidden_act", "silu") != "silu":
        return f"activation {config.hidden_act}"
    rope_type = getattr(getattr(inner, "rotary_emb", None), "rope_type", None)
    if rope_type not in POSITION_ONLY_ROPE | LENGTH_DEPENDENT_ROPE:
        return f"rope type {rope_type!r}"
    if any(type(m).__name__ != "Linear" or type(m).__module__ != "torch.nn.modules.linear"
           for m in [model.lm_head] + [m for m in inner.layers.modules() if "Linear" in type(m).__name__]):
        return "non-standard linear layers (quantized or adapters)"
    if not copies_fit(model):
        return "not enough free memory for a second copy of the weights"
    return None


def copies_fit(model: Any) -> bool:
    """Our fused, transposed weights are a second copy: on CPU allow it only within half the free memory."""
    if model.device.type != "cpu":
        return True
    return fits_in_memory(sum(p.numel() * p.element_size() for p in model.parameters()))


def fits_in_memory(size: int) -> bool:
    """Whether `size` more bytes fit within half the memory this machine has available."""
    try:
        with open("/proc/meminfo", encoding="ascii") as fh:
            free_kb = next(int(line.split()[1]) for line in fh if line.startswith("MemAvailable:"))
    except (OSError, StopIteration, ValueError):
        return True
    return size <= free_kb * 1024 // 2


def layer_windows(model: Any) -> list[int | None]:
    """Each layer's sliding attention window (None: full attention), as transformers' masks apply it."""
    config = model.config
    shared = getattr(config, "sliding_window", None) if config.model_type in ("mistral", "phi3") else None
    windows = [shared if shared is not None else getattr(layer.self_attn, "sliding_window", None)
               for layer in model.model.layers]
    return [w if w is not None and w < config.max_position_embeddings else None for w in windows]


def band(start: int, new: int, end: int, window: int | None, device: Any) -> torch.Tensor:
    """bool [new, end]: query start+i sees key j when j <= start+i (and j > start+i-window)."""
    query = torch.arange(start, start + new, device=device)[:, None]
    key = torch.arange(end, device=device)[None]
    allowed = key <= query
    return allowed if window is None else allowed & (key > query - window)


def interleave_permutation(head_dim: int, rotary_dim: int) -> torch.Tensor:
    """New order of one head's dims: rotary pairs (i, i + rotary/2) adjacent, then the unrotated dims."""
    half = rotary_dim // 2
    pairs = torch.stack([torch.arange(half), torch.arange(half) + half], dim=1).reshape(-1)
    return torch.cat([pairs, torch.arange(rotary_dim, head_dim)])


def rotate(qk: torch.Tensor, freqs: torch.Tensor) -> torch.Tensor:
    """Rotary embedding on [..., heads, head_dim] (dims permuted as `interleave_permutation` leaves them) as one
    complex multiply by `freqs` [..., 1, head_dim/2]; the arithmetic in float32, the result in qk's dtype."""
    x = qk if qk.dtype == torch.float32 else qk.float()
    pairs = torch.view_as_complex(x.reshape(*x.shape[:-1], x.shape[-1] // 2, 2))
    out = torch.view_as_real(pairs * freqs).reshape(x.shape)
    return out if qk.dtype == torch.float32 else out.to(qk.dtype)


def project(x: torch.Tensor, weight: Any, bias: torch.Tensor | None = None) -> torch.Tensor:
    """x @ weight (+ bias) for a transposed float weight; a quantized Linear module is called instead."""
    if type(weight) is not torch.Tensor:
        return weight(x)
    if (x.shape[0] >= gemm.MIN_ROWS or weight.numel() >= gemm.HEAD_WEIGHT) and gemm.enabled():
        return gemm.linear(x, weight.t(), bias)  # the shape test first: batch-1 decoding pays no more checks
    return x @ weight if bias is None else torch.addmm(bias, x, weight)


def project_add(residual: torch.Tensor, x: torch.Tensor, weight: Any, bias: torch.Tensor | None = None
                 ) -> torch.Tensor:
    """residual + x @ weight (+ bias), the add fused into the matmul where the weight is a float tensor."""
    if type(weight) is not torch.Tensor:
        return residual + weight(x)
    fused = gemm.linear_add(residual, x, weight.t()) if x.shape[0] >= gemm.MIN_ROWS else None
    out = fused if fused is not None else torch.addmm(residual, x, weight)
    return out if bias is None else out + bias
