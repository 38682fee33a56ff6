"""`llmcycle run`: the whole lifecycle from one YAML config, each stage into its artifact dir under the run folder.

A stage is skipped when its manifest records the same config and the same input identities (upstream
fingerprints), so a rerun after a crash or a config change redoes only what must be redone. A training stage
killed mid-way resumes from its checkpoints when its config and inputs are unchanged.
"""

from __future__ import annotations

import json
import shutil
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable

from pydantic import Field

from llmcycle.artifacts import MANIFEST, atomic_write_json, input_identity, partial_dir, read_manifest, sha256_json
from llmcycle.config import StageConfig, to_dict
from llmcycle.data import DataConfig
from llmcycle.errors import ArtifactError, ConfigError
from llmcycle.evaluate import EvalConfig
from llmcycle.gguf.config import ExportConfig
from llmcycle.infer.config import ChatConfig
from llmcycle.merge import MergeConfig
from llmcycle.progress import say
from llmcycle.tokenizer import TokenizerConfig
from llmcycle.train.finetune import FinetuneConfig
from llmcycle.train.pretrain import PretrainConfig
from llmcycle.feedback.improve import GatesStageConfig
from llmcycle.train.align import AlignConfig
from llmcycle.train.reward import RewardConfig

STAGES = ("data", "tokenizer", "pretrain", "finetune", "merge", "eval", "export", "reward", "align", "gates")
CORE_STAGES = STAGES[:6]  # what a run config without `stages:` runs; export and the closed loop are opt-in
RUN_MARKER = "run.json"
DEFAULT_DIRS = {"data": "data", "tokenizer": "tokenizer", "pretrain": "base", "finetune": "sft", "merge": "merged",
                "eval": "eval", "export": "export", "reward": "reward", "align": "aligned", "gates": "gates"}


class RunConfig(StageConfig):
    """A whole run. `base` set to a hub id or model dir skips tokenizer+pretrain and fine-tunes that model."""

    name: str = "run"
    base: str | None = None
    stages: list[str] = Field(default_factory=lambda: list(CORE_STAGES))
    dirs: dict[str, str] = Field(default_factory=dict, description="Artifact dir name per stage, e.g. sft: out-x.")
    data: DataConfig = Field(default_factory=DataConfig)
    tokenizer: TokenizerConfig = Field(default_factory=TokenizerConfig)
    pretrain: PretrainConfig = Field(default_factory=PretrainConfig)
    finetune: FinetuneConfig = Field(default_factory=FinetuneConfig)
    merge: MergeConfig = Field(default_factory=MergeConfig)
    eval: EvalConfig = Field(default_factory=EvalConfig)
    reward: RewardConfig = Field(default_factory=lambda: RewardConfig(record_offset=0, record_stride=2),
                                 description="Reward model on the data's rated chats (every other one).")
    align: AlignConfig = Field(default_factory=AlignConfig)
    gates: GatesStageConfig = Field(default_factory=GatesStageConfig)
    export: ExportConfig = Field(default_factory=ExportConfig)
    chat: ChatConfig = Field(default_factory=ChatConfig, description="What `llmcycle chat -c CONFIG` uses.")

    def model_post_init(self, _: Any) -> None:
        unknown = [s for s in self.stages if s not in STAGES]
        if unknown:
            raise ConfigError(f"stages: unknown stage {unknown[0]!r} (stages are {', '.join(STAGES)})")
        bad = [k for k in self.dirs if k not in STAGES]
        if bad:
            raise ConfigError(f"dirs.{bad[0]}: unknown stage (stages are {', '.join(STAGES)})")


@dataclass
class StageResult:
    stage: str
    out: Path
    status: str  # "ran", "skipped", "resumed"
    seconds: float


def dir_of(cfg: RunConfig, run_dir: Path, stage: str) -> Path:
    return run_dir / cfg.dirs.get(stage, DEFAULT_DIRS[stage])


