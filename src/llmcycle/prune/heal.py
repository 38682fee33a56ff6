"""Healing: a short LoRA run on the pruned model over the data dir, merged back into plain weights.

Structured pruning removes capacity the remaining weights were tuned around; a few dozen adapter steps recover much
of the lost perplexity. Two objectives:

- `distill` (default): the unpruned model is the teacher and the loss is KL(teacher || student) on the data's
  assistant tokens, the recipe of pruned-and-distilled model families (Minitron, Sheared-LLaMA). The target is the
  original model's own behaviour, so a heal cannot pass off adaptation to the data's domain as repair: the healed
  model is compared with the original, as it should be.
- `sft`: cross-entropy on the data's replies. Also adapts the model to that data, so compare it with the unpruned
  model fine-tuned the same way, not with the original.

Both are the ordinary `distill` / `finetune` stages run as functions.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from llmcycle.artifacts import read_manifest
from llmcycle.loading import load_model
from llmcycle.prune.config import PruneConfig
from llmcycle.train.distill import DistillConfig
from llmcycle.train.distill import run as distill
from llmcycle.train.finetune import FinetuneConfig, FinetuneLoopConfig
from llmcycle.train.finetune import run as finetune


def heal(pruned_dir: Path, data_dir: Path, cfg: PruneConfig, work: Path, teacher_dir: Path) -> tuple[Any, dict]:
    """LoRA-train `cfg.heal_steps` steps on DATA_DIR's chat records from PRUNED_DIR (`cfg.heal_objective`, the
    teacher being TEACHER_DIR, the unpruned model); the merged model (fp32) and the run's metrics (val loss, and
    the KL to the teacher before and after when distilling)."""
    steps = cfg.heal_steps
    val_split = "val" if (Path(data_dir) / "val.jsonl").is_file() else None
    loop = FinetuneLoopConfig(max_steps=steps, eval_every=steps, save_every=steps, warmup_steps=min(5, steps - 1),
                              batch_size=cfg.heal_batch_size)
    if cfg.heal_objective == "distill":
        teach = DistillConfig(mode="logit", alpha=1.0, tuning="lora", train=loop, max_seq_len=cfg.heal_seq_len,
                              seed=cfg.seed, val_split=val_split)
        adapter = distill(teach, data_dir, teacher_dir, pruned_dir, work / "adapter")
    else:
        tune = FinetuneConfig(method="lora", train=loop, seed=cfg.seed, max_seq_len=cfg.heal_seq_len,
                              val_split=val_split)
        adapter = finetune(tune, data_dir, pruned_dir, work / "adapter")
    metrics = read_manifest(adapter).get("metrics", {})
    kept = ("kl_to_teacher_before", "kl_to_teacher", "val_loss", "train_loss", "steps")
    report = {"objective": cfg.heal_objective, **{k: metrics[k] for k in kept if k in metrics}}
    return load_model(adapter, dtype="fp32", merge=True), report
