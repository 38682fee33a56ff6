"""The `chat:` section of a run config: which model, how to load it, and decoding knobs (unset = model default)."""

from __future__ import annotations

from typing import Any, Optional

from pydantic import Field

from llmcycle.infer.decoding import Decoding
from llmcycle.infer.settings import GenerationSettings


class ChatConfig(Decoding):
    """Loading and chat options; the decoding knobs come from `Decoding` (unset = the model's defaults)."""

    model: Optional[str] = Field(None, description="Model dir (full, merged or adapter) or hub id.")
    system: Optional[str] = Field(None, description="System message for chat.")
    max_turns: Optional[int] = Field(None, ge=0, description="Show the model at most this many earlier turns.")
    device: str = "cpu"
    dtype: str = "auto"
    quantize: Optional[str] = Field(None, description="Weight-only quantization: bf16, int8, int4 or int4:GROUP.")
    threads: Optional[int] = Field(None, ge=1, description="CPU threads (default: torch's choice).")
    fast: bool = Field(True, description="Use our fast decode path for Llama-family models.")
    batch_size: int = Field(8, ge=1)

    def settings_for(self, engine: Any) -> GenerationSettings:
        return GenerationSettings.from_model(engine.model, **self.knobs())