def stage_plan(cfg: RunConfig, run_dir: Path) -> list[tuple[str, Any, dict[str, str], Callable[..., Path]]]:
    """(stage, config, inputs, call) per stage in order; call(resume) runs it into its dir."""
    from llmcycle import data, merge, tokenizer
    from llmcycle import evaluate as evaluate_stage
    from llmcycle.gguf import export as export_stage
    from llmcycle.train import finetune, pretrain

    d = {s: dir_of(cfg, run_dir, s) for s in STAGES}
    base = cfg.base or str(d["pretrain"])
    adapter_like = cfg.finetune.method != "full"
    final_model = d["merge"] if adapter_like else d["finetune"]
    source = {k: str(v) for k, v in data.source_inputs(cfg.data).items()} if "data" in cfg.stages else {}
    plan: list[tuple[str, Any, dict[str, str], Callable[..., Path]]] = [
        ("data", cfg.data, source, lambda resume: data.run(cfg.data, d["data"])),
    ]
    if cfg.base is None:
        plan += [
            ("tokenizer", cfg.tokenizer, {"data": str(d["data"])},
             lambda resume: tokenizer.run(cfg.tokenizer, d["data"], d["tokenizer"])),
            ("pretrain", cfg.pretrain, {"data": str(d["data"]), "tokenizer": str(d["tokenizer"])},
             lambda resume: pretrain.run(cfg.pretrain, d["data"], d["tokenizer"], d["pretrain"], resume=resume)),
        ]
    plan.append(("finetune", cfg.finetune, {"data": str(d["data"]), "base": base},
                 lambda resume: finetune.run(cfg.finetune, d["data"], base, d["finetune"], resume=resume)))
    if adapter_like:
        plan.append(("merge", cfg.merge, {"adapter": str(d["finetune"])},
                     lambda resume: merge.run(cfg.merge, d["finetune"], d["merge"])))
    plan.append(("eval", cfg.eval, {"model": str(final_model), "data": str(d["data"]), "compare": base},
                 lambda resume: evaluate_stage.run(cfg.eval, final_model, d["data"], d["eval"], compare=[base])))
    plan.append(("export", cfg.export, {"model": str(final_model)},
                 lambda resume: export_stage.export_gguf(final_model, d["export"], cfg.export.quant).parent))
    plan += loop_plan(cfg, d, final_model)
    return [p for p in plan if p[0] in cfg.stages]


def loop_plan(cfg: RunConfig, d: dict[str, Path], model: Path) -> list[tuple[str, Any, dict[str, str], Callable]]:
    """The closed loop: reward (rated chats) -> align (DPO on on-policy pairs the reward model ranks, or GRPO with
    it) -> gates (the aligned model against `model` under a judge trained on the other rated chats)."""
    from llmcycle.feedback.improve import run_gates
    from llmcycle.train import align, onpolicy, reward

    align_cfg = cfg.align
    if align_cfg.method == "grpo":  # GRPO's rewards include the run's reward model
        rewards = list(dict.fromkeys([*align_cfg.grpo.rewards, "model"]))
        align_cfg = align_cfg.model_copy(update={"grpo": align_cfg.grpo.model_copy(
            update={"reward_model": str(d["reward"]), "rewards": rewards})})

    def run_align(resume: bool) -> Path:
        if align_cfg.method == "grpo":
            return align.run(align_cfg, d["data"], model, d["align"], resume=resume)
        pairs = onpolicy.run(align_cfg.onpolicy, model, d["reward"], d["data"], d["align"].with_name("onpolicy"))
        return align.run(align_cfg, pairs, model, d["align"], resume=resume)

    return [
        ("reward", cfg.reward, {"data": str(d["data"]), "base": str(model)},
         lambda resume: reward.run(cfg.reward, d["data"], model, d["reward"])),
        ("align", align_cfg, {"data": str(d["data"]), "base": str(model), "reward": str(d["reward"])},
         run_align),
        ("gates", cfg.gates, {"current": str(model), "candidate": str(d["align"]), "data": str(d["data"])},
         lambda resume: run_gates(cfg.gates, model, d["align"], d["data"], d["gates"])),
    ]


def identities(inputs: dict[str, str]) -> list[str]:
    return sorted(input_identity(Path(p)) for p in inputs.values())


def is_current(run_dir: Path, stage: str, out: Path, config: dict[str, Any], inputs: dict[str, str]) -> bool:
    """The manifest holds this config, and the last completed attempt had these inputs and produced this dir."""
    if not (out / MANIFEST).is_file():
        return False
    try:
        manifest = read_manifest(out, stage)
        record = json.loads(_attempt_file(run_dir, stage).read_text(encoding="utf-8"))
    except (ArtifactError, OSError, json.JSONDecodeError):
        return False
    return (
        manifest.get("config") == config
        and record.get("done") is True
        and record.get("key") == _attempt_key(config, inputs)
        and record.get("outputs") == sha256_json(manifest.get("outputs", {}))
    )


