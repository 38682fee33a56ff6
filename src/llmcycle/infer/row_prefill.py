"""The prompt pass of a left-padded generation batch, packed: the products run on real tokens only and each prompt
attends causally on its own.

A padded batch run as a [rows, width] grid pays twice for prompts of different lengths: every weight product runs
on the padding too, and attention needs an explicit [rows, 1, width, width] mask, which sends it to the slow kernel
(profiled on SmolLM2's eval: 130 of 223 prefill seconds were that masked attention). Here the batch's real tokens
form one [tokens, hidden] matrix through the projections and the MLP, and each row's attention is the causal kernel
over its own tokens, written into the row's slots of the left-padded KV cache that decoding then extends. The
logits are those of each prompt run alone; only the last position of each row reaches the output head.
"""

from __future__ import annotations

from typing import Any

import torch
import torch.nn.functional as F

from llmcycle.infer.llama_layout import band, project, project_add, rotate


def left_padded(attention_mask: torch.Tensor) -> bool:
    """Whether every row is padding then tokens (the layout `decode.left_pad` makes), so the real tokens of a
    row are its last ones and the packed prefill applies."""
    flipped = attention_mask.flip(-1)
    return bool((flipped.cumprod(-1) == flipped).all())


def prefill_rows(backend: Any, input_ids: torch.Tensor, attention_mask: torch.Tensor,
                 table: torch.Tensor) -> torch.Tensor:
    """Hidden states [rows, hidden] at each row's last token, after writing every real token's keys and values to
    `backend.keys`/`values` slots width - n .. width of its row (the padding slots zeroed: the decode mask hides
    them, and a zero weight times stale memory could still be NaN)."""
    width = input_ids.shape[1]
    real = attention_mask.bool()
    counts = real.sum(-1).tolist()
    for cache in backend.keys + backend.values:
        cache[:, :, :width].masked_fill_(~real[:, None, :, None], 0)
    positions = torch.cat([torch.arange(n, device=backend.device) for n in counts])
    freqs = table[positions][:, None]
    ends = torch.tensor(counts, device=backend.device).cumsum(0)
    spans = list(zip((ends - torch.tensor(counts, device=backend.device)).tolist(), ends.tolist()))
    x = F.embedding(input_ids[real], backend.embed)
    for layer, keys, values, window in zip(backend.layers, backend.keys, backend.values, backend.windows):
        x = _layer(backend, layer, keys, values, window, x, freqs, spans, width)
    return x[ends - 1]


def _layer(backend: Any, layer: Any, keys: torch.Tensor, values: torch.Tensor, window: int | None,
           x: torch.Tensor, freqs: torch.Tensor, spans: list[tuple[int, int]], width: int) -> torch.Tensor:
    heads, kv, dim = backend.n_heads, backend.n_kv, backend.head_dim
    qk_cols = (heads + kv) * dim
    qkv = project(backend._norm(x, layer.norm1), layer.qkv, layer.qkv_bias)
    qk = rotate(qkv[:, :qk_cols].reshape(len(x), heads + kv, dim), freqs)
    v = qkv[:, qk_cols:].reshape(len(x), kv, dim)
    outs = []
    for row, (low, high) in enumerate(spans):
        n, first = high - low, width - (high - low)
        keys[row, :, first:width] = qk[low:high, heads:].transpose(0, 1)
        values[row, :, first:width] = v[low:high].transpose(0, 1)
        mask = band(0, n, n, window, backend.device) if window is not None and n > window else None
        att = F.scaled_dot_product_attention(qk[low:high, :heads].transpose(0, 1)[None], keys[row:row + 1, :, first:width],
                                             values[row:row + 1, :, first:width], attn_mask=mask,
                                             is_causal=mask is None and n > 1, scale=backend.scaling,
                                             enable_gqa=kv != heads)
        outs.append(att[0].transpose(0, 1).reshape(n, heads * dim))
    return backend._mlp(layer, project_add(x, torch.cat(outs), layer.out, layer.out_bias))
