"""Named from-scratch model presets: Llama architecture (RoPE, RMSNorm, SwiGLU, grouped-query attention) built from
a transformers `LlamaConfig`, so what we pretrain is an ordinary HF model every later stage and tool can load.

Parameter counts below are for the 8192-token vocabulary of our default tokenizer, with tied input/output
embeddings ("body" = everything but the embedding, which is vocab x hidden):

| preset  | hidden | layers | heads (kv) | ffn  | context | body params | total (vocab 8192) |
|---------|--------|--------|------------|------|---------|-------------|--------------------|
| tiny    | 64     | 2      | 4 (2)      | 128  | 256     | 74k         | 0.60M              |
| default | 128    | 4      | 4 (2)      | 352  | 512     | 0.74M       | 1.79M              |
| small   | 512    | 8      | 8 (4)      | 1408 | 1024    | 23.6M       | 27.8M              |
| medium  | 768    | 12     | 12 (4)     | 2048 | 2048    | 75.5M       | 81.8M              |
| large   | 1024   | 24     | 16 (8)     | 2816 | 2048    | 283M        | 292M               |

`tiny` trains in seconds (tests); `default` is sized by measurement for the default run's few minutes of pretraining
on 2 CPU cores: at equal compute time it reached a lower validation perplexity than wider or deeper shapes, 3.2M
and 5.05M parameters included (`bench/model_size_bench.py`; far from convergence, more steps beat more
parameters); `small` and up are for GPUs.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from llmcycle.building import BUILD_LOCK
from llmcycle.errors import ConfigError


@dataclass(frozen=True)
class Preset:
    hidden: int
    layers: int
    heads: int
    kv_heads: int
    ffn: int
    context: int
    tie_embeddings: bool = True
    rope_theta: float = 10_000.0


PRESETS: dict[str, Preset] = {
    "tiny": Preset(hidden=64, layers=2, heads=4, kv_heads=2, ffn=128, context=256),
    "default": Preset(hidden=128, layers=4, heads=4, kv_heads=2, ffn=352, context=512),
    "small": Preset(hidden=512, layers=8, heads=8, kv_heads=4, ffn=1408, context=1024),
    "medium": Preset(hidden=768, layers=12, heads=12, kv_heads=4, ffn=2048, context=2048),
    "large": Preset(hidden=1024, layers=24, heads=16, kv_heads=8, ffn=2816, context=2048, rope_theta=500_000.0),
}


def get_preset(name: str) -> Preset:
    if name not in PRESETS:
        raise ConfigError(f"preset: unknown model preset {name!r} (choose from {', '.join(PRESETS)})")
    return PRESETS[name]


def body_params(p: Preset) -> int:
    """Parameters outside the embedding: attention, SwiGLU and the RMSNorm weights."""
    head_dim = p.hidden // p.heads
    attention = 2 * p.hidden * p.hidden + 2 * p.hidden * p.kv_heads * head_dim
    mlp = 3 * p.hidden * p.ffn
    return p.layers * (attention + mlp + 2 * p.hidden) + p.hidden


def llama_config(preset: str | Preset, vocab_size: int, bos_id: int | None = None, eos_id: Any = None,
                 pad_id: int | None = None):
    from transformers import LlamaConfig

    p = get_preset(preset) if isinstance(preset, str) else preset
    return LlamaConfig(
        vocab_size=vocab_size, hidden_size=p.hidden, intermediate_size=p.ffn, num_hidden_layers=p.layers,
        num_attention_heads=p.heads, num_key_value_heads=p.kv_heads, max_position_embeddings=p.context,
        rope_theta=p.rope_theta, tie_word_embeddings=p.tie_embeddings, rms_norm_eps=1e-5,
        bos_token_id=bos_id, eos_token_id=eos_id, pad_token_id=pad_id, attention_bias=False, mlp_bias=False,
    )


def build_model(preset: str, tokenizer, seed: int = 0):
    """A randomly initialised (seeded) Llama-architecture causal LM sized by `preset`, for this tokenizer."""
    import torch
    from transformers import AutoModelForCausalLM

    cfg = llama_config(preset, len(tokenizer), tokenizer.bos_token_id, tokenizer.eos_token_id,
                       tokenizer.pad_token_id)
    with BUILD_LOCK:  # the seed too: another builder drawing from the global generator would change the weights
        torch.manual_seed(seed)
        return AutoModelForCausalLM.from_config(cfg, dtype=torch.float32, attn_implementation="sdpa")
