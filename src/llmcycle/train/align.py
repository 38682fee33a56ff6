"""The `align` stage: preference optimisation (DPO, KTO, ORPO) of a chat model, LoRA or full, in the shared loop.

Sequences are rendered and masked exactly as in SFT (`sft_data.tokenize_with_mask`: assistant tokens plus their
end-of-turn), then only the reply to the prompt is kept as the completion. The reference is the base with the adapter
disabled (LoRA) or the model before its first update (full); either way its log-probs are computed once before
training and saved in the work dir, so memory does not double, resume sees the same numbers, and a step costs one
forward and backward. `method: grpo` hands over to `grpo.py` (online rollouts).
"""

from __future__ import annotations

import itertools
import math
from pathlib import Path
from typing import Any, Optional

import torch

from llmcycle.artifacts import open_artifact
from llmcycle.config import to_dict
from llmcycle.progress import say
from llmcycle.train import grpo
from llmcycle.train.align_config import AlignConfig, AlignLoopConfig, GRPOOptions, Method
from llmcycle.train.batches.preference import PreferenceData, encode, has_pairs, read_records
from llmcycle.train.finetune import fmt
from llmcycle.train.loop import train_loop
from llmcycle.train.objectives import Preference, sequence_logps
from llmcycle.train.policy import load_policy, prepare_tokenizer, resolve_base, save_policy

__all__ = ["AlignConfig", "AlignLoopConfig", "GRPOOptions", "Method", "encode", "load_policy", "margins", "run"]


def margins(model: Any, data: PreferenceData, batch_size: int, limit: Optional[int]) -> dict[str, float]:
    """Implicit reward margin (chosen minus rejected log-ratio to the reference) and preference accuracy on pairs."""
    if data.method == "kto" or not data.rows:
        return {}
    deltas: list[float] = []
    model.eval()
    with torch.no_grad():
        for batch in itertools.islice(data.batches(batch_size, None), limit):
            logps, _ = sequence_logps(model, batch)
            chosen, rejected = (logps - batch["ref_logps"]).chunk(2)
            deltas += (chosen - rejected).tolist()
    model.train()
    mean = sum(deltas) / len(deltas)
    spread = sum((d - mean) ** 2 for d in deltas) / max(1, len(deltas) - 1)
    return {"margin": mean, "pair_accuracy": sum(d > 0 for d in deltas) / len(deltas),
            "margin_se": math.sqrt(spread / len(deltas)), "pairs": len(deltas)}


def run(cfg: AlignConfig, data_dir: str | Path, base: str | Path, out: str | Path, resume: bool = False) -> Path:
    """The `align` stage: DATA_DIR (preference records) + BASE (a full chat model) -> OUT (adapter or model dir)."""
    if cfg.method == "grpo":
        return grpo.run(cfg, data_dir, base, out, resume=resume)
    base_id = resolve_base(base)
    tokenizer, _ = prepare_tokenizer(base_id)
    kinds = ("paired", "unpaired") if cfg.method == "kto" else ("paired",)
    train_data = PreferenceData(cfg.method, tokenizer, read_records(data_dir, cfg.train_split, kinds,
                                cfg.max_train_records), cfg.max_seq_len, f"{data_dir}/{cfg.train_split}")
    val_data = None
    if cfg.val_split and (Path(data_dir) / f"{cfg.val_split}.jsonl").is_file():
        val_records = read_records(data_dir, cfg.val_split, ("paired",), cfg.max_val_records) \
            if has_pairs(data_dir, cfg.val_split) else []
        val_data = PreferenceData("dpo", tokenizer, val_records, cfg.max_seq_len, f"{data_dir}/{cfg.val_split}") \
            if val_records else None
    model = load_policy(cfg, base_id, tokenizer)
    objective = Preference(cfg.method, cfg.beta, cfg.label_smoothing, cfg.desirable_weight, cfg.undesirable_weight)
    loop = cfg.train.model_copy(update={"seed": cfg.seed})
    with open_artifact(out, "align", to_dict(cfg), {"data": data_dir, "base": base_id},
                       resumable=True, resume=resume) as art:
        for name, data in (("train", train_data), ("val", val_data)):
            if data is not None:
                data.compute_reference(model, loop.batch_size, art.dir / f"reference_logps_{name}.json")
        val_batches = (lambda: val_data.batches(loop.batch_size, None)) if val_data and cfg.method != "kto" else None
        result = train_loop(model, lambda epoch: train_data.batches(loop.batch_size, cfg.seed * 1_000_003 + epoch),
                            val_batches, loop, art.dir, resume=resume, desc=f"align ({cfg.method}, {cfg.tuning})",
                            objective=objective, rows=len(train_data.rows))
        after = margins(model, val_data or train_data, loop.batch_size, loop.eval_batches)
        before = {k: 0.0 for k in after}  # before any update the policy is the reference: no margin, no pair won
        save_policy(model, tokenizer, base_id, art.dir, adapter=cfg.tuning == "lora")
        art.metrics = {"steps": result.steps, "tokens": result.tokens, "train_loss": result.train_loss,
                       "val_loss": result.val_loss, "val_loss_batches": result.val_rows,
                       "tokens_per_s": round(result.tokens_per_s, 1), "seconds": round(result.seconds, 2),
                       **{f"{k}_before": v for k, v in before.items()}, **{f"{k}_after": v for k, v in after.items()}}
        art.extra = {"method": cfg.method, "tuning": cfg.tuning, "base": base_id, "pairs_or_rows": len(train_data.rows),
                     "epochs": round(result.steps * loop.batch_size * loop.grad_accum / max(1, len(train_data.rows)),
                                     2),
                     "margins_on": "val" if val_data else "train"}
    say(f"align: wrote {out} ({cfg.method}; margin {fmt(before.get('margin'))} -> {fmt(after.get('margin'))})")
    return Path(out)


