"""`llmcycle run`: the whole lifecycle from one YAML config, each stage into its artifact dir under the run folder.

A stage is skipped when its manifest records the same config and the same input identities (upstream
fingerprints), so a rerun after a crash or a config change redoes only what must be redone. A training stage
killed mid-way resumes from its checkpoints when its config and inputs are unchanged.
"""

from __future__ import annotations

import json
import shutil
import time
from contextlib import nullcontext
from pathlib import Path
from typing import Any, NamedTuple

from pydantic import Field, create_model

from llmcycle import registry
from llmcycle.artifacts import MANIFEST, atomic_write_json, input_identity, partial_dir, read_manifest, sha256_json
from llmcycle.config import StageConfig, to_dict
from llmcycle.data.sources import source_inputs
from llmcycle.errors import ArtifactError, ConfigError
from llmcycle.infer.config import ChatConfig
from llmcycle.progress import say
from llmcycle.report import write_report
from llmcycle.train.schedule import run_deadline

STAGES = registry.NAMES
CORE_STAGES = registry.CORE  # what a run config without `stages:` runs; export and the closed loop are opt-in
RUN_MARKER = "run.json"
DEFAULT_DIRS = registry.DEFAULT_DIRS


class RunBudget(StageConfig):
    """The whole run's wall-clock budget. The stages after `stage` do fixed work, so their time scales with the
    machine's speed; `stage` (a training stage with `train.max_minutes`) measures that speed in its own steps and
    stops early enough that they still fit (see `train/schedule.py`). On a fast machine it ends at its own
    max_minutes; on a slower one it trains less, and the run still ends in time."""

    minutes: float = Field(10.0, gt=0, description="The run's budget, counted from the start of `llmcycle run`.")
    stage: str = Field("pretrain", description="The time-budgeted training stage that gives way to the deadline.")
    later_steps: int = Field(0, ge=0, description="What the stages after `stage` cost, in `stage`'s own optimizer "
                             "steps (measure it: their seconds over its seconds per step).")
    min_share: float = Field(0.5, ge=0, le=1, description="`stage` keeps at least this share of its own "
                             "max_minutes even when the deadline cannot be met.")


class RunSettings(StageConfig):
    """A whole run. `base` set to a hub id or model dir skips tokenizer+pretrain and fine-tunes that model."""

    name: str = "run"
    base: str | None = None
    stages: list[str] = Field(default_factory=lambda: list(CORE_STAGES))
    dirs: dict[str, str] = Field(default_factory=dict, description="Artifact dir name per stage, e.g. sft: out-x.")
    budget: RunBudget | None = Field(None, description="A wall-clock budget for the whole run (None: each stage's own).")

    def model_post_init(self, _: Any) -> None:
        unknown = [s for s in self.stages if s not in STAGES]
        if unknown:
            raise ConfigError(f"stages: unknown stage {unknown[0]!r} (stages are {', '.join(STAGES)})")
        bad = [k for k in self.dirs if k not in STAGES]
        if bad:
            raise ConfigError(f"dirs.{bad[0]}: unknown stage (stages are {', '.join(STAGES)})")
        if self.budget is not None and self.budget.stage not in STAGES:
            raise ConfigError(f"budget.stage: unknown stage {self.budget.stage!r} (stages are {', '.join(STAGES)})")


def _stage_fields() -> dict[str, Any]:
    """One section per registered stage (its config class, with the run's defaults), then `chat`."""
    fields: dict[str, Any] = {
        s.name: (s.config_class, Field(default_factory=s.default_config, description=s.summary))
        for s in registry.STAGES}
    fields["chat"] = (ChatConfig, Field(default_factory=ChatConfig, description="What `llmcycle chat -c CONFIG` uses."))
    return fields


RunConfig = create_model("RunConfig", __base__=RunSettings, __module__=__name__, **_stage_fields())
RunConfig.__doc__ = RunSettings.__doc__


class StageResult(NamedTuple):
    stage: str
    out: Path
    status: str  # "ran", "skipped", "resumed"
    seconds: float


class Step(NamedTuple):
    """One stage to run: its name, the config it runs with, its inputs (by kind) and its output dir."""

    stage: str
    config: Any
    inputs: dict[str, str]
    out: Path

    def run(self, resume: bool = False) -> Path:
        return registry.stage(self.stage).run(self.config, {k: Path(v) for k, v in self.inputs.items()},
                                              self.out, resume)


def dir_of(cfg: Any, run_dir: Path, stage: str) -> Path:
    return run_dir / cfg.dirs.get(stage, DEFAULT_DIRS[stage])


