"""Our own forward pass for Llama-family decoders (Llama, Mistral, Qwen2, Phi-3) over the HF model's weights.

Why: at batch 1 a small model's decode speed is set by per-token Python and dispatch cost, not arithmetic. So each
layer is a handful of ATen calls on weights prepared once:
- q/k/v (and gate/up) weights concatenated, so one matmul each (Phi-3 already ships them fused);
- the rows of q and k permuted within each head so rotary embedding is one complex multiply (attention scores
  are unchanged because q and k get the same permutation); partial rotary = factor 1 on the unrotated pairs;
- a KV cache preallocated for the whole request, written in place; the rotary table computed once by the model's
  own rotary module, so every rope variant that depends only on the position is exact.
What remains at batch 1 on CPU is memory traffic and per-call cost: the `default` preset streams ~7 MB of fp32
weights per token (the 4 MB tied output head among them); `--quantize int8` quarters the bytes. torch.compile
measured slower here (dynamic shapes, ~25 s compile), so it is not used; a decode step (one request's, or a
continuous batch's) runs the same calls as one TorchScript graph instead where it can (`scripted_step.py`).
Anything we do not reproduce exactly (rope that depends on sequence length, sliding windows shorter than the
context, other activations, quantized or adapter-wrapped modules) makes `from_hf` return None: the engine then
uses the transformers forward instead.
"""

from __future__ import annotations

from typing import Any

import torch
import torch.nn.functional as F

from llmcycle.infer.llama_layout import (LENGTH_DEPENDENT_ROPE, Layer, band, interleave_permutation, layer_windows,
                                         project, project_add, rotate, unsupported_reason)
from llmcycle.infer.prefix_cache import common_prefix
from llmcycle.infer.quantize import allow_batch_copies, head_spec, parse_spec, quantize_weight
from llmcycle.infer.row_prefill import left_padded, prefill_rows
from llmcycle.infer.scripted_step import ScriptedStep


def _padded_mask(attention_mask: torch.Tensor) -> torch.Tensor:
    """[rows, 1, width, width] causal mask over each row's real tokens, for the padded-grid forward (longrope's
    recompute, or a padding other than left padding); a padding query attends to itself, so softmax stays finite."""
    width = attention_mask.shape[1]
    causal = torch.ones(width, width, dtype=torch.bool, device=attention_mask.device).tril()
    mask = causal[None, None] & attention_mask.bool()[:, None, None, :]
    return mask | torch.eye(width, dtype=torch.bool, device=attention_mask.device)[None, None]


