"""Pruning: make a model sparser (unstructured, N:M semi-structured) or really smaller (structured: attention heads
and MLP channels removed, Linear shapes and config rewritten), scoring weights by magnitude or by Wanda
(|W| times the norm of the input activations seen on a few batches of calibration text).

`run(cfg, model_dir, data_dir, out)` writes an ordinary HF model dir (safetensors, config, tokenizer, generation
config) with a manifest, atomically.
"""

from llmcycle.prune.config import PruneConfig
from llmcycle.prune.stage import run

__all__ = ["PruneConfig", "run"]
