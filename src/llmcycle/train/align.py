"""The `align` stage: preference optimisation (DPO, KTO, ORPO) of a chat model, LoRA or full, in the shared loop.

Sequences are rendered and masked exactly as in SFT (`sft_data.tokenize_with_mask`: assistant tokens plus their
end-of-turn), then only the reply to the prompt is kept as the completion. The reference is the base with the adapter
disabled (LoRA) or the model before its first update (full); either way its log-probs are computed once before
training and saved in the work dir, so memory does not double, resume sees the same numbers, and a step costs one
forward and backward. `method: grpo` hands over to `grpo.py` (online rollouts).
"""

from __future__ import annotations

import json
import random
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal, Optional

from pydantic import Field

from llmcycle.artifacts import open_artifact
from llmcycle.config import StageConfig, to_dict
from llmcycle.errors import ConfigError, DataError
from llmcycle.progress import bar, say
from llmcycle.train.finetune import LoraOptions, fmt, prepare_tokenizer, resolve_base
from llmcycle.train.loop import LoopConfig, train_loop
from llmcycle.train.onpolicy import OnPolicyConfig

Method = Literal["dpo", "kto", "orpo", "grpo"]


class AlignLoopConfig(LoopConfig):
    max_steps: int = Field(50, ge=1)
    batch_size: int = Field(4, ge=1, description="Pairs (KTO: rows) per micro-batch.")
    lr: float = Field(5e-5, gt=0)
    warmup_steps: int = Field(2, ge=0)
    weight_decay: float = Field(0.0, ge=0)
    eval_every: int = Field(25, ge=1)
    eval_batches: Optional[int] = Field(8, ge=1)
    log_every: int = Field(5, ge=1)
    save_every: int = Field(25, ge=1)


class GRPOOptions(StageConfig):
    group_size: int = Field(4, ge=2, description="Replies sampled per prompt.")
    prompts_per_step: int = Field(2, ge=1)
    max_new_tokens: int = Field(32, ge=1)
    temperature: float = Field(1.0, gt=0)
    rewards: list[str] = Field(default_factory=lambda: ["length", "repetition", "moderation"],
                               description="Rule rewards (length, repetition, moderation) and/or 'model'.")
    target_words: int = Field(12, ge=1, description="The length rule rewards replies near this many words.")
    reward_model: Optional[str] = Field(None, description="Reward model dir (llmcycle reward) for 'model'.")


class AlignConfig(StageConfig):
    method: Method = "dpo"
    tuning: Literal["lora", "full"] = Field("lora", description="Train a LoRA adapter, or every weight.")
    beta: float = Field(0.1, gt=0, description="DPO/KTO temperature; ORPO's odds-ratio weight (lambda); GRPO's KL.")
    label_smoothing: float = Field(0.0, ge=0, lt=0.5, description="DPO: conservative DPO's label noise.")
    desirable_weight: float = Field(1.0, gt=0, description="KTO: weight of desirable rows.")
    undesirable_weight: float = Field(1.0, gt=0, description="KTO: weight of undesirable rows.")
    lora: LoraOptions = Field(default_factory=LoraOptions)
    train: AlignLoopConfig = Field(default_factory=AlignLoopConfig)
    grpo: GRPOOptions = Field(default_factory=GRPOOptions)
    onpolicy: OnPolicyConfig = Field(default_factory=OnPolicyConfig,
                                     description="`llmcycle run`: how on-policy pairs are made for DPO/KTO/ORPO.")
    max_seq_len: int = Field(512, ge=16)
    seed: int = 0
    train_split: str = "train"
    val_split: Optional[str] = "val"
    max_train_records: Optional[int] = Field(None, ge=1)
    max_val_records: Optional[int] = Field(None, ge=1)


@dataclass
class Encoded:
    """One completion: ids of prompt + reply, and which tokens are the reply's (the loss's targets)."""

    input_ids: list[int]
    completion_mask: list[int]


def encode(tokenizer: Any, prompt: list[dict], reply: list[dict], where: str, max_len: int) -> Encoded:
    """Prompt + reply rendered and masked as in SFT; the prompt's own assistant turns are not targets. Too long:
    the prompt loses its oldest tokens first, then the reply its last."""
    from llmcycle.modeldir import render_chat
    from llmcycle.train.sft_data import IGNORE, shared_prefix, tokenize_with_mask

    ex = tokenize_with_mask(tokenizer, prompt + reply, where)
    head = tokenizer(render_chat(tokenizer, prompt, where, generation_prompt=True), add_special_tokens=False)
    start = shared_prefix(ex.input_ids, head["input_ids"])
    mask = [int(label != IGNORE and t >= start) for t, label in enumerate(ex.labels)]
    ids = ex.input_ids
    if len(ids) > max_len:
        cut = min(len(ids) - max_len, max(start - 1, 0))
        ids, mask = ids[:1] + ids[1 + cut:], mask[:1] + mask[1 + cut:]
        ids, mask = ids[:max_len], mask[:max_len]
    if not any(mask):
        raise DataError(f"{where}: the reply leaves no tokens to train on (empty after the chat template, or cut "
                        f"by max_seq_len={max_len})")
    return Encoded(ids, mask)


