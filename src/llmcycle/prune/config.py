"""The prune stage's typed config."""

from __future__ import annotations

import re
from typing import Literal

from pydantic import Field, field_validator

from llmcycle.config import StageConfig

NM_PATTERN = re.compile(r"^(\d+):(\d+)$")


class PruneConfig(StageConfig):
    """What to remove and how to score it.

    `pattern`: "unstructured" zeroes the lowest-scored `sparsity` share of every row of every decoder Linear;
    "N:M" (e.g. "2:4") zeroes M-N of every M consecutive input weights (sparsity is then (M-N)/M); "structured"
    removes the lowest-scored `sparsity` share of MLP channels and `heads` share of query heads, the same number in
    every layer and in every KV group, and the `layers` share of whole layers, so the result is an ordinary (smaller,
    shallower) model of the same architecture.
    """

    method: Literal["magnitude", "wanda"] = "wanda"
    pattern: str = "unstructured"
    sparsity: float = Field(0.5, gt=0.0, lt=1.0)
    heads: float = Field(0.0, ge=0.0, lt=1.0)
    layers: float = Field(0.0, ge=0.0, lt=1.0, description="Share of whole decoder layers removed (structured only): "
                          "those that change their input least on the calibration text (ShortGPT's Block Influence).")
    channel_multiple: int = Field(32, ge=1)  # kept MLP channels: a multiple of this (GGUF quant blocks are 32 wide)
    calibration_samples: int = Field(32, ge=1)
    calibration_length: int = Field(256, ge=8)
    calibration_split: str = "train"
    heal_steps: int = Field(0, ge=0)  # a short LoRA fine-tune on the data dir after structured pruning; 0: none
    heal_objective: Literal["distill", "sft"] = Field(
        "distill", description="distill: the pruned model learns the unpruned one's next-token distributions on "
        "the data's text (repairs the cut without adapting to the data's domain); sft: cross-entropy on the data's "
        "replies.")
    heal_batch_size: int = Field(4, ge=1)
    heal_seq_len: int = Field(256, ge=16)  # short rows: a heal is minutes on a CPU, not an epoch
    seed: int = 0

    @field_validator("pattern")
    @classmethod
    def _known_pattern(cls, value: str) -> str:
        if value in ("unstructured", "structured"):
            return value
        match = NM_PATTERN.match(value)
        if not match or not 0 < int(match.group(1)) < int(match.group(2)):
            raise ValueError(f"{value!r} is not unstructured, structured or N:M with 0 < N < M (e.g. 2:4)")
        return value

    def n_m(self) -> tuple[int, int] | None:
        """(N, M) for an N:M pattern, else None."""
        match = NM_PATTERN.match(self.pattern)
        return (int(match.group(1)), int(match.group(2))) if match else None

    def target_sparsity(self) -> float:
        nm = self.n_m()
        return (nm[1] - nm[0]) / nm[1] if nm else self.sparsity

