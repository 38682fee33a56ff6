"""The prompt pass of a left-padded generation batch, packed: the products run on real tokens only and each prompt
attends causally on its own.

A padded batch run as a [rows, width] grid pays twice for prompts of different lengths: every weight product runs
on the padding too, and attention needs an explicit [rows, 1, width, width] mask, which sends it to the slow kernel
(profiled on SmolLM2's eval: 130 of 223 prefill seconds were that masked attention). Here the batch's real tokens
form one [tokens, hidden] matrix through the projections and the MLP, and each row's attention is the causal kernel
over its own tokens, written into the row's slots of the left-padded KV cache that decoding then extends. The
logits are those of each prompt run alone; only the last position of each row reaches the output head.
`prefill_after` does the same for prompts that continue one shared, already computed prefix (a server's system
prompt), so a burst of arrivals runs only what differs.
"""

from __future__ import annotations

import weakref
from typing import Any

import torch
import torch.nn.functional as F

from llmcycle.infer.llama_layout import band, fits_in_memory, project, project_add, rotate


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
    freqs = table[torch.cat([torch.arange(n, device=backend.device) for n in counts])][:, None]
    spans, ends = _spans(counts, backend.device)
    x = F.embedding(input_ids[real], backend.embed)
    caches = zip(backend.keys, backend.values, backend.windows)
    for layer, wide, (keys, values, window) in zip(backend.layers, wide_weights(backend), caches):
        views = [(keys[row:row + 1, :, width - (high - low):width], values[row:row + 1, :, width - (high - low):width],
                  0) for row, (low, high) in enumerate(spans)]
        x = _layer(backend, layer, wide, views, window, x, freqs, spans)
    return x[ends - 1]


def prefill_after(backend: Any, past_keys: list[torch.Tensor], past_values: list[torch.Tensor],
                  suffixes: list[list[int]]) -> tuple[torch.Tensor, list[list[torch.Tensor]], list[list[torch.Tensor]]]:
    """Prompts that all continue one computed prefix (`past_*`: per layer [1, kv, P, hd]; a server's shared
    system prompt), packed as `prefill_rows` packs a batch: (last logits [rows, vocab], and per row its keys and
    values per layer [1, kv, P + n, hd], the prefix copied in). Only the suffixes are run, each attending to the
    prefix and causally to itself; the logits are each whole prompt's run alone, up to float rounding."""
    past = past_keys[0].shape[2]
    counts = [len(s) for s in suffixes]
    device, kv, dim = backend.device, backend.n_kv, backend.head_dim
    spans, ends = _spans(counts, device)
    freqs = backend.freqs[torch.cat([torch.arange(past, past + n, device=device) for n in counts])][:, None]
    x = F.embedding(torch.tensor([t for s in suffixes for t in s], device=device), backend.embed)
    keys, values = [], []
    for n in counts:
        own = [[torch.empty(1, kv, past + n, dim, dtype=backend.dtype, device=device) for _ in backend.layers]
               for _ in range(2)]
        for cache, saved in zip(own[0] + own[1], past_keys + past_values):
            cache[:, :, :past] = saved
        keys.append(own[0])
        values.append(own[1])
    for i, (layer, wide, window) in enumerate(zip(backend.layers, wide_weights(backend), backend.windows)):
        views = [(k[i], v[i], past) for k, v in zip(keys, values)]
        x = _layer(backend, layer, wide, views, window, x, freqs, spans)
    return backend._logits(x[ends - 1]), keys, values


def _spans(counts: list[int], device: Any) -> tuple[list[tuple[int, int]], torch.Tensor]:
    """Each row's (start, end) in the packed token matrix, and the ends as a tensor (each row's last token + 1)."""
    ends = torch.tensor(counts, device=device).cumsum(0)
    return list(zip((ends - torch.tensor(counts, device=device)).tolist(), ends.tolist())), ends


def _layer(backend: Any, layer: Any, wide: tuple[Any, Any], views: list[tuple[torch.Tensor, torch.Tensor, int]],
           window: int | None, x: torch.Tensor, freqs: torch.Tensor, spans: list[tuple[int, int]]) -> torch.Tensor:
    """One layer over the packed tokens; views: per row its cache [1, kv, past + n, hd] for keys and values, whose
    slots from `past` on receive the row's n new tokens, and `past` (slots before them that it attends to)."""
    heads, kv, dim = backend.n_heads, backend.n_kv, backend.head_dim
    qk_cols = (heads + kv) * dim
    qkv = project(backend._norm(x, layer.norm1), wide[0], layer.qkv_bias)
    qk = rotate(qkv[:, :qk_cols].reshape(len(x), heads + kv, dim), freqs)
    v = qkv[:, qk_cols:].reshape(len(x), kv, dim)
    outs = []
    for (low, high), (keys, values, past) in zip(spans, views):
        n = high - low
        keys[0, :, past:] = qk[low:high, heads:].transpose(0, 1)
        values[0, :, past:] = v[low:high].transpose(0, 1)
        banded = past > 0 or (window is not None and n > window)
        mask = band(past, n, past + n, window, backend.device) if banded else None
        query = qk[low:high, :heads].transpose(0, 1)[None]
        att = F.scaled_dot_product_attention(query, keys, values, attn_mask=mask, is_causal=mask is None and n > 1,
                                             scale=backend.scaling, enable_gqa=kv != heads)
        outs.append(att[0].transpose(0, 1).reshape(n, heads * dim))
    return backend._mlp(layer, project_add(x, torch.cat(outs), layer.out, layer.out_bias), wide[1])


_WIDE: "weakref.WeakKeyDictionary[Any, list[tuple[Any, Any]]]" = weakref.WeakKeyDictionary()


def wide_weights(backend: Any) -> list[tuple[Any, Any]]:
    """Each layer's (qkv, gate_up) weights for products of hundreds of rows: [in, out] views of row-major [out, in]
    copies. The backend stores them [in, out] for batch-1 decoding, and oneDNN rearranges such a weight on every
    call, which made these two products ~1.4x slower than the others per FLOP; with the copies a scoring forward
    ran ~15% faster. Both packed forwards (scoring's, and a prompt batch's here) use them. Made once per backend,
    where float32 weights fit in memory twice; else the backend's own."""
    if backend not in _WIDE:
        own = [(layer.qkv, layer.gate_up) for layer in backend.layers]
        plain = all(type(w) is torch.Tensor for pair in own for w in pair)
        size = sum(w.numel() * w.element_size() for pair in own for w in pair) if plain else 0
        _WIDE[backend] = [(q.t().contiguous().t(), g.t().contiguous().t()) for q, g in own] \
            if plain and fits_in_memory(size) else own
    return _WIDE[backend]
