"""The `chat:` section of a run config: which model, how to load it, and decoding knobs (unset = model default)."""

from __future__ import annotations

from typing import Any, Optional

from pydantic import Field

from llmcycle.config import StageConfig
from llmcycle.infer.settings import KNOBS, GenerationSettings


class ChatConfig(StageConfig):
    model: Optional[str] = Field(None, description="Model dir (full, merged or adapter) or hub id.")
    system: Optional[str] = Field(None, description="System message for chat.")
    max_turns: Optional[int] = Field(None, ge=0, description="Show the model at most this many earlier turns.")
    device: str = "cpu"
    dtype: str = "auto"
    quantize: Optional[str] = Field(None, description="Weight-only quantization: bf16, int8, int4 or int4:GROUP.")
    threads: Optional[int] = Field(None, ge=1, description="CPU threads (default: torch's choice).")
    fast: bool = Field(True, description="Use our fast decode path for Llama-family models.")
    batch_size: int = Field(8, ge=1)
    seed: Optional[int] = None
    max_new_tokens: Optional[int] = None
    min_new_tokens: Optional[int] = None
    temperature: Optional[float] = None
    top_k: Optional[int] = None
    top_p: Optional[float] = None
    min_p: Optional[float] = None
    repetition_penalty: Optional[float] = None
    no_repeat_ngram_size: Optional[int] = None
    num_beams: Optional[int] = None
    length_penalty: Optional[float] = None
    do_sample: Optional[bool] = None
    stop: Optional[list[str]] = None
    stop_token_ids: Optional[list[int]] = None

    def knobs(self) -> dict[str, Any]:
        """The decoding knobs this config sets (the rest come from the model)."""
        return {k: getattr(self, k) for k in KNOBS if getattr(self, k) is not None}

    def settings_for(self, engine: Any) -> GenerationSettings:
        return GenerationSettings.from_model(engine.model, **self.knobs())
