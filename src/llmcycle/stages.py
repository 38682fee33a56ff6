"""The registered stages' runners, all on one signature: `run(cfg, inputs, out, resume) -> Path`.

Each adapts a stage's own function (which tests and notebooks call with named arguments) to the registry's shape;
`inputs` is keyed by the input kinds declared in `llmcycle.registry`. Stages that cannot resume ignore `resume`.
"""

from __future__ import annotations

from pathlib import Path

from llmcycle import data, merge, prune, synth, tokenizer
from llmcycle.artifacts import is_up_to_date
from llmcycle.config import to_dict
from llmcycle.data.config import DataConfig
from llmcycle.evaluate.stage import EvalConfig, run as evaluate
from llmcycle.gates import GatesStageConfig, run_gates as gates
from llmcycle.gguf.config import ExportConfig
from llmcycle.export import export_gguf
from llmcycle.merge import MergeConfig
from llmcycle.prune import PruneConfig
from llmcycle.synth import SynthConfig
from llmcycle.tokenizer import TokenizerConfig
from llmcycle.train import align, finetune, onpolicy, pretrain, reward
from llmcycle.train.align import AlignConfig
from llmcycle.train.finetune import FinetuneConfig
from llmcycle.train.pretrain import PretrainConfig
from llmcycle.train.reward import RewardConfig

Inputs = dict[str, Path]


def run_data(cfg: DataConfig, inputs: Inputs, out: Path, resume: bool) -> Path:
    return data.run(cfg, out)


def run_synth(cfg: SynthConfig, inputs: Inputs, out: Path, resume: bool) -> Path:
    return synth.run(cfg, out)


def run_tokenizer(cfg: TokenizerConfig, inputs: Inputs, out: Path, resume: bool) -> Path:
    return tokenizer.run(cfg, inputs["data"], out)


def run_pretrain(cfg: PretrainConfig, inputs: Inputs, out: Path, resume: bool) -> Path:
    return pretrain.run(cfg, inputs["data"], inputs["tokenizer"], out, resume=resume)


def run_finetune(cfg: FinetuneConfig, inputs: Inputs, out: Path, resume: bool) -> Path:
    return finetune.run(cfg, inputs["data"], inputs["base"], out, resume=resume)


def run_merge(cfg: MergeConfig, inputs: Inputs, out: Path, resume: bool) -> Path:
    return merge.run(cfg, inputs["adapter"], out)


def run_eval(cfg: EvalConfig, inputs: Inputs, out: Path, resume: bool) -> Path:
    """The final model against the base and, in a run that aligns, the aligned model."""
    compare = [inputs[k] for k in ("compare", "aligned") if inputs.get(k)]
    return evaluate(cfg, inputs["model"], inputs.get("data"), out, compare=compare)


def run_prune(cfg: PruneConfig, inputs: Inputs, out: Path, resume: bool) -> Path:
    return prune.run(cfg, inputs["model"], inputs.get("data"), out)


def run_export(cfg: ExportConfig, inputs: Inputs, out: Path, resume: bool) -> Path:
    return export_gguf(inputs["model"], out, cfg.quant).parent


def run_reward(cfg: RewardConfig, inputs: Inputs, out: Path, resume: bool) -> Path:
    return reward.run(cfg, inputs["data"], inputs["base"], out, resume=resume)


def align_config(cfg: AlignConfig, inputs: Inputs) -> AlignConfig:
    """GRPO's rewards include the run's reward model (its dir is an input), so the recorded config names it."""
    if cfg.method != "grpo" or not inputs.get("reward"):
        return cfg
    rewards = list(dict.fromkeys([*cfg.grpo.rewards, "model"]))
    return cfg.model_copy(update={"grpo": cfg.grpo.model_copy(
        update={"reward_model": str(inputs["reward"]), "rewards": rewards})})


def run_align(cfg: AlignConfig, inputs: Inputs, out: Path, resume: bool) -> Path:
    """GRPO trains on the data's prompts; DPO & co. on pairs the reward model ranked among the model's own replies
    (written beside OUT as `onpolicy/`, and reused when they are up to date, e.g. when a killed run resumes)."""
    if cfg.method == "grpo" or not inputs.get("reward"):
        return align.run(cfg, inputs["data"], inputs["base"], out, resume=resume)
    pairs = Path(out).with_name("onpolicy")
    made_from = {"model": str(inputs["base"]), "reward_model": str(inputs["reward"]), "data": str(inputs["data"])}
    if not is_up_to_date(pairs, "data", to_dict(cfg.onpolicy), made_from):
        onpolicy.run(cfg.onpolicy, inputs["base"], inputs["reward"], inputs["data"], pairs)
    return align.run(cfg, pairs, inputs["base"], out, resume=resume)


def run_gates(cfg: GatesStageConfig, inputs: Inputs, out: Path, resume: bool) -> Path:
    return gates(cfg, inputs["current"], inputs["candidate"], inputs["data"], out)
