"""Model FLOPs utilisation: achieved model FLOP/s over a matmul peak measured on this machine, once per process.

Measuring the peak (instead of a datasheet number) makes MFU meaningful on a shared 2-core CPU as well as on a GPU.
"""

from __future__ import annotations

import time
from typing import Any

import torch

_PEAKS: dict[tuple[str, str], float] = {}


def measured_peak_flops(device: Any = "cpu", dtype: Any = None, size: int | None = None, repeats: int = 6) -> float:
    """Best FLOP/s of a square matmul (fp32 unless `dtype`), cached per (device, dtype) for the process."""
    size = size or (4096 if str(device).startswith("cuda") else 1024)
    dtype = dtype or torch.float32
    key = (str(device), str(dtype))
    if key in _PEAKS:
        return _PEAKS[key]
    gen = torch.Generator().manual_seed(0)  # leaves the global RNG (and so training) untouched
    a = torch.randn(size, size, generator=gen).to(device=device, dtype=dtype)
    b = torch.randn(size, size, generator=gen).to(device=device, dtype=dtype)
    sync = torch.cuda.synchronize if str(device).startswith("cuda") else (lambda: None)
    torch.mm(a, b)
    sync()
    best = float("inf")
    for _ in range(repeats):
        start = time.perf_counter()
        torch.mm(a, b)
        sync()
        best = min(best, time.perf_counter() - start)
    _PEAKS[key] = 2.0 * size**3 / best
    return _PEAKS[key]


def count_params(model) -> tuple[int, int, int]:
    """(all parameters, parameters that take part in matmuls (not the input embedding), trainable parameters)."""
    total = sum(p.numel() for p in model.parameters())
    trainable = sum(p.numel() for p in model.parameters() if p.requires_grad)
    embed = 0
    get_emb = getattr(model, "get_input_embeddings", None)
    emb = get_emb() if callable(get_emb) else None
    out = getattr(model, "get_output_embeddings", lambda: None)()
    if emb is not None and (out is None or out.weight is not emb.weight):  # a tied embedding still is the lm_head
        embed = emb.weight.numel()
    return total, total - embed, trainable


def flops_per_token(model, seq_len: int) -> float:
    """Training FLOPs per token: 2N forward, 2N backward through activations, 2 per trainable weight for its
    gradient (so a LoRA run is not credited with weight gradients it never computes), plus attention scores."""
    total, matmul, trainable = count_params(model)
    trainable_share = min(1.0, trainable / max(1, total))
    cfg = getattr(model, "config", None)
    layers = getattr(cfg, "num_hidden_layers", 0) or 0
    hidden = getattr(cfg, "hidden_size", 0) or 0
    attention = 12.0 * layers * hidden * seq_len
    return 4.0 * matmul + 2.0 * matmul * trainable_share + attention
