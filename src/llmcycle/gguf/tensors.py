"""HF weights and config -> GGUF tensors and hyperparameters, as llama.cpp's `convert_hf_to_gguf.py` writes them.

Llama and Mistral become llama.cpp's `llama` architecture, whose rotary embedding pairs adjacent dimensions where
HF's `rotate_half` pairs the two halves, so Q and K rows are permuted per head. Qwen2 keeps HF's layout (llama.cpp
runs it with NeoX rotary) and adds Q/K/V biases. Tied embeddings write no `output.weight`.
"""

from __future__ import annotations

from typing import Any, Iterator

import numpy as np

from llmcycle.gguf import GGUFError
from llmcycle.modeldir import context_length

GGUF_ARCH = {"llama": "llama", "mistral": "llama", "qwen2": "qwen2"}
LAYER_NAMES = {
    "input_layernorm.weight": "attn_norm.weight",
    "self_attn.q_proj.weight": "attn_q.weight",
    "self_attn.q_proj.bias": "attn_q.bias",
    "self_attn.k_proj.weight": "attn_k.weight",
    "self_attn.k_proj.bias": "attn_k.bias",
    "self_attn.v_proj.weight": "attn_v.weight",
    "self_attn.v_proj.bias": "attn_v.bias",
    "self_attn.o_proj.weight": "attn_output.weight",
    "post_attention_layernorm.weight": "ffn_norm.weight",
    "mlp.gate_proj.weight": "ffn_gate.weight",
    "mlp.up_proj.weight": "ffn_up.weight",
    "mlp.down_proj.weight": "ffn_down.weight",
}


def _rope(config: Any) -> tuple[float, dict[str, Any]]:
    params = getattr(config, "rope_parameters", None) or {}
    scaling = getattr(config, "rope_scaling", None) or {}
    theta = params.get("rope_theta", getattr(config, "rope_theta", 10000.0))
    kind = params.get("rope_type") or scaling.get("rope_type") or scaling.get("type") or "default"
    return float(theta), {**scaling, **params, "rope_type": kind}


def head_dim(config: Any) -> int:
    return int(getattr(config, "head_dim", None) or config.hidden_size // config.num_attention_heads)


def check_exportable(config: Any, where: str) -> str:
    """The GGUF architecture for `config`, or one line saying why GGUF (as llama.cpp reads it) cannot hold it."""
    model_type = getattr(config, "model_type", None)
    if model_type not in GGUF_ARCH:
        raise GGUFError(f"{where}: GGUF export supports {', '.join(GGUF_ARCH)} models, not {model_type!r}")
    _, rope = _rope(config)
    if rope["rope_type"] not in ("default", "linear"):
        raise GGUFError(f"{where}: RoPE scaling {rope['rope_type']!r} has no GGUF export here (default, linear)")
    if getattr(config, "hidden_act", "silu") != "silu":
        raise GGUFError(f"{where}: activation {config.hidden_act!r} is not llama.cpp's SiLU-gated MLP")
    if getattr(config, "mlp_bias", False):
        raise GGUFError(f"{where}: MLP biases have no place in llama.cpp's {GGUF_ARCH[model_type]} architecture")
    if model_type == "llama" and getattr(config, "attention_bias", False):
        raise GGUFError(f"{where}: attention biases are not exported for llama models")
    return GGUF_ARCH[model_type]


def write_hparams(writer: Any, config: Any) -> None:
    theta, rope = _rope(config)
    # llama.cpp's llama architecture attends over the whole context, without a sliding window: cap it there
    writer.add_context_length(context_length(config, within_window=True))
    writer.add_embedding_length(int(config.hidden_size))
    writer.add_block_count(int(config.num_hidden_layers))
    writer.add_feed_forward_length(int(config.intermediate_size))
    writer.add_head_count(int(config.num_attention_heads))
    writer.add_head_count_kv(int(getattr(config, "num_key_value_heads", None) or config.num_attention_heads))
    writer.add_key_length(head_dim(config))
    writer.add_value_length(head_dim(config))
    writer.add_rope_dimension_count(head_dim(config))
    writer.add_rope_freq_base(theta)
    writer.add_layer_norm_rms_eps(float(config.rms_norm_eps))
    writer.add_vocab_size(int(config.vocab_size))
    if rope["rope_type"] == "linear":
        from gguf import RopeScalingType

        writer.add_rope_scaling_type(RopeScalingType.LINEAR)
        writer.add_rope_scaling_factor(float(rope["factor"]))


def permute(w: np.ndarray, n_head: int) -> np.ndarray:
    """HF half-split rotary layout -> llama.cpp's interleaved one (rows of each head; works for biases too)."""
    return w.reshape(n_head, 2, w.shape[0] // n_head // 2, *w.shape[1:]).swapaxes(1, 2).reshape(w.shape)


def gguf_tensors(state: dict[str, Any], config: Any, arch: str) -> Iterator[tuple[str, np.ndarray]]:
    """(GGUF name, float32 array) in llama.cpp's order: embeddings, blocks, final norm, output head."""
    n_head = int(config.num_attention_heads)
    n_kv = int(getattr(config, "num_key_value_heads", None) or n_head)

    def get(key: str) -> np.ndarray:
        return state[key].detach().to("cpu").float().numpy()

    yield "token_embd.weight", get("model.embed_tokens.weight")
    for i in range(int(config.num_hidden_layers)):
        for hf, name in LAYER_NAMES.items():
            key = f"model.layers.{i}.{hf}"
            if key not in state:
                continue
            w = get(key)
            if arch == "llama" and name.startswith("attn_q."):
                w = permute(w, n_head)
            elif arch == "llama" and name.startswith("attn_k."):
                w = permute(w, n_kv)
            yield f"blk.{i}.{name}", w
    yield "output_norm.weight", get("model.norm.weight")
    if not getattr(config, "tie_word_embeddings", False):
        yield "output.weight", get("lm_head.weight")
