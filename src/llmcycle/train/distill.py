"""The `distill` stage: a student learns from a teacher on chat records, in the shared loop.

- logit (same vocabulary): alpha * KL(teacher || student) at temperature T on assistant tokens (end-of-turn
  included, as in SFT) + (1 - alpha) * cross-entropy on the data.
- sequence (any vocabularies): the teacher answers the prompts of the data and its replies become the student's SFT
  data (plain cross-entropy).
The manifest reports the student's val loss and its KL to the teacher before and after (logit mode), so a run shows
what the teacher added; `baseline: true` also trains the same student without the teacher on the same budget.
"""

from __future__ import annotations

import itertools
from pathlib import Path
from typing import Any, Literal, Optional

import torch
from pydantic import Field

from llmcycle.artifacts import open_artifact
from llmcycle.config import StageConfig, to_dict
from llmcycle.errors import ConfigError
from llmcycle.infer.decoding import knob
from llmcycle.infer.engine import Engine
from llmcycle.infer.settings import GenerationSettings
from llmcycle.loading import load_model, load_tokenizer_for
from llmcycle.progress import say
from llmcycle.records import load_split, write_jsonl
from llmcycle.train import finetune
from llmcycle.train.batches.prompts import prompts_of
from llmcycle.train.batches.sft import batches, make_assistant_logits
from llmcycle.train.finetune import FinetuneConfig, FinetuneLoopConfig, LoraOptions, save_outputs
from llmcycle.train.loop import train_loop
from llmcycle.train.objectives import Distillation, distill_kl
from llmcycle.train.policy import resolve_base


class DistillConfig(StageConfig):
    mode: Literal["auto", "logit", "sequence"] = Field("auto", description="auto = logit when vocabularies match.")
    alpha: float = Field(0.5, ge=0, le=1, description="Weight of the KL term (1 - alpha on cross-entropy).")
    temperature: float = Field(1.0, gt=0, description="Softmax temperature of the KL term (a loss setting, not a "
                               "decoding knob: the teacher's replies are greedy).")
    tuning: Literal["lora", "full"] = "full"
    lora: LoraOptions = Field(default_factory=LoraOptions)
    train: FinetuneLoopConfig = Field(default_factory=FinetuneLoopConfig)
    max_seq_len: int = Field(256, ge=16)
    max_new_tokens: int = knob("max_new_tokens", 64, description="sequence mode: longest teacher reply.")
    baseline: bool = Field(False, description="Also train the student without the teacher (same budget).")
    seed: int = knob("seed", 0)
    max_train_records: Optional[int] = Field(None, ge=1)
    max_val_records: Optional[int] = Field(None, ge=1)
    val_split: Optional[str] = Field("val", description="None = no validation (no KL before/after, no early stop).")


def same_vocabulary(a: Any, b: Any) -> bool:
    return a.get_vocab() == b.get_vocab()


def resolve_mode(cfg: DistillConfig, teacher_tok: Any, student_tok: Any, teacher: str, student: str) -> str:
    same = same_vocabulary(teacher_tok, student_tok)
    if cfg.mode == "logit" and not same:
        raise ConfigError(f"distill: logit distillation needs one vocabulary, but {teacher} ({len(teacher_tok)} tokens) "
                          f"and {student} ({len(student_tok)} tokens) differ; use mode sequence")
    return cfg.mode if cfg.mode != "auto" else ("logit" if same else "sequence")


def sft_config(cfg: DistillConfig) -> FinetuneConfig:
    return FinetuneConfig(method="lora" if cfg.tuning == "lora" else "full", lora=cfg.lora, train=cfg.train,
                          max_seq_len=cfg.max_seq_len, seed=cfg.seed, max_train_records=cfg.max_train_records,
                          max_val_records=cfg.max_val_records, val_split=cfg.val_split)


def teacher_data(teacher: str, data_dir: str | Path, out: Path, cfg: DistillConfig) -> Path:
    """sequence mode: the teacher's replies to the train prompts (first exchange of each chat) as chat records."""
    prompts = prompts_of(data_dir, "train", cfg.max_train_records)
    engine = Engine.load(teacher)
    replies = engine.chat(prompts, GenerationSettings(max_new_tokens=cfg.max_new_tokens, temperature=0))
    records = [{"messages": p + [{"role": "assistant", "content": c.text}], "meta": {"source": "teacher"}}
               for p, c in zip(prompts, replies) if c.text.strip()]
    write_jsonl(out / "train.jsonl", records)
    if cfg.val_split:
        write_jsonl(out / f"{cfg.val_split}.jsonl", load_split(data_dir, cfg.val_split))
    return out


