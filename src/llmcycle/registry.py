"""Every stage declared once: name, config class, input artifact kinds, default output dir, resumability, runner.

The run config's stage sections, `llmcycle run`'s order, skip-if-done and resume rules, `--stages` help and the
improve preset are all derived from `STAGES` (see `llmcycle.pipeline`). Every runner has one signature,
`run(cfg, inputs: dict[str, Path], out: Path, resume: bool) -> Path`, where `inputs` is keyed by the stage's input
kinds.

Config classes and runners are named as `module:attribute` and imported on first use, so listing the stages (the
CLI's help, config checks) does not load torch; `llmcycle.stages` holds the runners.
"""

from __future__ import annotations

import importlib
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable

from llmcycle.errors import ConfigError

# What an input of a stage is wired to in a run: another stage's dir, or one of these roles.
BASE_MODEL = "base model"  # the run's `base` (hub id or model dir), else the pretrain stage's dir
FINAL_MODEL = "final model"  # merge's dir for adapter fine-tunes, else finetune's dir


@dataclass(frozen=True)
class Stage:
    """One stage of the lifecycle. `inputs` maps each input kind to what feeds it in a run (a stage or a role)."""

    name: str
    config: str  # "module:Class"
    inputs: dict[str, str]
    out_dir: str
    runner: str  # "module:function", signature run(cfg, inputs, out, resume) -> Path
    resumable: bool = False
    core: bool = True  # run by a run config that names no `stages:`
    only_if: str = ""  # "from scratch": only without a run `base`; "adapter": only for adapter fine-tunes
    defaults: tuple[tuple[str, Any], ...] = ()  # the run config's defaults where they differ from the class's
    configure: str = ""  # "module:function" (cfg, inputs) -> the config the stage really runs with (recorded)
    summary: str = ""
    optional: tuple[str, ...] = ()  # input kinds wired only when the stage feeding them is part of the run

    @property
    def config_class(self) -> type:
        return _resolve(self.config)

    def default_config(self) -> Any:
        return self.config_class(**dict(self.defaults))

    def effective_config(self, cfg: Any, inputs: dict[str, Path]) -> Any:
        return _resolve(self.configure)(cfg, inputs) if self.configure else cfg

    def run(self, cfg: Any, inputs: dict[str, Path], out: Path, resume: bool = False) -> Path:
        """Run into OUT; an input kind left out of `inputs` is one the stage can do without (e.g. align's reward
        model when the data already holds preference pairs)."""
        call: Callable[..., Path] = _resolve(self.runner)
        return call(cfg, inputs, Path(out), resume)


def _resolve(ref: str) -> Any:
    module, _, attr = ref.partition(":")
    return getattr(importlib.import_module(module), attr)


_S = "llmcycle.stages"
STAGES: tuple[Stage, ...] = (
    Stage("data", "llmcycle.data.config:DataConfig", {}, "data", f"{_S}:run_data",
          summary="corpus -> cleaned, deduplicated splits"),
    Stage("synth", "llmcycle.synth.config:SynthConfig", {}, "synth", f"{_S}:run_synth", core=False,
          summary="instruction data from a teacher model, filtered like the data stage"),
    Stage("tokenizer", "llmcycle.tokenizer:TokenizerConfig", {"data": "data"}, "tokenizer", f"{_S}:run_tokenizer",
          only_if="from scratch", summary="byte-level BPE on the train split"),
    Stage("pretrain", "llmcycle.train.pretrain:PretrainConfig", {"data": "data", "tokenizer": "tokenizer"}, "base",
          f"{_S}:run_pretrain", resumable=True, only_if="from scratch", summary="a small model from scratch"),
    Stage("finetune", "llmcycle.train.finetune:FinetuneConfig", {"data": "data", "base": BASE_MODEL}, "sft",
          f"{_S}:run_finetune", resumable=True, summary="SFT, LoRA/QLoRA/DoRA or full"),
    Stage("merge", "llmcycle.merge:MergeConfig", {"adapter": "finetune"}, "merged", f"{_S}:run_merge",
          only_if="adapter", summary="adapter folded into its base, parity-checked"),
    Stage("prune", "llmcycle.prune.config:PruneConfig", {"model": FINAL_MODEL, "data": "data"}, "pruned",
          f"{_S}:run_prune", core=False, summary="sparser or structurally smaller weights, optionally LoRA-healed"),
    Stage("export", "llmcycle.gguf.config:ExportConfig", {"model": FINAL_MODEL}, "export", f"{_S}:run_export",
          core=False, summary="GGUF for llama.cpp"),
    Stage("reward", "llmcycle.train.reward:RewardConfig", {"data": "data", "base": FINAL_MODEL}, "reward",
          f"{_S}:run_reward", resumable=True, core=False, defaults=(("record_offset", 0), ("record_stride", 2)),
          summary="reward model on the data's rated chats (every other one)"),
    Stage("align", "llmcycle.train.align:AlignConfig", {"data": "data", "base": FINAL_MODEL, "reward": "reward"},
          "aligned", f"{_S}:run_align", resumable=True, core=False, configure=f"{_S}:align_config",
          summary="DPO on on-policy pairs the reward model ranks, or GRPO"),
    Stage("eval", "llmcycle.evaluate.stage:EvalConfig",
          {"model": FINAL_MODEL, "data": "data", "compare": BASE_MODEL, "aligned": "align"}, "eval",
          f"{_S}:run_eval", optional=("aligned",), summary="every model the run made (base, final, aligned) side by side"),
    Stage("gates", "llmcycle.gates:GatesStageConfig", {"current": FINAL_MODEL, "candidate": "align", "data": "data"},
          "gates", f"{_S}:run_gates", core=False, summary="aligned vs current under a held-out judge"),
)

BY_NAME: dict[str, Stage] = {s.name: s for s in STAGES}
NAMES: tuple[str, ...] = tuple(BY_NAME)
CORE: tuple[str, ...] = tuple(s.name for s in STAGES if s.core)
RESUMABLE: frozenset[str] = frozenset(s.name for s in STAGES if s.resumable)
DEFAULT_DIRS: dict[str, str] = {s.name: s.out_dir for s in STAGES}


def stage(name: str) -> Stage:
    if name not in BY_NAME:
        raise ConfigError(f"unknown stage {name!r} (stages are {', '.join(NAMES)})")
    return BY_NAME[name]


def stages_help() -> str:
    """The `--stages` help line: every stage in order, optional ones marked."""
    return "Comma-separated subset of stages to run: " + ", ".join(
        s.name if s.core else f"{s.name} (opt-in)" for s in STAGES) + "."