def applies(cfg: Any, stage: registry.Stage) -> bool:
    """Whether a stage has a place in this run (tokenizer+pretrain only from scratch, merge only for adapters)."""
    if stage.only_if == "from scratch":
        return cfg.base is None
    if stage.only_if == "adapter":
        return cfg.finetune.method != "full"
    return True


def wire(cfg: Any, run_dir: Path, stage: registry.Stage) -> dict[str, str]:
    """The paths that feed a stage's inputs in this run: other stages' dirs, the base model or the final model."""
    base = cfg.base or str(dir_of(cfg, run_dir, "pretrain"))
    final = dir_of(cfg, run_dir, "merge" if cfg.finetune.method != "full" else "finetune")
    roles = {registry.BASE_MODEL: base, registry.FINAL_MODEL: str(final)}
    return {kind: roles.get(source) or str(dir_of(cfg, run_dir, source)) for kind, source in stage.inputs.items()
            if kind not in stage.optional or source in cfg.stages}


def stage_plan(cfg: Any, run_dir: Path) -> list[Step]:
    """The run's steps in registry order: the selected stages that have a place in it."""
    plan = []
    for stage in registry.STAGES:
        if stage.name not in cfg.stages or not applies(cfg, stage):
            continue
        if stage.name == "data":
            inputs = {k: str(v) for k, v in source_inputs(cfg.data).items()}
        else:
            inputs = wire(cfg, run_dir, stage)
        config = stage.effective_config(getattr(cfg, stage.name), {k: Path(v) for k, v in inputs.items()})
        plan.append(Step(stage.name, config, inputs, dir_of(cfg, run_dir, stage.name)))
    return plan


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


def check_inputs(cfg: Any, run_dir: Path, stage: str, inputs: dict[str, str]) -> None:
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


def run(cfg: Any, run_dir: str | Path, force: bool = False, config_ref: str | None = None) -> list[StageResult]:
    """Run every selected stage in order, skipping up-to-date ones and resuming killed ones; then write report.md
    (`config_ref`: the config as the user named it, for the report's chat command)."""
    run_dir = Path(run_dir)
    check_run_dir(run_dir)
    run_dir.mkdir(parents=True, exist_ok=True)
    atomic_write_json(run_dir / RUN_MARKER, {"name": cfg.name, "config": to_dict(cfg)})
    plan = stage_plan(cfg, run_dir)
    started = time.time()
    results = [run_step(cfg, run_dir, step, f"[{i}/{len(plan)}] {step.stage:<9}", force, started)
               for i, step in enumerate(plan, 1)]
    write_report(run_dir, [r.out for r in results], {r.stage: r.status for r in results}, config_ref)
    return results


def run_step(cfg: Any, run_dir: Path, step: Step, head: str, force: bool = False,
             run_started: float | None = None) -> StageResult:
    """One step of a run: skipped when up to date, resumed when a killed attempt left checkpoints, else run."""
    config = to_dict(step.config)
    if not force and is_current(run_dir, step.stage, step.out, config, step.inputs):
        say(f"{head} up to date, skipped ({step.out})")
        return StageResult(step.stage, step.out, "skipped", 0.0)
    check_inputs(cfg, run_dir, step.stage, step.inputs)
    resume = _can_resume(run_dir, step.stage, step.out, config, step.inputs)
    say(f"{head} {'resuming' if resume else 'running'} -> {step.out}")
    started = time.time()
    _remember_attempt(run_dir, step.stage, config, step.inputs)
    with deadline_for(cfg, step, started if run_started is None else run_started):
        step.run(resume)
    _remember_attempt(run_dir, step.stage, config, step.inputs, done_dir=step.out)
    seconds = time.time() - started
    say(f"{head} done in {seconds:.1f}s")
    return StageResult(step.stage, step.out, "resumed" if resume else "ran", seconds)


def deadline_for(cfg: Any, step: Step, run_started: float):
    """The run's deadline for the stage that gives way to it (see `RunBudget`); no deadline for any other."""
    budget = getattr(cfg, "budget", None)
    if budget is None or step.stage != budget.stage:
        return nullcontext()
    own = getattr(getattr(step.config, "train", None), "max_minutes", None)
    floor = budget.min_share * own * 60.0 if own else 0.0
    return run_deadline(run_started + budget.minutes * 60.0, budget.later_steps, floor)


def run_preset(steps: list[Step]) -> list[StageResult]:
    """Steps of registered stages outside a run folder (e.g. `improve`'s attempt): each runs in order."""
    results = []
    for i, step in enumerate(steps, 1):
        say(f"[{i}/{len(steps)}] {step.stage:<9} running -> {step.out}")
        started = time.time()
        step.run(False)
        results.append(StageResult(step.stage, step.out, "ran", time.time() - started))
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
    if stage not in registry.RESUMABLE or not ckpts.is_dir() or not any(ckpts.glob("step-*")):
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
