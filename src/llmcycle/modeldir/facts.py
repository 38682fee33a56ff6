"""Facts read off a model's config: how many positions it has (context length) and the dtype it stores weights in.

One rule each, so the engine, eval, perplexity, fine-tuning and GGUF export agree on a model's context.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any, Optional

POSITION_KEYS = ("max_position_embeddings", "n_positions", "max_seq_len", "seq_length")
DTYPE_NAMES = {"bfloat16": "bf16", "float16": "fp16", "float32": "fp32"}


def sliding_window(config: Any) -> Optional[int]:
    """The attention window every layer shares, when the config turns one on (`use_sliding_window` not False) and it
    is shorter than the positions the model has; None otherwise."""
    window = getattr(config, "sliding_window", None) if getattr(config, "use_sliding_window", True) else None
    if not isinstance(window, int) or window <= 0:
        return None
    positions = _positions(config)
    return window if positions is None or window < positions else None


def context_length(config: Any, default: int = 2048, *, within_window: bool = False) -> int:
    """The positions a model has: the first of max_position_embeddings / n_positions / max_seq_len / seq_length that
    is a positive int, else `default`. A model (anything with `.config`) may stand for its config.

    `within_window=True` caps it at the sliding window, for consumers that attend over the whole context with no
    window (llama.cpp's llama architecture, which GGUF export targets)."""
    if not any(isinstance(getattr(config, k, None), int) for k in POSITION_KEYS) and hasattr(config, "config"):
        config = config.config
    length = _positions(config) or int(default)
    window = sliding_window(config) if within_window else None
    return min(length, window) if window else length


def _positions(config: Any) -> Optional[int]:
    for name in POSITION_KEYS:
        value = getattr(config, name, None)
        if isinstance(value, int) and not isinstance(value, bool) and value > 0:
            return value
    return None


def base_dtype_name(base: str) -> str:
    """The dtype the base stores its weights in (config.json `dtype`/`torch_dtype`), fp32 when unknown."""
    file = Path(base) / "config.json"
    raw = None
    if file.is_file():
        try:
            config = json.loads(file.read_text(encoding="utf-8"))
            raw = config.get("dtype") or config.get("torch_dtype")
        except (OSError, json.JSONDecodeError):
            raw = None
    else:
        try:
            from transformers import AutoConfig  # heavy: only a hub id without a local config.json needs it

            config = AutoConfig.from_pretrained(base)
            raw = str(getattr(config, "dtype", None) or "").replace("torch.", "")
        except Exception:  # an unreachable hub id: fall back to fp32, which loses nothing
            raw = None
    return DTYPE_NAMES.get(str(raw), "fp32")