def kl_to_teacher(student: Any, teacher: Any, batches, temperature: float, limit: Optional[int]) -> float:
    total, count = 0.0, 0
    student.eval()
    with torch.no_grad():
        for batch in itertools.islice(batches(), limit):
            inputs = {k: v for k, v in batch.items() if k != "labels"}
            kl = distill_kl(student(**inputs).logits[0, :-1], teacher(**inputs).logits[0, :-1], temperature)
            total, count = total + float(kl.sum()), count + kl.numel()
    student.train()
    return total / max(count, 1)


def train_student(cfg: DistillConfig, data_dir: str | Path, student: str, work: Path, teacher_model: Any,
                  alpha: float, resume: bool) -> dict[str, Any]:
    """One student run (alpha 0 and no teacher = the baseline); returns its metrics."""
    sft = sft_config(cfg)
    tokenizer, _ = finetune.prepare_tokenizer(student)
    train_ex, val_ex, _ = finetune.load_examples(sft, tokenizer, data_dir)
    model = finetune.attach_method(sft, finetune.load_for_method(sft, student, tokenizer))
    wrapped = make_assistant_logits(model)
    pad = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else 0
    loop = sft.train.model_copy(update={"seed": cfg.seed})

    def train_b(epoch):
        return batches(train_ex, loop.batch_size, cfg.max_seq_len, True, pad, cfg.seed * 1_000_003 + epoch)

    def val_b():
        return batches(val_ex, loop.batch_size, cfg.max_seq_len, True, pad, None) if val_ex else None

    teacher = make_assistant_logits(teacher_model).eval() if teacher_model is not None else None
    metrics: dict[str, Any] = {}
    if teacher is not None and val_ex:
        metrics["kl_to_teacher_before"] = kl_to_teacher(wrapped, teacher, val_b, cfg.temperature, loop.eval_batches)
    objective = Distillation(teacher, alpha, cfg.temperature) if teacher is not None else None
    result = train_loop(wrapped, train_b, val_b if val_ex else None, loop, work, resume=resume,
                        desc="distill" if teacher is not None else "distill baseline", objective=objective)
    if teacher is not None and val_ex:
        metrics["kl_to_teacher"] = kl_to_teacher(wrapped, teacher, val_b, cfg.temperature, loop.eval_batches)
    metrics.update({"val_loss": result.val_loss, "val_loss_batches": result.val_rows, "train_loss": result.train_loss,
                    "steps": result.steps})
    return {"metrics": metrics, "model": model, "tokenizer": tokenizer, "sft": sft}


def run(cfg: DistillConfig, data_dir: str | Path, teacher: str | Path, student: str | Path, out: str | Path,
        resume: bool = False) -> Path:
    """The `distill` stage: DATA_DIR + TEACHER + STUDENT -> OUT (the student, adapter or full model dir)."""
    teacher_id, student_id = resolve_base(teacher), resolve_base(student)
    mode = resolve_mode(cfg, load_tokenizer_for(teacher_id), load_tokenizer_for(student_id), teacher_id, student_id)
    with open_artifact(out, "distill", to_dict(cfg), {"data": data_dir, "teacher": teacher_id, "student": student_id},
                       resumable=True, resume=resume) as art:
        if mode == "logit":
            teacher_model = load_model(teacher_id, "fp32", merge=True).eval()
            run_ = train_student(cfg, data_dir, student_id, art.dir, teacher_model, cfg.alpha, resume)
        else:
            source = teacher_data(teacher_id, data_dir, art.dir / "teacher_data", cfg)
            run_ = train_student(cfg, source, student_id, art.dir, None, 0.0, resume)
        save_outputs(run_["sft"], run_["model"], run_["tokenizer"], student_id, art.dir)
        art.metrics = {"mode": mode, **run_["metrics"]}
        if cfg.baseline:
            base = train_student(cfg, data_dir, student_id, art.dir / "baseline", None, 0.0, False)
            art.metrics["baseline_val_loss"] = base["metrics"]["val_loss"]
        art.extra = {"teacher": teacher_id, "student": student_id, "mode": mode}
    say(f"distill: wrote {out} ({mode}; val loss {art.metrics.get('val_loss')})")
    return Path(out)
