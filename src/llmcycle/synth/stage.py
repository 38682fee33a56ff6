"""The synth stage as a function: a teacher's conversations -> OUT, an ordinary data dir with a card.

The teacher is opened (loaded or reached) before anything is generated, and the records go through the data stage's
own steps (normalisation, PII, toxicity, exact and near dedup, decontamination against the eval sets, the split),
all in memory; OUT appears only complete.
"""

from __future__ import annotations

import time
from dataclasses import asdict
from pathlib import Path

from llmcycle.config import to_dict
from llmcycle.data.example import Example, SourceData
from llmcycle.data.stage import prepare_read, write_prepared
from llmcycle.errors import ConfigError, DataError
from llmcycle.synth.config import SynthConfig
from llmcycle.synth.selfinstruct import Tally, answered, new_prompts
from llmcycle.synth.teacher import open_teacher


def check(cfg: SynthConfig) -> None:
    if not cfg.topics and not cfg.seed_prompts:
        raise ConfigError("synth: give topics or seed_prompts to start the teacher from")
    if cfg.min_prompt_chars > cfg.max_prompt_chars:
        raise ConfigError("synth: min_prompt_chars must not exceed max_prompt_chars")


def run(cfg: SynthConfig, out: str | Path) -> Path:
    """The `synth` stage: the teacher's prompts and answers, filtered, deduplicated, decontaminated, split. Returns
    OUT."""
    began = time.time()
    check(cfg)
    teacher = open_teacher(cfg.teacher, cfg.teacher_model, cfg.api_key_env, cfg.timeout_s, cfg.batch_size)
    tally = Tally()
    records = answered(teacher, new_prompts(teacher, cfg, tally), cfg, tally)
    if not records:
        raise DataError(f"synth: teacher {teacher.name} gave no usable conversation "
                        f"({tally.prompts_written} prompts written, {tally.unusable} unusable, "
                        f"{tally.too_similar} too similar, {tally.unsafe} unsafe)")
    examples = [Example(record, group=f"synth-{i}") for i, record in enumerate(records)]
    stats = {"teacher": teacher.name, **asdict(tally)}
    prepared = prepare_read(SourceData("chat", examples, {}, stats), cfg.filters, f"synth from {teacher.name}")
    local = cfg.teacher and not cfg.teacher.startswith(("http://", "https://"))
    return write_prepared(prepared, out, "synth", to_dict(cfg), {"teacher": cfg.teacher} if local else {}, "synth",
                          began)
