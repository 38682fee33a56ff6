"""Our own forward pass for Llama-family decoders (Llama, Mistral, Qwen2, Phi-3) over the HF model's weights.

Why: at batch 1 a small model's decode speed is set by per-token Python and dispatch cost, not arithmetic. So each
layer is a handful of ATen calls on weights prepared once:
- q/k/v (and gate/up) weights concatenated, so one matmul each (Phi-3 already ships them fused);
- the rows of q and k permuted within each head so rotary embedding is one complex multiply (attention scores
  are unchanged because q and k get the same permutation); partial rotary = factor 1 on the unrotated pairs;
- a KV cache preallocated for the whole request, written in place; the rotary table computed once by the model's
  own rotary module, so every rope variant that depends only on the position is exact.
What remains at batch 1 on CPU is memory traffic: the `default` preset streams ~20 MB of fp32 weights per token
(the 8 MB tied output head alone), which bounds decode near 1 ms/token on our CPU; `--quantize int8` quarters the
bytes. torch.compile measured slower here (dynamic shapes, ~25 s compile), so it is not used.
Anything we do not reproduce exactly (rope that depends on sequence length, sliding windows shorter than the
context, other activations, quantized or adapter-wrapped modules) makes `from_hf` return None: the engine then
uses the transformers forward instead.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import torch
import torch.nn.functional as F

SUPPORTED = {"llama", "mistral", "qwen2", "phi3"}
POSITION_ONLY_ROPE = {"default", "linear", "llama3", "yarn"}


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


def _unsupported_reason(model: Any) -> str | None:
    config = getattr(model, "config", None)
    if getattr(config, "model_type", None) not in SUPPORTED:
        return f"architecture {getattr(config, 'model_type', None)!r}"
    inner = getattr(model, "model", None)
    if inner is None or not hasattr(inner, "layers") or not hasattr(model, "lm_head"):
        return "unexpected module layout"
    if getattr(config, "hidden_act", "silu") != "silu":
        return f"activation {config.hidden_act}"
    rope_type = getattr(getattr(inner, "rotary_emb", None), "rope_type", None)
    if rope_type not in POSITION_ONLY_ROPE:
        return f"rope type {rope_type!r}"
    window = getattr(config, "sliding_window", None) if config.model_type in ("mistral", "phi3") else None
    windows = [window] + [getattr(layer.self_attn, "sliding_window", None) for layer in inner.layers]
    if any(w is not None and w < config.max_position_embeddings for w in windows):
        return "sliding-window attention"
    if any(type(m).__name__ != "Linear" or type(m).__module__ != "torch.nn.modules.linear"
           for m in [model.lm_head] + [m for m in inner.layers.modules() if "Linear" in type(m).__name__]):
        return "non-standard linear layers (quantized or adapters)"
    if not _copies_fit(model):
        return "not enough free memory for a second copy of the weights"
    return None


def _copies_fit(model: Any) -> bool:
    """Our fused, transposed weights are a second copy: on CPU allow it only within half the free memory."""
    if model.device.type != "cpu":
        return True
    size = sum(p.numel() * p.element_size() for p in model.parameters())
    try:
        with open("/proc/meminfo", encoding="ascii") as fh:
            free_kb = next(int(line.split()[1]) for line in fh if line.startswith("MemAvailable:"))
    except (OSError, StopIteration, ValueError):
        return True
    return size <= free_kb * 1024 // 2


def _interleave_permutation(head_dim: int, rotary_dim: int) -> torch.Tensor:
    """New order of one head's dims: rotary pairs (i, i + rotary/2) adjacent, then the unrotated dims."""
    half = rotary_dim // 2
    pairs = torch.stack([torch.arange(half), torch.arange(half) + half], dim=1).reshape(-1)
    return torch.cat([pairs, torch.arange(rotary_dim, head_dim)])


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
        self.freqs = self._rope_table(inner.rotary_emb)
        perm = _interleave_permutation(self.head_dim, self._rotary_dim)
        self.layers = [self._layer(layer, perm) for layer in inner.layers]

    @classmethod
    def from_hf(cls, model: Any) -> "FastLlama | None":
        """Our backend for `model`, or None when it is not an architecture we reproduce exactly."""
        if _unsupported_reason(model) is not None:
            return None
        with torch.no_grad():
            return cls(model)

    # ---- weight preparation -----------------------------------------------------------------------------
    def _rope_table(self, rotary: Any) -> torch.Tensor:
        """complex [positions, head_dim/2]: the model's own cos/sin (attention scaling included), 1 where unrotated."""
        positions = torch.arange(self.max_positions, device=self.device)[None]
        probe = torch.zeros(1, device=self.device, dtype=torch.float32)
        cos, sin = rotary(probe, positions)
        cos, sin = cos[0].float(), sin[0].float()
        self._rotary_dim = cos.shape[-1]
        half = self._rotary_dim // 2
        table = torch.ones(self.max_positions, self.head_dim // 2, dtype=torch.complex64, device=self.device)
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
        self._reserve_cache(batch, length)
        self.slot = width
        padded = bool((attention_mask == 0).any())
        positions = (attention_mask.cumsum(-1) - 1).clamp(min=0)
        self.next_position = positions[:, -1] + 1
        self.attend = None
        prefill_mask = None
        if padded:
            self.attend = torch.ones(batch, 1, 1, length, dtype=torch.bool, device=self.device)
            self.attend[:, 0, 0, :width] = attention_mask.bool()
            causal = torch.ones(width, width, dtype=torch.bool, device=self.device).tril()
            prefill_mask = causal[None, None] & attention_mask.bool()[:, None, None, :]
            # rows that are all padding (a pad query) attend to themselves, so softmax stays finite
            prefill_mask = prefill_mask | torch.eye(width, dtype=torch.bool, device=self.device)[None, None]
        hidden = self._forward(input_ids, self.freqs[positions], 0, prefill_mask, causal=not padded)
        return self._logits(hidden[:, -1])

    def _reserve_cache(self, batch: int, length: int) -> None:
        """The KV cache for a request: the previous one when it is big enough (a chat reuses it every turn).
        No clearing is needed: a request reads only the slots it has written."""
        keys = getattr(self, "keys", None)
        if keys and keys[0].shape[0] == batch and keys[0].shape[2] >= length:
            return
        self.keys = self.values = []  # free the old cache before allocating the new one
        shape = (batch, self.n_kv, length, self.head_dim)
        self.keys = [torch.empty(shape, dtype=self.dtype, device=self.device) for _ in self.layers]
        self.values = [torch.empty(shape, dtype=self.dtype, device=self.device) for _ in self.layers]

    def step(self, tokens: torch.Tensor) -> torch.Tensor:
        slot = self.slot
        if self.attend is None:
            freqs = self.freqs[slot:slot + 1][None]
            mask = None
        else:
            freqs = self.freqs[self.next_position][:, None]
            self.next_position += 1
            mask = self.attend[..., :slot + 1]
        hidden = self._forward(tokens[:, None], freqs, slot, mask, causal=False)
        self.slot = slot + 1
        return self._logits(hidden[:, -1])

    def quantize_int8(self) -> None:
        """Replace every projection (and the output head) by a dynamically quantized int8 Linear."""
        import torch.nn as nn

        from llmcycle.infer.quantize import quantize_linears

        def linear(weight_t: torch.Tensor, bias: torch.Tensor | None) -> nn.Module:
            module = nn.Linear(weight_t.shape[0], weight_t.shape[1], bias=bias is not None)
            module.weight.data = weight_t.t().contiguous().float()
            if bias is not None:
                module.bias.data = bias.float()
            quantized = quantize_linears(nn.Sequential(module))[0]  # only children are swapped
            if type(quantized) is nn.Linear:
                raise RuntimeError("int8 dynamic quantization left a float Linear")
            return quantized

        with torch.no_grad():
            for layer in self.layers:
                for name in ("qkv", "out", "gate_up", "down"):
                    bias_name = f"{name}_bias"
                    setattr(layer, name, linear(getattr(layer, name), getattr(layer, bias_name)))
                    setattr(layer, bias_name, None)
            self.lm_head = linear(self.lm_head, self.lm_head_bias)
            self.lm_head_bias = None

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
        full_precision = self.dtype == torch.float32
        x = F.embedding(ids.reshape(-1), self.embed)
        for layer, keys, values in zip(self.layers, self.keys, self.values):
            h = self._norm(x, layer.norm1)
            qkv = _project(h, layer.qkv, layer.qkv_bias)
            qk = qkv[:, :qk_cols] if full_precision else qkv[:, :qk_cols].float()
            qk = torch.view_as_complex(qk.reshape(batch, new, -1, self.head_dim // 2, 2))
            qk = torch.view_as_real(qk * freqs).reshape(batch, new, -1, self.head_dim)
            qk = qk if full_precision else qk.to(self.dtype)
            keys[:, :, start:end] = qk[:, :, self.n_heads:].transpose(1, 2)
            values[:, :, start:end] = qkv[:, qk_cols:].reshape(batch, new, self.n_kv, self.head_dim).transpose(1, 2)
            att = F.scaled_dot_product_attention(qk[:, :, :self.n_heads].transpose(1, 2), keys[:, :, :end],
                                                 values[:, :, :end], attn_mask=mask, is_causal=causal and new > 1,
                                                 scale=self.scaling, enable_gqa=self.n_kv != self.n_heads)
            x = _project_add(x, att.transpose(1, 2).reshape(batch * new, -1), layer.out, layer.out_bias)
            gate, up = _project(self._norm(x, layer.norm2), layer.gate_up, layer.gate_up_bias).chunk(2, dim=-1)
            x = _project_add(x, F.silu(gate) * up, layer.down, layer.down_bias)
        return x.view(batch, new, -1)

    def _logits(self, last: torch.Tensor) -> torch.Tensor:
        h = self._norm(last, self.final_norm)
        return _project(h, self.lm_head, self.lm_head_bias).float()

    # ---- continuous batching (infer/continuous.py): rows of one shared batch cache --------------------------
    def prefill_one(self, ids: torch.Tensor) -> tuple[torch.Tensor, list[torch.Tensor], list[torch.Tensor]]:
        """Run one prompt [1, n] into a cache of its own: (last logits [1, vocab], keys, values per layer)."""
        n = ids.shape[1]
        shape = (1, self.n_kv, n, self.head_dim)
        self.keys = [torch.empty(shape, dtype=self.dtype, device=self.device) for _ in self.layers]
        self.values = [torch.empty(shape, dtype=self.dtype, device=self.device) for _ in self.layers]
        hidden = self._forward(ids, self.freqs[:n][None], 0, None, causal=True)
        return self._logits(hidden[:, -1]), self.keys, self.values

    def step_rows(self, keys: list[torch.Tensor], values: list[torch.Tensor], tokens: torch.Tensor,
                  positions: torch.Tensor, column: int, mask: torch.Tensor) -> torch.Tensor:
        """One token per row [n] written at `column` of the batch cache (`keys`/`values`: [n, kv, L, hd] views),
        each row at its own position; `mask` [n, 1, 1, column + 1] hides the columns a row does not own."""
        self.keys, self.values = keys, values
        hidden = self._forward(tokens[:, None], self.freqs[positions][:, None], column, mask, causal=False)
        return self._logits(hidden[:, -1])


def _project(x: torch.Tensor, weight: Any, bias: torch.Tensor | None = None) -> torch.Tensor:
    """x @ weight (+ bias) for a transposed float weight; a quantized Linear module is called instead."""
    if type(weight) is not torch.Tensor:
        return weight(x)
    return x @ weight if bias is None else torch.addmm(bias, x, weight)


def _project_add(residual: torch.Tensor, x: torch.Tensor, weight: Any, bias: torch.Tensor | None = None
                 ) -> torch.Tensor:
    """residual + x @ weight (+ bias), the add fused into the matmul where the weight is a float tensor."""
    if type(weight) is not torch.Tensor:
        return residual + weight(x)
    out = torch.addmm(residual, x, weight)
    return out if bias is None else out + bias
