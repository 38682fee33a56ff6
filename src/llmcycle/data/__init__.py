"""The data stage: sources -> cleaning/filtering -> dedup -> grouped splits -> card. See `stage.run`."""

from llmcycle.data.config import DataConfig
from llmcycle.data.sources import source_inputs
from llmcycle.data.stage import prepare, run

__all__ = ["DataConfig", "run", "prepare", "source_inputs"]
