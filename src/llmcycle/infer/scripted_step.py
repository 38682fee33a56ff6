"""A small model's decode step (`FastLlama.step_rows` at a few rows) as one TorchScript graph.

Why: a decode step of the `default` preset is about 150 ATen calls on tensors of a few hundred numbers, and from
Python each call costs argument parsing, a dispatch and a release and re-take of Python's lock, more than its
arithmetic. The same calls in TorchScript's interpreter skip the parsing, and the lock is released once for the
whole step, so a server's event loop runs Python meanwhile instead of taking turns with every call. On a 2-core
AVX2 machine one row's step took about half the CPU time (docs/serving.md, "Speed on CPU"); scripting takes well
under a second, once per process.

The graph makes the same calls, in the same order and on the same kernels, as `FastLlama._forward`, so the logits
are the same numbers (tested with `torch.equal`), with one change of spelling: each residual add is an in-place
`addmm_`, because TorchScript's optimizer splits an out-of-place `addmm` into `mm` and `add`, which rounds
differently. It is used only where the Python forward would pick the same kernels: float32 weights held as plain
tensors without biases (not quantized), no sliding windows, and rows below `gemm.MIN_ROWS` with no weight as big as
`gemm.HEAD_WEIGHT` (or oneDNN off), where every product is the default BLAS `mm`.
"""

from __future__ import annotations

from functools import lru_cache
from typing import Any, Callable, List, Optional

import torch
import torch.nn.functional as F

from llmcycle.infer import gemm


def _norm(x: torch.Tensor, weight: torch.Tensor, width: torch.Tensor, eps: torch.Tensor) -> torch.Tensor:
    return weight * (x * (x * x).sum(-1, keepdim=True).div_(width).add_(eps).rsqrt_())


def _step(tokens: torch.Tensor, positions: torch.Tensor, embed: torch.Tensor, table: torch.Tensor,
          weights: List[List[torch.Tensor]], keys: List[torch.Tensor], values: List[torch.Tensor], column: int,
          mask: Optional[torch.Tensor], shape: List[int], width: torch.Tensor, eps: torch.Tensor, scaling: float,
          final_norm: torch.Tensor, head: torch.Tensor) -> torch.Tensor:
    """Logits [rows, vocab] for one token per row written at `column`; weights per layer: norm1, qkv, out, norm2,
    gate_up, down (transposed, as FastLlama keeps them); shape: heads, kv heads, head dim."""
    n_heads, n_kv, head_dim = shape[0], shape[1], shape[2]
    rows = tokens.shape[0]
    qk_cols = (n_heads + n_kv) * head_dim
    freqs = table[positions][:, None][:, :, None]
    x = F.embedding(tokens, embed)
    for i in range(len(weights)):
        norm1, qkv_weight, out, norm2, gate_up, down = weights[i]
        qkv = torch.mm(_norm(x, norm1, width, eps), qkv_weight)
        pairs = torch.view_as_complex(qkv[:, :qk_cols].reshape(rows, 1, -1, head_dim // 2, 2))
        qk = torch.view_as_real(pairs * freqs).reshape(rows, 1, -1, head_dim)
        keys[i][:, :, column:column + 1] = qk[:, :, n_heads:].transpose(1, 2)
        values[i][:, :, column:column + 1] = qkv[:, qk_cols:].reshape(rows, 1, n_kv, head_dim).transpose(1, 2)
        att = F.scaled_dot_product_attention(qk[:, :, :n_heads].transpose(1, 2), keys[i][:, :, :column + 1],
                                             values[i][:, :, :column + 1], attn_mask=mask, is_causal=False,
                                             scale=scaling, enable_gqa=n_kv != n_heads)
        x = x.addmm_(att.transpose(1, 2).reshape(rows, -1), out)
        gate, up = torch.mm(_norm(x, norm2, width, eps), gate_up).chunk(2, dim=-1)
        x = x.addmm_(F.silu(gate) * up, down)
    return torch.mm(_norm(x, final_norm, width, eps), head)


@lru_cache(maxsize=1)
def compiled() -> Callable[..., torch.Tensor] | None:
    """The scripted step, or None where TorchScript cannot build it (the Python forward is used then)."""
    try:
        return torch.jit.script(_step)
    except Exception:  # noqa: BLE001 - any failure to script means: use the Python forward
        return None


class ScriptedStep:
    """FastLlama's weights in the scripted step's layout; `__call__` is `step_rows` for up to MAX_ROWS rows."""

    MAX_ROWS = gemm.MIN_ROWS - 1

    def __init__(self, fast: Any, step: Callable[..., torch.Tensor]):
        self.fast, self.step = fast, step
        self.weights = [[layer.norm1, layer.qkv, layer.out, layer.norm2, layer.gate_up, layer.down]
                        for layer in fast.layers]
        self.shape = [fast.n_heads, fast.n_kv, fast.head_dim]

    @classmethod
    def build(cls, fast: Any) -> "ScriptedStep | None":
        """The scripted step for `fast`, or None where it would not make the Python forward's exact calls."""
        layers = fast.layers
        tensors = [w for layer in layers for w in (layer.qkv, layer.out, layer.gate_up, layer.down)] + [fast.lm_head]
        biases = [b for layer in layers for b in (layer.qkv_bias, layer.out_bias, layer.gate_up_bias,
                                                  layer.down_bias)] + [fast.lm_head_bias]
        if fast.dtype is not torch.float32 or any(type(w) is not torch.Tensor for w in tensors) \
                or any(b is not None for b in biases) or any(w is not None for w in fast.windows) \
                or fast.short_freqs is not None \
                or (gemm.enabled() and any(w.numel() >= gemm.HEAD_WEIGHT for w in tensors)):
            return None
        step = compiled()
        return None if step is None else cls(fast, step)

    def __call__(self, keys: list[torch.Tensor], values: list[torch.Tensor], tokens: torch.Tensor,
                 positions: torch.Tensor, column: int, mask: torch.Tensor | None) -> torch.Tensor:
        fast = self.fast
        return self.step(tokens, positions, fast.embed, fast.freqs, self.weights, keys, values, column, mask,
                         self.shape, fast._width, fast._eps, fast.scaling, fast.final_norm, fast.lm_head)
