"""The synth stage's typed config."""

from __future__ import annotations

from typing import Optional

from pydantic import Field

from llmcycle.config import StageConfig
from llmcycle.data.config import DataConfig


def default_filters() -> DataConfig:
    """The data stage's steps with a teacher's records in mind: eval items are dropped, not only counted."""
    return DataConfig(source="jsonl", decontaminate="drop")


class SynthConfig(StageConfig):
    """Where the teacher is, what it is asked about, and how hard the new prompts must differ from each other."""

    teacher: Optional[str] = Field(None, description="A model dir, a .gguf file, a named GGUF base or an "
                                   "OpenAI-compatible base URL (http://host:port, llmcycle serve included).")
    teacher_model: str = Field("teacher", description="The model name sent to a server teacher.")
    api_key_env: Optional[str] = Field(None, description="Environment variable holding a server teacher's API key.")
    topics: list[str] = Field(default_factory=list, description="Subjects the new prompts are about.")
    seed_prompts: list[str] = Field(default_factory=list, description="Example prompts shown to the teacher.")
    records: int = Field(64, ge=1, description="Conversations to aim for (before the filters).")
    max_calls: Optional[int] = Field(None, ge=1, description="Most prompt-writing calls (default 4 x records).")
    batch_size: int = Field(8, ge=1, description="Teacher requests sent together.")
    examples_per_call: int = Field(3, ge=0, description="Example prompts shown in each prompt-writing call.")
    max_similarity: float = Field(0.7, gt=0.0, le=1.0, description="A new prompt whose ROUGE-L with any kept one "
                                  "reaches this is dropped (self-instruct's diversity rule).")
    min_prompt_chars: int = Field(8, ge=1)
    max_prompt_chars: int = Field(500, ge=1)
    prompt_temperature: float = Field(1.0, ge=0.0)
    answer_temperature: float = Field(0.7, ge=0.0)
    max_new_tokens: int = Field(256, ge=1)
    timeout_s: float = Field(120.0, gt=0, description="Per request to a server teacher.")
    seed: int = 0
    filters: DataConfig = Field(default_factory=default_filters, description="The data stage's cleaning, dedup, "
                                "decontamination and split settings (its source fields are unused).")
