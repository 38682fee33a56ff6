"""The typed config of the data stage (section `data:` of a run config)."""

from __future__ import annotations

from typing import Literal, Optional

from pydantic import Field, field_validator, model_validator

from llmcycle.config import StageConfig
from llmcycle.data.detect import detect_source

SOURCES = ("cornell", "chitchat", "jsonl", "text", "preference", "feedback")


class DataConfig(StageConfig):
    """Where the corpus comes from, which cleaning steps run (each on by default) and how it is split."""

    source: Literal["cornell", "chitchat", "jsonl", "text", "preference", "feedback"] = Field(
        "chitchat", description="Where the corpus comes from; left out with a `path`, read from the path's shape "
        "(.jsonl -> jsonl or preference, a folder or zip with movie_lines.txt -> cornell, .txt -> text).")
    path: Optional[str] = Field(None, description="Corpus file or folder; None = the chitchat-dataset package.")
    seed: int = 0
    val_frac: float = Field(0.05, ge=0.0, lt=1.0)
    test_frac: float = Field(0.05, ge=0.0, lt=1.0)
    limit: Optional[int] = Field(None, ge=1, description="Read only the first N source conversations/records.")
    group_by: Optional[str] = Field(None, description="meta key to group splits by (default: the source's own).")

    # source options
    cornell_assistant: Literal["first", "second", "both"] = Field(
        "second", description="Which speaker of a Cornell conversation is the assistant; both = two records."
    )
    join_with: str = Field("\n", description="Joins consecutive messages of one speaker into one turn.")
    text_chunk_chars: int = Field(4000, ge=100, description="text source: paragraphs are packed up to this size.")

    # cleaning and filtering
    normalize: bool = Field(True, description="NFKC unicode, control characters, whitespace runs.")
    turn_length: bool = Field(True, description="Drop empty/too-short turns; cut a conversation at a too-long one.")
    min_turn_chars: int = Field(1, ge=1)
    max_turn_chars: int = Field(2000, ge=1)
    conversation_length: bool = Field(True, description="Drop records with too few/too many turns or chars.")
    min_turns: int = Field(2, ge=1)
    max_turns: int = Field(256, ge=1)
    text_length: bool = Field(True, description="text source: drop records shorter than min_text_chars.")
    min_text_chars: int = Field(20, ge=1)
    pii: bool = Field(True, description="Replace emails, phone numbers, URLs and IP addresses by placeholders.")
    toxicity: bool = Field(True, description="Drop records with a severe term or too many profane words.")
    toxicity_max_ratio: float = Field(0.05, ge=0.0, le=1.0, description="Most profane words per word allowed.")
    exact_dedup: bool = True
    near_dedup: Literal["remove", "group", "off"] = Field(
        "remove", description="remove near-duplicates, or keep them but in one split (group), or off."
    )
    near_dup_threshold: float = Field(
        0.8, gt=0.0, le=1.0, description="Jaccard of word shingles from which records are near-duplicates."
    )
    minhash_perms: int = Field(128, ge=16, le=512)
    shingle_words: int = Field(3, ge=1, le=10)

    # contamination
    decontaminate: Literal["check", "drop", "off"] = Field(
        "check", description="Look for eval items in the train split (the test split, every installed benchmark, "
        "the probe prompts; 13-gram overlap, near copies, exact matches): check = count them in the card, "
        "drop = also remove those records (counted), off = skip (llmcycle.data.decontaminate).")
    decontaminate_benchmarks: Optional[list[str]] = Field(
        None, description="Benchmarks checked against (names of llmcycle.evaluate.bench); None = every installed one.")

    # bias mitigation
    counterfactual: Literal["off", "add", "swap"] = Field(
        "off", description="Counterfactual augmentation of the train split: add a gender-swapped copy of each "
        "record with gendered words or names, or swap half of them in place (llmcycle.data.augment).")

    @model_validator(mode="before")
    @classmethod
    def _source_from_path(cls, data):
        """No `source` but a `path`: the source the corpus's shape says (a .jsonl is jsonl, ...)."""
        if isinstance(data, dict) and data.get("source") is None and data.get("path"):
            detected = detect_source(str(data["path"]))
            if detected is not None:
                data = {**data, "source": detected}
        return data

    @field_validator("near_dedup", "counterfactual", "decontaminate", mode="before")
    @classmethod
    def _yaml_booleans(cls, value, info):
        """YAML reads `near_dedup: off` (and `--set near_dedup=off`) as False."""
        if isinstance(value, bool):
            on = {"near_dedup": "remove", "counterfactual": "add", "decontaminate": "check"}[info.field_name]
            return on if value else "off"
        return value

    @model_validator(mode="after")
    def _check(self) -> "DataConfig":
        if self.val_frac + self.test_frac >= 1.0:
            raise ValueError(f"val_frac + test_frac must be below 1 (got {self.val_frac} + {self.test_frac})")
        if self.min_turn_chars > self.max_turn_chars:
            raise ValueError("min_turn_chars must not exceed max_turn_chars")
        if self.min_turns > self.max_turns:
            raise ValueError("min_turns must not exceed max_turns")
        return self
