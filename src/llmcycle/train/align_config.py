"""The `align` stage's config: the method (DPO, KTO, ORPO, GRPO), its loop, GRPO's rollouts and on-policy pairs.

It sits apart from the method files so that each (align.py for the offline methods, grpo.py) reads it without
importing the other.
"""

from __future__ import annotations

from typing import Literal, Optional

from pydantic import Field

from llmcycle.config import StageConfig
from llmcycle.infer.decoding import knob
from llmcycle.train.finetune import LoraOptions
from llmcycle.train.loop import LoopConfig
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
    max_new_tokens: int = knob("max_new_tokens", 32)
    temperature: float = knob("temperature", 1.0)
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
