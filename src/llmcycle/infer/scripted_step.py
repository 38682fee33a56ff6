"""A small model's decode step (`FastLlama.step_rows` at a few rows) as one TorchScript graph.

Why: a decode step of the `default` preset is about 150 ATen calls on tensors of a few hundred numbers, and from
Python each call costs argument parsing, a dispatch and a release and re-take of Python's lock, more than its
arithmetic. The same calls in TorchScript's interpreter skip the parsing, and the lock is released once for the
whole step, so a server's event loop runs Python meanwhile instead of taking turns with every call. On a 2-core
AVX2 machine one row's step took about half the CPU time (docs/serving.md, "Speed on CPU"); scripting takes well
under a second, once per process.

The graph makes the same calls, in the same order and on the same kernels, as `FastLlama._forward`, so the logits
are the same numbers (tested with `torch.equal`), with two changes of spelling: each residual add is an in-place
`addmm_`, because TorchScript's optimizer splits an out-of-place `addmm` into `mm` and `add`, which rounds
differently; and the cache's and the projections' views are taken with one `narrow` each instead of a slice per
dimension (the same views, about 45 calls fewer a step of the default preset). It is used only where the Python
forward would pick the same kernels: a float32 model without biases or sliding windows whose weights are either
plain tensors, at rows below `gemm.MIN_ROWS` with no weight as big as `gemm.HEAD_WEIGHT` (or oneDNN off), where every
product is the default BLAS `mm`; or all quantized alike (quantize.py: bf16, int8 or int4, head included), at any
number of rows, since a quantized product has one kernel. Quantized, the Python calls are a larger share of a step:
SmolLM2-135M int4 on 2 cores, one row, 6.0 -> 4.4-4.6 ms.
"""

from __future__ import annotations

import weakref
from functools import lru_cache
from typing import Any, Callable, List, Optional

import torch
import torch.nn.functional as F

from llmcycle.infer import gemm
from llmcycle.infer.quantize import BF16Weight, Int4Weight, Int8Weight


def _norm(x: torch.Tensor, weight: torch.Tensor, width: torch.Tensor, eps: torch.Tensor) -> torch.Tensor:
    return weight * (x * (x * x).sum(-1, keepdim=True).div_(width).add_(eps).rsqrt_())


def _product(x: torch.Tensor, a: torch.Tensor, b: torch.Tensor, kind: int, group: int) -> torch.Tensor:
    """x @ W for W as FastLlama keeps it: kind 0 a transposed float tensor `a`; else quantize.py's weight classes'
    exact calls (16: bf16 `a`; 8: int8 codes `a`, scales `b`; 4: int4 packed `a`, scales and offsets `b`)."""
    if kind == 0:
        return torch.mm(x, a)
    if kind == 4:
        return torch.ops.aten._weight_int4pack_mm_for_cpu(x.to(torch.bfloat16), a, group, b).to(x.dtype)
    if kind == 8:
        return torch.ops.aten._weight_int8pack_mm(x.to(torch.bfloat16), a, b).to(x.dtype)
    return F.linear(x.to(torch.bfloat16), a).to(x.dtype)


def _add_product(x: torch.Tensor, y: torch.Tensor, a: torch.Tensor, b: torch.Tensor, kind: int,
                 group: int) -> torch.Tensor:
    """x + y @ W: in place for float weights (see the module's docstring), as `project_add` adds for quantized."""
    if kind == 0:
        return x.addmm_(y, a)
    return x + _product(y, a, b, kind, group)


