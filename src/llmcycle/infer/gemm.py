"""fp32 matrix products on CPU through oneDNN instead of the default BLAS.

PyTorch sends `F.linear`/`mm` on float32 CPU tensors to MKL. On AMD CPUs MKL's sgemm runs at about half of what the
cores can do: on our 2-core EPYC (AVX-512), one thread, SmolLM2's [64 rows, 576] x [576, 1536] product runs at 98
GFLOP/s in MKL and 209 in oneDNN (`torch.ops.mkldnn._linear_pointwise`, the kernel PyTorch's own compiler uses for
CPU linears). From 8 rows up oneDNN is 1.3-2.5x faster; at 1-4 rows (batch-1 decoding) it is not, except for a
weight as big as an output head (49152 x 576: 1.7x at one row), so small products keep BLAS. The numbers are in
bench/results/gemm_bench.json (`bench/gemm_bench.py`). The results are the same product summed in another order:
differences are float32 rounding (~1e-6 relative).

Only inference uses it: a product whose output needs gradients always goes through `F.linear`.
`LLMCYCLE_GEMM=blas` turns it off; `auto` (the default) and `onednn` use it wherever PyTorch has the kernel.
"""

from __future__ import annotations

import os
import types
from functools import lru_cache
from typing import Any, Callable

import torch
import torch.nn.functional as F

GEMM_ENV = "LLMCYCLE_GEMM"
MIN_ROWS = 8  # below this oneDNN's setup costs more than it saves (batch-1 and small-batch decoding)
MIN_WEIGHT = 65_536  # weights smaller than 256 x 256 gain nothing measurable
HEAD_WEIGHT = 4_000_000  # a weight this big is memory-bound even at one row, where oneDNN streams it faster


@lru_cache(maxsize=1)
def enabled() -> bool:
    """Whether float32 CPU products go through oneDNN in this process."""
    choice = os.environ.get(GEMM_ENV, "auto").strip().lower() or "auto"
    if choice == "blas":
        return False
    try:  # the kernel must exist for this CPU and agree with the BLAS result
        op = torch.ops.mkldnn._linear_pointwise
        if not torch.backends.mkldnn.is_available():
            return False
        rng = torch.Generator().manual_seed(0)  # not the global generator: seeded sampling stays as it was
        x, w = torch.randn(MIN_ROWS, 64, generator=rng), torch.randn(32, 64, generator=rng)
        return bool(torch.allclose(op(x, w, None, "none", [], ""), F.linear(x, w), atol=1e-4, rtol=1e-4))
    except (AttributeError, RuntimeError):
        return False


def _worth_it(x: torch.Tensor, weight: torch.Tensor) -> bool:
    return (x.dtype is torch.float32 and weight.dtype is torch.float32 and x.device.type == "cpu"
            and weight.numel() >= MIN_WEIGHT
            and (x.numel() >= MIN_ROWS * x.shape[-1] or weight.numel() >= HEAD_WEIGHT)
            and not (torch.is_grad_enabled() and (x.requires_grad or weight.requires_grad)) and enabled())


def linear(x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor | None = None) -> torch.Tensor:
    """`F.linear(x, weight, bias)` (weight [out, in], or the transposed view of an [in, out] tensor)."""
    if _worth_it(x, weight):
        return torch.ops.mkldnn._linear_pointwise(x, weight, bias, "none", [], "")
    return F.linear(x, weight, bias)


def linear_add(residual: torch.Tensor, x: torch.Tensor, weight: torch.Tensor) -> torch.Tensor | None:
    """residual + x @ weight.T with the add fused into the product, or None where oneDNN is not used."""
    if _worth_it(x, weight) and residual.shape[:-1] == x.shape[:-1]:
        return torch.ops.mkldnn._linear_pointwise.binary(x, residual, weight, None, "add")
    return None


def _forward(self: torch.nn.Linear, x: torch.Tensor) -> torch.Tensor:
    return linear(x, self.weight, self.bias)


def use_onednn(model: Any) -> int:
    """Route the float32 `nn.Linear` layers of an inference model through `linear`; returns how many.

    The layers keep their parameters (tied weights, `state_dict` and saving are untouched); only their `forward`
    changes, and it falls back to `F.linear` whenever autograd needs the result."""
    return route_linears(model, _forward) if enabled() else 0


def route_linears(model: Any, forward: Callable[[torch.nn.Linear, torch.Tensor], torch.Tensor],
                  min_weight: int = MIN_WEIGHT) -> int:
    """Give every float32 CPU `nn.Linear` of `model` with at least `min_weight` weights `forward`; how many."""
    count = 0
    for module in model.modules():
        if type(module) is torch.nn.Linear and module.weight.dtype is torch.float32 \
                and module.weight.device.type == "cpu" and module.weight.numel() >= min_weight:
            module.forward = types.MethodType(forward, module)
            count += 1
    return count