def collate(rows: list[Encoded], pad_id: int, extra: Optional[dict[str, Any]] = None) -> dict[str, Any]:
    """Right-padded tensors for `objectives` (attention_mask marks real tokens)."""
    import torch

    width = max(len(r.input_ids) for r in rows)
    ids = [r.input_ids + [pad_id] * (width - len(r.input_ids)) for r in rows]
    att = [[1] * len(r.input_ids) + [0] * (width - len(r.input_ids)) for r in rows]
    comp = [r.completion_mask + [0] * (width - len(r.input_ids)) for r in rows]
    batch = {"input_ids": torch.tensor(ids), "attention_mask": torch.tensor(att),
             "completion_mask": torch.tensor(comp)}
    batch.update(extra or {})
    return batch


def pair_rows(tokenizer: Any, records: list[dict], max_len: int, where: str) -> list[tuple[Encoded, Encoded]]:
    return [(encode(tokenizer, r["prompt"], r["chosen"], f"{where} record {i + 1} chosen", max_len),
             encode(tokenizer, r["prompt"], r["rejected"], f"{where} record {i + 1} rejected", max_len))
            for i, r in enumerate(records)]


def unpaired_rows(tokenizer: Any, records: list[dict], max_len: int, where: str) -> list[tuple[Encoded, bool]]:
    """KTO rows: unpaired records as they are, a pair as a desirable and an undesirable row (as TRL does)."""
    out = []
    for i, r in enumerate(records):
        sides = [("chosen", True), ("rejected", False)] if "chosen" in r else [("completion", r["label"])]
        for side, label in sides:
            out.append((encode(tokenizer, r["prompt"], r[side], f"{where} record {i + 1} {side}", max_len), label))
    return out


def read_records(data_dir: str | Path, split: str, kinds: tuple[str, ...], limit: Optional[int]) -> list[dict]:
    from llmcycle.records import read_preference_split
    from llmcycle.records import split_path

    path = split_path(data_dir, split)
    records = read_preference_split(path, kinds)[:limit]
    if not records:
        wanted = "paired (chosen/rejected)" if kinds == ("paired",) else "preference"
        raise DataError(f"{path}: no {wanted} records to align on")
    return records


class PreferenceData:
    """A split's encoded rows and their reference log-probs; batches in a seeded order per epoch."""

    def __init__(self, method: str, tokenizer: Any, records: list[dict], max_len: int, where: str):
        self.method = method
        if method == "kto":
            rows = unpaired_rows(tokenizer, records, max_len, where)
            self.rows = [[enc] for enc, _ in rows]
            self.labels = [label for _, label in rows]
        else:
            self.rows = [list(pair) for pair in pair_rows(tokenizer, records, max_len, where)]
            self.labels = []
        self.ref: list[list[float]] = [[0.0] * len(r) for r in self.rows]
        self.pad_id = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else 0

    def batch(self, indices: list[int]) -> dict[str, Any]:
        import torch

        cols = list(zip(*[self.rows[i] for i in indices]))  # [chosen...], [rejected...] (KTO: one column)
        refs = list(zip(*[self.ref[i] for i in indices]))
        extra: dict[str, Any] = {"ref_logps": torch.tensor([v for col in refs for v in col])}
        if self.method == "kto":
            extra["label"] = torch.tensor([self.labels[i] for i in indices])
        return collate([enc for col in cols for enc in col], self.pad_id, extra)

    def batches(self, batch_size: int, seed: Optional[int]):
        order = list(range(len(self.rows)))
        if seed is not None:
            random.Random(seed).shuffle(order)
        for start in range(0, len(order), batch_size):
            yield self.batch(order[start:start + batch_size])

    def compute_reference(self, model: Any, batch_size: int, cache: Path) -> None:
        """Reference log-probs of every row, once (kept in `cache`, so a resumed run reuses the same)."""
        from llmcycle.train.objectives import reference_logps

        if cache.is_file():
            self.ref = json.loads(cache.read_text())
            return
        for start in bar(range(0, len(self.rows), batch_size), desc="align: reference log-probs", unit="batch"):
            indices = list(range(start, min(start + batch_size, len(self.rows))))
            values = reference_logps(model, self.batch(indices)).tolist()
            width = len(self.rows[0])
            for j, i in enumerate(indices):
                self.ref[i] = [values[j + k * len(indices)] for k in range(width)]
        cache.write_text(json.dumps(self.ref))