class FastLlama:
    """A decode backend (see decode.py): `start` runs the prompt into a fresh cache, `step` adds one token."""

    def __init__(self, model: Any):
        cfg = model.config
        inner = model.model
        attn0 = inner.layers[0].self_attn
        self.n_heads = cfg.num_attention_heads
        self.n_kv = getattr(cfg, "num_key_value_heads", None) or self.n_heads
        self.head_dim = getattr(attn0, "head_dim", None) or cfg.hidden_size // self.n_heads
        self.scaling = float(getattr(attn0, "scaling", self.head_dim ** -0.5))
        self.eps = float(inner.norm.variance_epsilon)
        self.hidden = cfg.hidden_size
        self._eps = torch.tensor(self.eps, device=inner.norm.weight.device)
        self._width = torch.tensor(float(self.hidden), device=inner.norm.weight.device)
        self.max_positions = cfg.max_position_embeddings
        self.embed = inner.embed_tokens.weight
        self.final_norm = inner.norm.weight
        self.lm_head = model.lm_head.weight.t().contiguous()
        self.lm_head_bias = model.lm_head.bias
        self.device, self.dtype = self.embed.device, self.embed.dtype
        self.freqs, self.short_freqs, self.original_max = self._rope_tables(inner.rotary_emb, cfg)
        self.windows = layer_windows(model)
        self.cached_ids: list[int] = []  # tokens whose keys/values fill slots 0.. of a batch-1 cache
        self._fed: list[torch.Tensor] = []  # tokens stepped since (materialized lazily: no sync per token)
        self.cache_long = False  # whether any slot of the live cache was computed with longrope's long table
        self.prefix_cache: Any = None  # an optional shared PrefixCache (prefix_cache.py)
        self.reused = 0  # prompt tokens the last `start` took from a cache instead of computing
        perm = interleave_permutation(self.head_dim, self._rotary_dim)
        self.layers = [self._layer(layer, perm) for layer in inner.layers]
        self._scripted: Any = None  # the scripted decode step (scripted_step.py), False where it does not apply
        self.batch_copy_bytes = 0  # memory the quantized weights' bf16 copies may take (quantize.py's _BatchCopy)

    @classmethod
    def from_hf(cls, model: Any) -> "FastLlama | None":
        """Our backend for `model`, or None when it is not an architecture we reproduce exactly."""
        if unsupported_reason(model) is not None:
            return None
        with torch.no_grad():
            return cls(model)

    @property
    def continuous_batching(self) -> bool:
        """Whether rows of one batch may sit at different positions (the scheduler's continuous batching): not with
        longrope, which switches its rotary table with the sequence length that the rows do not share."""
        return self.short_freqs is None

    # ---- weight preparation -----------------------------------------------------------------------------
    def _rope_tables(self, rotary: Any, cfg: Any) -> tuple[torch.Tensor, torch.Tensor | None, int]:
        """The position table, plus for longrope the table transformers uses while the sequence is no longer
        than the original context (it switches by the longest position of each forward call)."""
        table = self._rope_table(rotary, self.max_positions)
        if getattr(rotary, "rope_type", None) not in LENGTH_DEPENDENT_ROPE:
            return table, None, self.max_positions
        params = getattr(cfg, "rope_parameters", None) or getattr(cfg, "rope_scaling", None) or {}
        original = int(params.get("original_max_position_embeddings")
                       or getattr(cfg, "original_max_position_embeddings", self.max_positions))
        if original >= self.max_positions:
            return table, None, self.max_positions
        return table, self._rope_table(rotary, original), original

    def _table(self, length: int, mark: bool = True) -> torch.Tensor:
        """The rope table for a forward call whose longest position is length - 1."""
        if self.short_freqs is None:
            return self.freqs
        if length <= self.original_max:
            return self.short_freqs
        self.cache_long = self.cache_long or mark
        return self.freqs

    def _rope_table(self, rotary: Any, count: int) -> torch.Tensor:
        """complex [count, head_dim/2]: the model's own cos/sin (attention scaling included), 1 where unrotated."""
        positions = torch.arange(count, device=self.device)[None]
        probe = torch.zeros(1, device=self.device, dtype=torch.float32)
        cos, sin = rotary(probe, positions)
        cos, sin = cos[0].float(), sin[0].float()
        self._rotary_dim = cos.shape[-1]
        half = self._rotary_dim // 2
        table = torch.ones(count, self.head_dim // 2, dtype=torch.complex64, device=self.device)
        table[:, :half] = torch.complex(cos[:, :half], sin[:, :half])
        return table

    def _layer(self, layer: Any, perm: torch.Tensor) -> Layer:
        attn, mlp = layer.self_attn, layer.mlp
        if hasattr(attn, "qkv_proj"):
            weight, bias = attn.qkv_proj.weight, attn.qkv_proj.bias
        else:
            parts = [attn.q_proj, attn.k_proj, attn.v_proj]
            weight = torch.cat([p.weight for p in parts])
            bias = None if all(p.bias is None for p in parts) else torch.cat(
                [p.bias if p.bias is not None else torch.zeros(p.out_features, device=self.device) for p in parts])
        qk_rows = (self.n_heads + self.n_kv) * self.head_dim
        heads = torch.arange(self.n_heads + self.n_kv, device=self.device)[:, None] * self.head_dim
        order = torch.cat([(heads + perm.to(self.device)).reshape(-1), torch.arange(qk_rows, weight.shape[0],
                                                                                    device=self.device)])
        if hasattr(mlp, "gate_up_proj"):
            gate_up, gate_up_bias = mlp.gate_up_proj.weight, mlp.gate_up_proj.bias
        else:
            gate_up = torch.cat([mlp.gate_proj.weight, mlp.up_proj.weight])
            biases = [mlp.gate_proj.bias, mlp.up_proj.bias]
            gate_up_bias = None if biases[0] is None else torch.cat(biases)
        return Layer(norm1=layer.input_layernorm.weight, qkv=weight[order].t().contiguous(),
                     qkv_bias=None if bias is None else bias[order].contiguous(),
                     out=attn.o_proj.weight.t().contiguous(), out_bias=attn.o_proj.bias,
                     norm2=layer.post_attention_layernorm.weight, gate_up=gate_up.t().contiguous(),
                     gate_up_bias=gate_up_bias, down=mlp.down_proj.weight.t().contiguous(),
                     down_bias=mlp.down_proj.bias)

    # ---- the backend interface --------------------------------------------------------------------------
    def start(self, input_ids: torch.Tensor, attention_mask: torch.Tensor, max_new_tokens: int) -> torch.Tensor:
        batch, width = input_ids.shape
        length = width + max_new_tokens
        padded = bool((attention_mask == 0).any())
        ids = input_ids[0].tolist() if batch == 1 and not padded else None
        positions = (attention_mask.cumsum(-1) - 1).clamp(min=0)
        table = self._table(int(positions.max()) + 1, mark=False) if self.short_freqs is not None else self.freqs
        reuse = self._reuse(ids, length, table) if ids else 0
        if not reuse:
            self._reserve_cache(batch, length, keep=0)
        self.slot, self.reused = width, reuse
        self.next_position = positions[:, -1] + 1
        self.attend = None
        if padded:
            self.attend = torch.ones(batch, 1, 1, length, dtype=torch.bool, device=self.device)
            self.attend[:, 0, 0, :width] = attention_mask.bool()
        if not reuse:  # (with longrope, a reused cache was computed with the short table, as this prefill)
            self.cache_long = self.short_freqs is not None and table is self.freqs
        if padded and left_padded(attention_mask):
            last = prefill_rows(self, input_ids, attention_mask, table)
        else:
            hidden = self._forward(input_ids[:, reuse:], table[positions[:, reuse:]], reuse,
                                   _padded_mask(attention_mask) if padded else None, causal=not padded)
            last = hidden[:, -1]
        self.cached_ids, self._fed = ids or [], []
        if self.short_freqs is not None:  # longrope may recompute the whole sequence once (see `step`)
            self._ids = torch.empty(batch, length, dtype=torch.long, device=self.device)
            self._ids[:, :width] = input_ids
        if ids and self.prefix_cache is not None and self.short_freqs is None:
            self.prefix_cache.insert(ids, self.keys, self.values)
        return self._logits(last)

    def _reuse(self, ids: list[int], length: int, table: torch.Tensor) -> int:
        """Slots 0..n of the cache made ready from a cached prefix of `ids` (the live cache, else the shared
        one); n leaves at least the last prompt token to run. Longrope reuses only slots its table computed."""
        keys = getattr(self, "keys", None)
        live = self.cached_ids + [int(t[0]) for t in self._fed] if keys and keys[0].shape[0] == 1 else []
        if self.short_freqs is not None and (table is not self.short_freqs or self.cache_long):
            live = []
        n = min(common_prefix(live, ids), len(ids) - 1)
        if self.prefix_cache is not None and self.short_freqs is None:
            m, saved_keys, saved_values = self.prefix_cache.lookup(ids)
            m = min(m, len(ids) - 1)
            if m > n:
                self._reserve_cache(1, length, keep=0)
                for cache, saved in zip(self.keys + self.values, saved_keys + saved_values):
                    cache[:, :, :m] = saved[:, :, :m]
                return m
        if n > 0:
            self._reserve_cache(1, length, keep=n)
        return max(n, 0)

    def _reserve_cache(self, batch: int, length: int, keep: int = 0) -> None:
        """The KV cache for a request: the previous one when it is big enough (a chat reuses it every turn),
        else a new one (doubling for batch 1, so a growing chat reallocates rarely) with the first `keep`
        slots copied over. No clearing is needed: a request reads only the slots it has written."""
        keys = getattr(self, "keys", None)
        if keys and keys[0].shape[0] == batch and keys[0].shape[2] >= length:
            return
        if batch == 1 and keys:
            length = min(max(length, 2 * keys[0].shape[2]), max(self.max_positions, length))
        old_keys, old_values = (keys, self.values) if keep and keys else ([], [])
        self.keys = self.values = []  # free the old cache before allocating the new one (unless copying)
        shape = (batch, self.n_kv, length, self.head_dim)
        self.keys = [torch.empty(shape, dtype=self.dtype, device=self.device) for _ in self.layers]
        self.values = [torch.empty(shape, dtype=self.dtype, device=self.device) for _ in self.layers]
        for new, old in zip(self.keys + self.values, old_keys + old_values):
            new[:, :, :keep] = old[:1, :, :keep]

    def step(self, tokens: torch.Tensor) -> torch.Tensor:
        slot = self.slot
        if tokens.shape[0] == 1:
            self._fed.append(tokens)
        if self.short_freqs is not None:
            self._ids[:, slot] = tokens
            if slot == self.original_max:
                return self._recompute(slot + 1)
        positions, mask = None, None
        if self.attend is not None:
            positions, mask = self.next_position, self.attend[..., :slot + 1]
            self.next_position = positions + 1
        self.slot = slot + 1
        scripted = self._scripted_step(tokens.shape[0])
        if scripted:
            if positions is None:
                positions = torch.full((tokens.shape[0],), slot, dtype=torch.long, device=self.device)
            return scripted(self.keys, self.values, tokens, positions, slot, mask)
        if positions is None:
            freqs = self._table(slot + 1)[slot:slot + 1][None]
        else:
            table = self._table(int(positions.max()) + 1) if self.short_freqs is not None else self.freqs
            freqs = table[positions][:, None]
        hidden = self._forward(tokens[:, None], freqs, slot, mask, causal=False)
        return self._logits(hidden[:, -1])

    def _scripted_step(self, rows: int) -> Any:
        """The scripted decode step (scripted_step.py, built once) where it applies to `rows` rows, else None."""
        if self._scripted is None:
            self._scripted = ScriptedStep.build(self) or False
        return self._scripted if self._scripted and rows <= self._scripted.max_rows else None

    def _recompute(self, end: int) -> torch.Tensor:
        """What transformers' Phi-3 generation does when the sequence first outgrows the original context: drop
        the cache and run every token again (then with the long rope table)."""
        if self.attend is None:
            positions, mask = torch.arange(end, device=self.device)[None], None
        else:
            seen = self.attend[:, 0, 0, :end]
            positions = (seen.long().cumsum(-1) - 1).clamp(min=0)
            mask = _padded_mask(seen)
            self.next_position = positions[:, -1] + 1
        table = self._table(int(positions.max()) + 1)
        hidden = self._forward(self._ids[:, :end], table[positions], 0, mask, causal=mask is None)
        self.slot = end
        return self._logits(hidden[:, -1])

    def quantize(self, spec: Any) -> None:
        """Weight-only quantization of every projection (see quantize.py). The output head is quantized on its
        own, so a tied embedding keeps its full-precision rows for the lookup."""
        spec = parse_spec(spec)
        with torch.no_grad():
            for layer in self.layers:
                for name in ("qkv", "out", "gate_up", "down"):
                    bias_name = f"{name}_bias"
                    weight = quantize_weight(getattr(layer, name).t(), getattr(layer, bias_name), spec)
                    setattr(layer, name, weight)
                    setattr(layer, bias_name, None)
            self.lm_head = quantize_weight(self.lm_head.t(), self.lm_head_bias, head_spec(spec))
            self.lm_head_bias = None
            self._scripted = None
        self.batch_copy_bytes = allow_batch_copies([self.lm_head] + [getattr(layer, name) for layer in self.layers
                                                                     for name in ("qkv", "out", "gate_up", "down")])

    # ---- the model --------------------------------------------------------------------------------------
    def _norm(self, x: torch.Tensor, weight: torch.Tensor) -> torch.Tensor:
        """RMSNorm bit-identical to transformers' (float32 statistics) in fewer dispatches: mean as sum / n with
        tensor constants, because wrapping a Python float costs more than the arithmetic on 256 numbers."""
        y = x if x.dtype == torch.float32 else x.float()
        y = y * (y * y).sum(-1, keepdim=True).div_(self._width).add_(self._eps).rsqrt_()
        return weight * (y if x.dtype == torch.float32 else y.to(x.dtype))

    def _forward(self, ids: torch.Tensor, freqs: torch.Tensor, start: int, mask: torch.Tensor | None,
                 causal: bool) -> torch.Tensor:
        """Hidden states [batch * new, hidden] for `ids` written to cache slots start..; freqs [batch|1, new, hd/2].

        Activations stay 2-D and weights are stored transposed, so each projection is one `mm`/`addmm` with the
        residual add fused in."""
        batch, new = ids.shape
        end = start + new
        qk_cols = (self.n_heads + self.n_kv) * self.head_dim
        freqs = freqs[:, :, None]
        x = F.embedding(ids.reshape(-1), self.embed)
        if causal and new > 1 and start > 0:  # a prefill after a cached prefix: causal from slot `start`
            mask, causal = band(start, new, end, None, self.device), False
        banded: dict[int, Any] = {}
        for layer, keys, values, window in zip(self.layers, self.keys, self.values, self.windows):
            h = self._norm(x, layer.norm1)
            qkv = project(h, layer.qkv, layer.qkv_bias)
            qk = rotate(qkv[:, :qk_cols].reshape(batch, new, -1, self.head_dim), freqs)
            keys[:, :, start:end] = qk[:, :, self.n_heads:].transpose(1, 2)
            values[:, :, start:end] = qkv[:, qk_cols:].reshape(batch, new, self.n_kv, self.head_dim).transpose(1, 2)
            low, layer_mask, layer_causal = 0, mask, causal and new > 1
            if window is not None and end > window:
                if new == 1:  # one query: its window is a slice of the cache
                    low = end - window
                    layer_mask = None if mask is None else mask[..., low:end]
                else:
                    if window not in banded:
                        windowed = band(start, new, end, window, self.device)
                        banded[window] = windowed if mask is None else windowed & mask
                    layer_mask, layer_causal = banded[window], False
            att = F.scaled_dot_product_attention(qk[:, :, :self.n_heads].transpose(1, 2), keys[:, :, low:end],
                                                 values[:, :, low:end], attn_mask=layer_mask,
                                                 is_causal=layer_causal, scale=self.scaling,
                                                 enable_gqa=self.n_kv != self.n_heads)
            x = self._mlp(layer, project_add(x, att.transpose(1, 2).reshape(batch * new, -1), layer.out,
                                             layer.out_bias))
        return x.view(batch, new, -1)

    def _mlp(self, layer: Layer, x: torch.Tensor, gate_up: Any = None) -> torch.Tensor:
        """x plus the layer's MLP of x (its gate and up in one product; `gate_up` replaces the layer's weight)."""
        weight = layer.gate_up if gate_up is None else gate_up
        gate, up = project(self._norm(x, layer.norm2), weight, layer.gate_up_bias).chunk(2, dim=-1)
        return project_add(x, F.silu(gate) * up, layer.down, layer.down_bias)

    def _logits(self, last: torch.Tensor) -> torch.Tensor:
        h = self._norm(last, self.final_norm)
        return project(h, self.lm_head, self.lm_head_bias).float()

    # ---- continuous batching (infer/continuous.py): rows of one shared batch cache --------------------------
    def prefill_one(self, ids: torch.Tensor) -> tuple[torch.Tensor, list[torch.Tensor], list[torch.Tensor]]:
        """Run one prompt [1, n] into a cache of its own: (last logits [1, vocab], keys, values per layer).
        With a shared `prefix_cache` (a server's common system prompts) only the uncached tail is run."""
        n = ids.shape[1]
        shape = (1, self.n_kv, n, self.head_dim)
        self.keys = [torch.empty(shape, dtype=self.dtype, device=self.device) for _ in self.layers]
        self.values = [torch.empty(shape, dtype=self.dtype, device=self.device) for _ in self.layers]
        self.cached_ids, self._fed = [], []  # this cache is handed away: nothing for `start` to reuse
        tokens = ids[0].tolist() if self.prefix_cache is not None and self.short_freqs is None else None
        reuse = 0
        if tokens:
            reuse, saved_keys, saved_values = self.prefix_cache.lookup(tokens)
            reuse = min(reuse, n - 1)
            for cache, saved in zip(self.keys + self.values, (saved_keys or []) + (saved_values or [])):
                cache[:, :, :reuse] = saved[:, :, :reuse]
        hidden = self._forward(ids[:, reuse:], self.freqs[reuse:n][None], reuse, None, causal=True)
        if tokens:
            self.prefix_cache.insert(tokens, self.keys, self.values)
        return self._logits(hidden[:, -1]), self.keys, self.values

    def step_rows(self, keys: list[torch.Tensor], values: list[torch.Tensor], tokens: torch.Tensor,
                  positions: torch.Tensor, column: int, mask: torch.Tensor | None) -> torch.Tensor:
        """One token per row [n] written at `column` of the batch cache (`keys`/`values`: [n, kv, L, hd] views),
        each row at its own position; `mask` [n, 1, 1, column + 1] (boolean, or additive in the cache's dtype)
        hides the columns a row does not own, None when every row owns columns 0..column."""
        self.keys, self.values = keys, values
        self.cached_ids, self._fed = [], []  # views of the batch cache: nothing for `start` to reuse
        scripted = self._scripted_step(tokens.shape[0])
        if scripted:  # the same calls as one scripted graph
            return scripted(keys, values, tokens, positions, column, mask)
        hidden = self._forward(tokens[:, None], self.freqs[positions][:, None], column, mask, causal=False)
        return self._logits(hidden[:, -1])
