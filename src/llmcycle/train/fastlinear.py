"""Training's float32 products through oneDNN: an autograd Function whose forward is the inference kernel
(`llmcycle.infer.gemm`) and whose backward is two ordinary matrix products, so the maths is `F.linear`'s and only
the summation order (float32 rounding, ~1e-6 relative) differs.

Measured on this project's 2-core AMD EPYC at the default preset's shapes (2048 rows; 256->704, 704->256, 256->256,
256->128, 256->8192), one thread, process CPU time: oneDNN forward + matmul backward ran at 0.93-1.09x of
`F.linear`, all-oneDNN (backward too) at 0.85-0.94x. At SmolLM2-135M's widths (576 hidden, 1,536 MLP) LoRA SFT ran
1.11-1.20x faster end to end with the same loss to 7 digits (2 threads, three interleaved pairs;
docs/benchmarks.md#training-speed). So `auto`, the default, routes a model's training products here only when its
hidden size is at least `MIN_TRAIN_HIDDEN`; `LLMCYCLE_GEMM=onednn` routes them at any width, `blas` never.
"""

from __future__ import annotations

import os
from typing import Any

import torch
import torch.nn.functional as F

from llmcycle.infer.gemm import GEMM_ENV, MIN_ROWS, MIN_WEIGHT, enabled, route_linears


def _onednn(x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor | None) -> torch.Tensor:
    return torch.ops.mkldnn._linear_pointwise(x, weight, bias, "none", [], "")


class OneDNNLinear(torch.autograd.Function):
    """y = x @ W.T + b with oneDNN's forward; gradients as `F.linear`'s (matmuls in PyTorch's BLAS)."""

    @staticmethod
    def forward(ctx: Any, x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor | None) -> torch.Tensor:
        rows = x.reshape(-1, x.shape[-1])
        ctx.save_for_backward(rows, weight)
        ctx.has_bias, ctx.shape = bias is not None, x.shape
        return _onednn(rows, weight, bias).reshape(*x.shape[:-1], weight.shape[0])

    @staticmethod
    def backward(ctx: Any, grad: torch.Tensor):
        rows, weight = ctx.saved_tensors
        grad = grad.reshape(-1, weight.shape[0])
        grad_x = (grad @ weight).reshape(ctx.shape) if ctx.needs_input_grad[0] else None
        grad_w = grad.t() @ rows if ctx.needs_input_grad[1] else None
        grad_b = grad.sum(0) if ctx.has_bias and ctx.needs_input_grad[2] else None
        return grad_x, grad_w, grad_b


MIN_TRAIN_HIDDEN = 512  # `auto`: the narrowest model measured faster through oneDNN in training (SmolLM2's 576)


def requested(model: Any = None) -> bool:
    """Whether `model`'s training products go through oneDNN here: `LLMCYCLE_GEMM=onednn` at any width, `auto` (the
    default) for a model at least `MIN_TRAIN_HIDDEN` wide, `blas` never; and only where the kernel works."""
    choice = os.environ.get(GEMM_ENV, "auto").strip().lower() or "auto"
    if choice == "onednn":
        return enabled()
    hidden = getattr(getattr(model, "config", None), "hidden_size", None) or 0
    return choice == "auto" and hidden >= MIN_TRAIN_HIDDEN and enabled()


def linear(x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor | None = None) -> torch.Tensor:
    """`F.linear`, through `OneDNNLinear` for float32 CPU products of at least MIN_ROWS rows."""
    if x.dtype is torch.float32 and weight.dtype is torch.float32 and x.device.type == "cpu" \
            and x.numel() >= MIN_ROWS * x.shape[-1] and not torch.is_autocast_enabled("cpu"):
        return OneDNNLinear.apply(x, weight, bias)
    return F.linear(x, weight, bias)


def _forward(self: torch.nn.Linear, x: torch.Tensor) -> torch.Tensor:
    return linear(x, self.weight, self.bias)


def use_fast_linears(model: Any, min_weight: int = MIN_WEIGHT) -> int:
    """Route a training model's float32 CPU `nn.Linear` layers (weights of at least `min_weight` elements) through
    `linear`; returns how many. Parameters, tying and saving are untouched; only `forward` changes."""
    return route_linears(model, _forward, min_weight)
