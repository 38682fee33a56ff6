"""Healing: a short LoRA fine-tune of the pruned model on the data dir, merged back into plain weights.

Structured pruning removes capacity the remaining weights were tuned around; a few hundred adapter steps on real
data recover much of the lost perplexity. This is the ordinary `finetune` stage run as a function.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from llmcycle.loading import load_model
from llmcycle.prune.config import PruneConfig
from llmcycle.train.finetune import FinetuneConfig, FinetuneLoopConfig
from llmcycle.train.finetune import run as finetune


def heal(pruned_dir: Path, data_dir: Path, cfg: PruneConfig, work: Path) -> Any:
    """LoRA-train `cfg.heal_steps` steps on DATA_DIR's chat records from PRUNED_DIR; the merged model (fp32)."""
    steps = cfg.heal_steps
    has_val = (Path(data_dir) / "val.jsonl").is_file()
    loop = FinetuneLoopConfig(max_steps=steps, eval_every=steps, save_every=steps, warmup_steps=min(5, steps - 1),
                              batch_size=cfg.heal_batch_size)
    tune = FinetuneConfig(method="lora", train=loop, seed=cfg.seed, max_seq_len=cfg.heal_seq_len,
                          val_split="val" if has_val else None)
    adapter = finetune(tune, data_dir, pruned_dir, work / "adapter")
    return load_model(adapter, dtype="fp32", merge=True)
