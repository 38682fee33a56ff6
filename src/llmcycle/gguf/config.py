"""The export stage's typed config (the run config's `export:` section)."""

from __future__ import annotations

from pydantic import Field, field_validator

from llmcycle.config import StageConfig
from llmcycle.gguf import QUANTS


class ExportConfig(StageConfig):
    format: str = Field("gguf", description="Only gguf for now.")
    quant: str = Field("f16", description=f"GGUF weight type: {', '.join(QUANTS)}.")

    @field_validator("format")
    @classmethod
    def _format(cls, value: str) -> str:
        if value != "gguf":
            raise ValueError(f"unknown export format {value!r} (use gguf)")
        return value

    @field_validator("quant")
    @classmethod
    def _quant(cls, value: str) -> str:
        if value not in QUANTS:
            raise ValueError(f"unknown quant type {value!r} (use {', '.join(QUANTS)})")
        return value
