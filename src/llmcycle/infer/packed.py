"""One forward for many scored sequences, packed: a row per question holds its context and every answer after it.

Multiple-choice scoring needs log p(answer | context) for several answers of one context. Each row of the batch is
[context + the answers' shared first tokens][tail 1][tail 2]...: every tail attends to its row's context and to its
own earlier tokens (a block mask), at the positions it would have right after the context, so its log-probabilities
are those of (context, answer) run alone. On CPU nearly all of a forward is the weight products, and here they run
on the real tokens only, packed into one [tokens, hidden] matrix: padding exists only inside attention, which is a
few percent of the work at these lengths. No KV cache is copied per answer, and each batch of questions is one pass
through the layers on the fast Llama backend's fused weights (q/k/v in one product, gate/up in another).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Sequence

import torch
import torch.nn.functional as F

from llmcycle.infer.fast_llama import FastLlama
from llmcycle.infer.llama_layout import project, project_add, rotate
from llmcycle.infer.row_prefill import wide_weights

Row = tuple[Sequence[int], Sequence[Sequence[int]]]  # (prefix ids, tail ids fed after it)


def packable(backend: Any) -> bool:
    """Whether `backend` runs packed rows exactly: our Llama forward with one rope table and no sliding windows
    (a window would need per-segment bands; longrope switches tables by sequence length)."""
    return (isinstance(backend, FastLlama) and backend.short_freqs is None
            and all(w is None for w in backend.windows))


@dataclass
class Layout:
    """Where each real token sits: its flat index is its row's start plus its column."""

    ids: torch.Tensor  # [tokens] every row's tokens, rows one after the other
    positions: torch.Tensor  # [tokens] rope position (a tail restarts right after its row's prefix)
    slots: torch.Tensor  # [tokens] row * width + column, in the padded [rows, width] grid attention runs on
    starts: list[int]  # flat index of each row's first token
    rows: int
    width: int
    mask: torch.Tensor | None  # [rows, 1, width, width] bool, None where plain causal attention is exact


def layout(rows: Sequence[Row], device: Any) -> Layout:
    ids: list[int] = []
    positions: list[int] = []
    segments: list[list[int]] = []  # per row and column: 0 prefix, k + 1 tail k
    starts = []
    for prefix, tails in rows:
        starts.append(len(ids))
        ids.extend(prefix)
        positions.extend(range(len(prefix)))
        segment = [0] * len(prefix)
        for k, tail in enumerate(tails):
            ids.extend(tail)
            positions.extend(range(len(prefix), len(prefix) + len(tail)))
            segment.extend([k + 1] * len(tail))
        segments.append(segment)
    width = max(len(s) for s in segments)
    slots = [r * width + c for r, s in enumerate(segments) for c in range(len(s))]
    mask = None
    if any(len(s) > len(p) for s, (p, _) in zip(segments, rows)):
        mask = _block_mask(segments, width, device)
    as_long = dict(dtype=torch.long, device=device)
    return Layout(torch.tensor(ids, **as_long), torch.tensor(positions, **as_long), torch.tensor(slots, **as_long),
                  starts, len(rows), width, mask)


def _block_mask(segments: list[list[int]], width: int, device: Any) -> torch.Tensor:
    """A query sees earlier keys of the prefix and of its own segment; padding queries see column 0 only (so their
    softmax stays finite; their outputs are never read)."""
    seg = torch.full((len(segments), width), -1, dtype=torch.long)
    for r, s in enumerate(segments):
        seg[r, :len(s)] = torch.tensor(s, dtype=torch.long)
    query, key = seg[:, :, None], seg[:, None, :]
    column = torch.arange(width)
    causal = column[None, :, None] >= column[None, None, :]
    allowed = causal & (key >= 0) & ((key == 0) | (key == query))
    allowed |= (query < 0) & (column == 0)[None, None, :]
    return allowed[:, None].to(device)


def packed_logprobs(backend: FastLlama, rows: Sequence[Row], picks: Sequence[tuple[int, int]],
                    targets: Sequence[tuple[int, int]]) -> list[float]:
    """log p(token | everything before it) for each (pick index, token) of `targets`, where a pick is the (row,
    column) whose hidden state predicts the next token. The head runs only on the picked positions, a slice at a
    time (a full-vocabulary row is 200 KB; a batch of HellaSwag questions scores thousands). Through log_softmax,
    not logits minus `torch.logsumexp`: on CPU the latter ran ~1.6e-5 nats per token high against a float64 forward
    (SmolLM2, a 49,152-token vocabulary), enough to move a perplexity by 2e-5; with log_softmax the error is the
    forward's own float32 rounding (~2e-6 per token there)."""
    plan = layout(rows, backend.device)
    with torch.inference_mode():
        x = F.embedding(plan.ids, backend.embed)
        freqs = backend.freqs[plan.positions][:, None]
        for layer, wide in zip(backend.layers, wide_weights(backend)):
            x = _layer(backend, layer, wide, x, freqs, plan)
        at = torch.tensor([plan.starts[r] + c for r, c in picks], dtype=torch.long, device=backend.device)
        hidden = x[at]
        pick_of = torch.tensor([p for p, _ in targets], dtype=torch.long, device=backend.device)
        token_of = torch.tensor([t for _, t in targets], dtype=torch.long, device=backend.device)
        out = torch.empty(len(targets), dtype=torch.float32, device=backend.device)
        for low in range(0, len(picks), HEAD_ROWS):
            logits = backend._logits(hidden[low:low + HEAD_ROWS])
            mine = (pick_of >= low) & (pick_of < low + HEAD_ROWS)
            local = pick_of[mine] - low
            out[mine] = torch.log_softmax(logits, dim=-1)[local, token_of[mine]]
        return out.tolist()


HEAD_ROWS = 512  # picked positions per slice of the output head


def _layer(backend: FastLlama, layer: Any, wide: tuple[Any, Any], x: torch.Tensor, freqs: torch.Tensor,
           plan: Layout) -> torch.Tensor:
    heads, kv, dim = backend.n_heads, backend.n_kv, backend.head_dim
    qk_cols = (heads + kv) * dim
    qkv = project(backend._norm(x, layer.norm1), wide[0], layer.qkv_bias)
    qk = rotate(qkv[:, :qk_cols].reshape(len(x), heads + kv, dim), freqs)
    grid = (plan.rows * plan.width,)
    q = _scatter(qk[:, :heads], plan, grid + (heads, dim))
    k = _scatter(qk[:, heads:], plan, grid + (kv, dim))
    v = _scatter(qkv[:, qk_cols:].reshape(len(x), kv, dim), plan, grid + (kv, dim))
    att = F.scaled_dot_product_attention(q, k, v, attn_mask=plan.mask, is_causal=plan.mask is None,
                                         scale=backend.scaling, enable_gqa=kv != heads)
    att = att.transpose(1, 2).reshape(plan.rows * plan.width, heads * dim)[plan.slots]
    return backend._mlp(layer, project_add(x, att, layer.out, layer.out_bias), wide[1])


def _scatter(values: torch.Tensor, plan: Layout, shape: tuple[int, ...]) -> torch.Tensor:
    """[tokens, heads, dim] into the zero-padded [rows, heads, width, dim] grid attention wants."""
    grid = values.new_zeros(shape)
    grid[plan.slots] = values
    return grid.view(plan.rows, plan.width, shape[1], shape[2]).transpose(1, 2)