def load_policy(cfg: AlignConfig, base: str, tokenizer: Any):
    """The model to align: LoRA on a frozen base, or every weight trainable (fp32)."""
    from llmcycle.loading import is_adapter_dir, load_base_model
    from llmcycle.train.lora import wrap_with_adapter

    import torch

    if is_adapter_dir(base):
        raise ConfigError(f"{base}: is an adapter dir; align a full model (merge it first: llmcycle merge)")
    model = load_base_model(base, "fp32", "cpu")
    if len(tokenizer) > model.get_input_embeddings().weight.shape[0]:
        raise ConfigError(f"{base}: tokenizer has more tokens than the model has embeddings")
    model.config.use_cache = False
    torch.manual_seed(cfg.seed)
    if cfg.tuning == "full":
        for p in model.parameters():
            p.requires_grad_(True)
        return model
    return wrap_with_adapter(model, "lora", cfg.lora.r, cfg.lora.alpha, cfg.lora.dropout, cfg.lora.target_modules)


def margins(model: Any, data: PreferenceData, batch_size: int, limit: Optional[int]) -> dict[str, float]:
    """Implicit reward margin (chosen minus rejected log-ratio to the reference) and preference accuracy on pairs."""
    import itertools

    import torch

    from llmcycle.train.objectives import sequence_logps

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
    return {"margin": sum(deltas) / len(deltas), "pair_accuracy": sum(d > 0 for d in deltas) / len(deltas)}


def run(cfg: AlignConfig, data_dir: str | Path, base: str | Path, out: str | Path, resume: bool = False) -> Path:
    """The `align` stage: DATA_DIR (preference records) + BASE (a full chat model) -> OUT (adapter or model dir)."""
    if cfg.method == "grpo":
        from llmcycle.train.grpo import run as run_grpo

        return run_grpo(cfg, data_dir, base, out, resume=resume)
    from llmcycle.train.finetune import save_outputs
    from llmcycle.train.objectives import Preference

    base_id = resolve_base(base)
    tokenizer, _ = prepare_tokenizer(base_id)
    kinds = ("paired", "unpaired") if cfg.method == "kto" else ("paired",)
    train_data = PreferenceData(cfg.method, tokenizer, read_records(data_dir, cfg.train_split, kinds,
                                cfg.max_train_records), cfg.max_seq_len, f"{data_dir}/{cfg.train_split}")
    val_data = None
    if cfg.val_split and (Path(data_dir) / f"{cfg.val_split}.jsonl").is_file():
        val_records = read_records(data_dir, cfg.val_split, ("paired",), cfg.max_val_records) \
            if _has_pairs(data_dir, cfg.val_split) else []
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
                            objective=objective)
        after = margins(model, val_data or train_data, loop.batch_size, loop.eval_batches)
        before = {k: 0.0 for k in after}  # before any update the policy is the reference: no margin, no pair won
        save_outputs(_save_cfg(cfg), model, tokenizer, base_id, art.dir)
        art.metrics = {"steps": result.steps, "tokens": result.tokens, "train_loss": result.train_loss,
                       "val_loss": result.val_loss,
                       "tokens_per_s": round(result.tokens_per_s, 1), "seconds": round(result.seconds, 2),
                       **{f"{k}_before": v for k, v in before.items()}, **{f"{k}_after": v for k, v in after.items()}}
        art.extra = {"method": cfg.method, "tuning": cfg.tuning, "base": base_id, "pairs_or_rows": len(train_data.rows),
                     "margins_on": "val" if val_data else "train"}
    say(f"align: wrote {out} ({cfg.method}; margin {fmt(before.get('margin'))} -> {fmt(after.get('margin'))})")
    return Path(out)


def _save_cfg(cfg: AlignConfig):
    """`finetune.save_outputs` reads only `.method` (lora vs full)."""
    from types import SimpleNamespace

    return SimpleNamespace(method="lora" if cfg.tuning == "lora" else "full")


def _has_pairs(data_dir: str | Path, split: str) -> bool:
    from llmcycle.records import read_jsonl

    return any("chosen" in row for _, row in read_jsonl(Path(data_dir) / f"{split}.jsonl"))