def _step(tokens: torch.Tensor, positions: torch.Tensor, embed: torch.Tensor, table: torch.Tensor,
          weights: List[List[torch.Tensor]], keys: List[torch.Tensor], values: List[torch.Tensor], column: int,
          mask: Optional[torch.Tensor], shape: List[int], width: torch.Tensor, eps: torch.Tensor, scaling: float,
          final_norm: torch.Tensor, head: List[torch.Tensor], kind: int, group: int) -> torch.Tensor:
    """Logits [rows, vocab] for one token per row written at `column`; weights per layer: norm1, then qkv, out,
    gate_up and down as (a, b) pairs (`_product`), with norm2 after out; shape: heads, kv heads, head dim."""
    n_heads, n_kv, head_dim = shape[0], shape[1], shape[2]
    rows = tokens.shape[0]
    qk_cols = (n_heads + n_kv) * head_dim
    freqs = table[positions][:, None][:, :, None]
    x = F.embedding(tokens, embed)
    for i in range(len(weights)):
        w = weights[i]
        qkv = _product(_norm(x, w[0], width, eps), w[1], w[2], kind, group)
        pairs = torch.view_as_complex(qkv.narrow(1, 0, qk_cols).reshape(rows, 1, -1, head_dim // 2, 2))
        qk = torch.view_as_real(pairs * freqs).reshape(rows, 1, -1, head_dim)
        keys[i].narrow(2, column, 1).copy_(qk.narrow(2, n_heads, n_kv).transpose(1, 2))
        values[i].narrow(2, column, 1).copy_(
            qkv.narrow(1, qk_cols, n_kv * head_dim).reshape(rows, 1, n_kv, head_dim).transpose(1, 2))
        att = F.scaled_dot_product_attention(qk.narrow(2, 0, n_heads).transpose(1, 2), keys[i].narrow(2, 0, column + 1),
                                             values[i].narrow(2, 0, column + 1), attn_mask=mask, is_causal=False,
                                             scale=scaling, enable_gqa=n_kv != n_heads)
        x = _add_product(x, att.transpose(1, 2).reshape(rows, -1), w[3], w[4], kind, group)
        gate, up = _product(_norm(x, w[5], width, eps), w[6], w[7], kind, group).chunk(2, dim=-1)
        x = _add_product(x, F.silu(gate) * up, w[8], w[9], kind, group)
    return _product(_norm(x, final_norm, width, eps), head[0], head[1], kind, group)


@lru_cache(maxsize=1)
def compiled() -> Callable[..., torch.Tensor] | None:
    """The scripted step, or None where TorchScript cannot build it (the Python forward is used then)."""
    try:
        return torch.jit.script(_step)
    except Exception:  # noqa: BLE001 - any failure to script means: use the Python forward
        return None


_KINDS = {BF16Weight: 16, Int8Weight: 8, Int4Weight: 4}


def _pair(weight: Any) -> tuple[torch.Tensor, torch.Tensor]:
    """A weight as `_product`'s (a, b) tensors."""
    if type(weight) is torch.Tensor:
        return weight, _NONE
    if isinstance(weight, Int4Weight):
        return weight.packed, weight.scale_offset
    if isinstance(weight, Int8Weight):
        return weight.codes, weight.scales
    return weight.weight, _NONE


_NONE = torch.empty(0)


def _layout(fast: Any, pair: Callable[[Any], tuple[Any, Any]]) -> tuple[list[list[Any]], list[Any]]:
    """`_step`'s weights per layer (norm1, qkv, out, norm2, gate_up, down; each product as `pair` gives its two
    tensors) and the head's pair."""
    return ([[layer.norm1, *pair(layer.qkv), *pair(layer.out), layer.norm2, *pair(layer.gate_up), *pair(layer.down)]
             for layer in fast.layers], list(pair(fast.lm_head)))


class ScriptedStep:
    """FastLlama's weights in the scripted step's layout; `__call__` is `step_rows` for up to `max_rows` rows."""

    def __init__(self, fast: Any, step: Callable[..., torch.Tensor], kind: int, group: int):
        # a weak reference: the backend owns this step, and a cycle would keep a replaced model's weights in memory
        # until Python's next full collection (a server that reloads would hold every model it ever served)
        self.fast = weakref.proxy(fast)
        self.step, self.kind, self.group = step, kind, group
        self.max_rows = gemm.MIN_ROWS - 1 if kind == 0 else 1 << 30
        self.weights, self.head = _layout(fast, _pair)
        self.shape = [fast.n_heads, fast.n_kv, fast.head_dim]
        self.batch_rows = getattr(fast.lm_head, "batch_rows", 1 << 30)  # all weights are of one kind (`build`)
        self._wide: Any = None  # (weights, head) as bf16 copies for batch_rows+ rows; False where there are none

    @classmethod
    def build(cls, fast: Any) -> "ScriptedStep | None":
        """The scripted step for `fast`, or None where it would not make the Python forward's exact calls."""
        layers = fast.layers
        weights = [w for layer in layers for w in (layer.qkv, layer.out, layer.gate_up, layer.down)] + [fast.lm_head]
        biases = [b for layer in layers for b in (layer.qkv_bias, layer.out_bias, layer.gate_up_bias,
                                                  layer.down_bias)] + [fast.lm_head_bias]
        types = {type(w) for w in weights}
        if fast.dtype is not torch.float32 or len(types) != 1 or any(b is not None for b in biases) \
                or any(w is not None for w in fast.windows) or fast.short_freqs is not None:
            return None
        kind = 0 if types == {torch.Tensor} else _KINDS.get(types.pop())
        if kind is None or any(getattr(w, "bias", None) is not None for w in weights) \
                or (kind == 0 and gemm.enabled() and any(w.numel() >= gemm.HEAD_WEIGHT for w in weights)):
            return None
        groups = {getattr(w, "group", 0) for w in weights}
        step = compiled()
        return None if step is None or len(groups) != 1 else cls(fast, step, kind, groups.pop())

    def __call__(self, keys: list[torch.Tensor], values: list[torch.Tensor], tokens: torch.Tensor,
                 positions: torch.Tensor, column: int, mask: torch.Tensor | None) -> torch.Tensor:
        fast = self.fast
        weights, head, kind = self.weights, self.head, self.kind
        if tokens.shape[0] >= self.batch_rows and self._wide_weights():
            (weights, head), kind = self._wide, 16
        return self.step(tokens, positions, fast.embed, fast.freqs, weights, keys, values, column, mask, self.shape,
                         fast._width, fast._eps, fast.scaling, fast.final_norm, head, kind, self.group)

    def _wide_weights(self) -> bool:
        """Whether every quantized weight has its bf16 copy (quantize.py's `_BatchCopy`), which the Python forward
        uses from `batch_rows` rows on; the same copies here keep the two paths the same numbers."""
        if self._wide is None:
            weights, head = _layout(self.fast, lambda w: (w.batch_weight(), _NONE))
            made = all(t is not None for t in head) and all(t is not None for row in weights for t in row)
            self._wide = (weights, head) if made else False
        return self._wide is not False