def check_run_dir(run_dir: Path) -> None:
    """An existing non-empty folder must be a run folder we made, so we never write into a stranger's dir."""
    if run_dir.exists() and not run_dir.is_dir():
        raise ArtifactError(f"{run_dir}: exists and is not a folder")
    if run_dir.is_dir() and any(run_dir.iterdir()) and not (run_dir / RUN_MARKER).is_file():
        raise ArtifactError(f"{run_dir}: not an llmcycle run folder (no {RUN_MARKER}); choose another --out")


def check_inputs(cfg: RunConfig, run_dir: Path, stage: str, inputs: dict[str, str]) -> None:
    """Every input that lives in the run folder must exist and be the one this run's earlier stage wrote."""
    producers = {dir_of(cfg, run_dir, s).resolve(): s for s in STAGES}
    for name, path in inputs.items():
        producer = producers.get(Path(path).resolve())
        if producer is None:
            continue
        if not (Path(path) / MANIFEST).is_file():
            raise ArtifactError(f"{path}: input {name!r} of {stage} is missing; run the {producer} stage first")
        try:
            record = json.loads(_attempt_file(run_dir, producer).read_text(encoding="utf-8"))
        except (OSError, json.JSONDecodeError):
            record = {}
        if record.get("outputs") != sha256_json(read_manifest(path).get("outputs", {})):
            raise ArtifactError(f"{path}: input {name!r} of {stage} was not produced by this run's {producer} stage")


def run(cfg: RunConfig, run_dir: str | Path, force: bool = False) -> list[StageResult]:
    """Run every selected stage in order, skipping up-to-date ones; then write report.md."""
    run_dir = Path(run_dir)
    check_run_dir(run_dir)
    run_dir.mkdir(parents=True, exist_ok=True)
    atomic_write_json(run_dir / RUN_MARKER, {"name": cfg.name, "config": to_dict(cfg)})
    plan = stage_plan(cfg, run_dir)
    results: list[StageResult] = []
    for i, (stage, stage_cfg, inputs, call) in enumerate(plan, 1):
        out = dir_of(cfg, run_dir, stage)
        config = to_dict(stage_cfg)
        head = f"[{i}/{len(plan)}] {stage:<9}"
        if not force and is_current(run_dir, stage, out, config, inputs):
            say(f"{head} up to date, skipped ({out})")
            results.append(StageResult(stage, out, "skipped", 0.0))
            continue
        check_inputs(cfg, run_dir, stage, inputs)
        resume = _can_resume(run_dir, stage, out, config, inputs)
        say(f"{head} {'resuming' if resume else 'running'} -> {out}")
        started = time.time()
        _remember_attempt(run_dir, stage, config, inputs)
        call(resume)
        _remember_attempt(run_dir, stage, config, inputs, done_dir=out)
        seconds = time.time() - started
        say(f"{head} done in {seconds:.1f}s")
        results.append(StageResult(stage, out, "resumed" if resume else "ran", seconds))
    from llmcycle.report import write_report

    write_report(run_dir, [r.out for r in results], {r.stage: r.status for r in results})
    return results


def _attempt_file(run_dir: Path, stage: str) -> Path:
    return run_dir / ".attempts" / f"{stage}.json"


def _attempt_key(config: dict[str, Any], inputs: dict[str, str]) -> str:
    return sha256_json([config, identities(inputs)])


def _remember_attempt(run_dir: Path, stage: str, config: dict[str, Any], inputs: dict[str, str],
                      done_dir: Path | None = None) -> None:
    record: dict[str, Any] = {"key": _attempt_key(config, inputs), "done": done_dir is not None}
    if done_dir is not None:
        record["outputs"] = sha256_json(read_manifest(done_dir).get("outputs", {}))
    atomic_write_json(_attempt_file(run_dir, stage), record)


def _can_resume(run_dir: Path, stage: str, out: Path, config: dict[str, Any], inputs: dict[str, str]) -> bool:
    """Resume a killed training stage only if it was started with this very config and these inputs."""
    ckpts = partial_dir(out) / "checkpoints"
    if stage not in ("pretrain", "finetune") or not ckpts.is_dir() or not any(ckpts.glob("step-*")):
        return False
    file = _attempt_file(run_dir, stage)
    try:
        key = json.loads(file.read_text(encoding="utf-8")).get("key")
    except (OSError, json.JSONDecodeError):
        return False
    if key == _attempt_key(config, inputs):
        return True
    shutil.rmtree(partial_dir(out), ignore_errors=True)  # stale checkpoints of another config
    return False
