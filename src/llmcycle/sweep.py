"""`llmcycle sweep`: hyperparameter search over one training stage of a run config, with Optuna.

TPE proposes values for the keys of a search-space file; each trial trains the stage into its own dir; the
trial reports every validation loss through the training loop's step hook, and the pruner stops trials that trail
the others at the same step. The study lives in OUT/study.db (SQLite), so an interrupted sweep resumes where it
stopped. Outputs: best.yaml (the run config with the best values), trials.md/trials.csv, history.png and
importance.png. The stages upstream of the swept one (data, tokenizer, ...) run once, into OUT/upstream.

A search space:

    stage: pretrain            # or finetune
    metric: val_loss           # a metric of the stage's manifest, minimised
    pruner: {n_startup_trials: 2, n_warmup_steps: 0}
    sampler: {n_startup_trials: 4, seed: 0}
    params:
      pretrain.train.lr: {type: float, low: 1.0e-4, high: 1.0e-2, log: true}
      pretrain.train.warmup_steps: {type: int, low: 0, high: 4}
      pretrain.preset: {type: categorical, choices: [tiny]}
"""

from __future__ import annotations

import copy
import csv
import importlib.util
import shutil
from pathlib import Path
from typing import Any, Literal, Optional

import yaml
from pydantic import BaseModel, ConfigDict, Field

from llmcycle.artifacts import atomic_write_json, atomic_write_text, partial_dir, read_manifest
from llmcycle.config import read_yaml, to_dict, validate
from llmcycle.errors import ConfigError, UserError
from llmcycle.pipeline import run as run_pipeline, stage_plan
from llmcycle.progress import say
from llmcycle.sweep_report import trial_rows, write_plots
from llmcycle.train.loop import step_hook

UPSTREAM = {"pretrain": ["data", "tokenizer"], "finetune": ["data", "tokenizer", "pretrain"]}


class Param(BaseModel):
    model_config = ConfigDict(extra="forbid")
    type: Literal["float", "int", "categorical"]
    low: Optional[float] = None
    high: Optional[float] = None
    log: bool = False
    choices: Optional[list[Any]] = None

    def model_post_init(self, _: Any) -> None:
        if self.type == "categorical" and not self.choices:
            raise ValueError("categorical needs choices")
        if self.type != "categorical" and (self.low is None or self.high is None or self.low > self.high):
            raise ValueError(f"{self.type} needs low <= high")


class Space(BaseModel):
    model_config = ConfigDict(extra="forbid")
    stage: Literal["pretrain", "finetune"] = "pretrain"
    metric: str = "val_loss"
    pruner: dict[str, int] = Field(default_factory=lambda: {"n_startup_trials": 2, "n_warmup_steps": 0})
    sampler: dict[str, int] = Field(default_factory=lambda: {"n_startup_trials": 4, "seed": 0})
    params: dict[str, Param] = Field(min_length=1)


def load_space(path: str | Path, run_cfg: Any) -> Space:
    """The search space, each key checked against the run config (one line naming the bad key)."""
    space = validate(Space, read_yaml(path), str(path))
    data = to_dict(run_cfg)
    for key in space.params:
        node: Any = data
        for part in key.split("."):
            if not isinstance(node, dict) or part not in node:
                raise ConfigError(f"{path}: params.{key}: the config has no such key")
            node = node[part]
    return space


def with_values(run_cfg: Any, values: dict[str, Any]) -> Any:
    """The run config with dotted keys set to values, validated again."""
    data = copy.deepcopy(to_dict(run_cfg))
    for key, value in values.items():
        *parents, last = key.split(".")
        node = data
        for part in parents:
            node = node[part]
        node[last] = value
    return validate(type(run_cfg), data, "sweep trial")


def suggest(trial: Any, key: str, p: Param) -> Any:
    if p.type == "categorical":
        return trial.suggest_categorical(key, p.choices)
    if p.type == "int":
        return trial.suggest_int(key, int(p.low), int(p.high), log=p.log)
    return trial.suggest_float(key, float(p.low), float(p.high), log=p.log)


def run_stage(stage: str, cfg: Any, upstream: Path, out: Path) -> Path:
    """The swept stage as the run would wire it to the upstream dirs, written into OUT (a trial's dir)."""
    step = stage_plan(cfg.model_copy(update={"stages": [stage]}), upstream)[0]
    return step._replace(out=out).run()


def make_objective(run_cfg: Any, space: Space, out: Path) -> Any:
    import optuna  # optional: the `sweep` extra

    def objective(trial: Any) -> float:
        values = {key: suggest(trial, key, p) for key, p in space.params.items()}
        trial_cfg = with_values(run_cfg, values)
        trial_out = out / "trials" / f"trial-{trial.number:03d}"

        def report(step: int, record: dict[str, Any]) -> None:
            if "val_loss" in record:
                trial.report(float(record["val_loss"]), step)
                if trial.should_prune():
                    raise optuna.TrialPruned(f"pruned at step {step}")

        say(f"sweep: trial {trial.number} {values}")
        try:
            with step_hook(report):
                run_stage(space.stage, trial_cfg, out / "upstream", trial_out)
        except optuna.TrialPruned:
            shutil.rmtree(partial_dir(trial_out), ignore_errors=True)
            raise
        metrics = read_manifest(trial_out).get("metrics", {})
        if metrics.get(space.metric) is None:
            raise ConfigError(f"sweep: the {space.stage} stage reports no metric {space.metric!r}")
        return float(metrics[space.metric])

    return objective


def open_study(space: Space, out: Path, name: str) -> Any:
    import optuna  # optional: the `sweep` extra

    optuna.logging.set_verbosity(optuna.logging.WARNING)
    study = optuna.create_study(
        study_name=name, storage=f"sqlite:///{out / 'study.db'}", load_if_exists=True, direction="minimize",
        sampler=optuna.samplers.TPESampler(**space.sampler),
        pruner=optuna.pruners.MedianPruner(**space.pruner))
    for t in study.get_trials(deepcopy=False, states=(optuna.trial.TrialState.RUNNING,)):
        study.tell(t.number, state=optuna.trial.TrialState.FAIL)  # a trial the last, interrupted sweep left
    return study


def run(run_cfg: Any, space_path: str | Path, trials: int, out: str | Path, name: str = "sweep") -> Path:
    """Run (or resume) the sweep until the study holds `trials` finished trials; write its outputs into OUT."""
    out = Path(out)
    space = load_space(space_path, run_cfg)
    if importlib.util.find_spec("optuna") is None:
        raise UserError("llmcycle sweep needs optuna: pip install 'llmcycle[sweep]'")
    out.mkdir(parents=True, exist_ok=True)
    upstream_cfg = run_cfg.model_copy(update={"stages": [s for s in UPSTREAM[space.stage]
                                                         if not (run_cfg.base and s in ("tokenizer", "pretrain"))]})
    run_pipeline(upstream_cfg, out / "upstream")
    import optuna  # optional: the `sweep` extra

    study = open_study(space, out, name)
    done = (optuna.trial.TrialState.COMPLETE, optuna.trial.TrialState.PRUNED)
    remaining = trials - len(study.get_trials(deepcopy=False, states=done))
    if remaining > 0:
        study.optimize(make_objective(run_cfg, space, out), n_trials=remaining, catch=())
    write_outputs(study, run_cfg, space, out)
    return out


def write_outputs(study: Any, run_cfg: Any, space: Space, out: Path) -> None:
    import optuna  # optional: the `sweep` extra

    rows = trial_rows(study)
    with open(out / ".trials.csv.tmp", "w", newline="", encoding="utf-8") as fh:
        writer = csv.DictWriter(fh, fieldnames=list(rows[0]))
        writer.writeheader()
        writer.writerows(rows)
    (out / ".trials.csv.tmp").replace(out / "trials.csv")
    lines = ["| " + " | ".join(rows[0]) + " |", "|" + "---|" * len(rows[0])]
    lines += ["| " + " | ".join(str(v) for v in r.values()) + " |" for r in rows]
    complete = study.get_trials(deepcopy=False, states=(optuna.trial.TrialState.COMPLETE,))
    summary: dict[str, Any] = {"trials": len(rows), "complete": len(complete),
                               "pruned": sum(r["state"] == "PRUNED" for r in rows), "metric": space.metric}
    if complete:
        best = study.best_trial
        best_cfg = with_values(run_cfg, best.params)
        atomic_write_text(out / "best.yaml", yaml.safe_dump(to_dict(best_cfg), sort_keys=False))
        summary.update(best_trial=best.number, best_value=best.value, best_params=best.params)
        lines += ["", f"Best: trial {best.number}, {space.metric} {best.value:.4f}, {best.params}"]
    summary["charts"] = write_plots(study, out)
    atomic_write_text(out / "trials.md", "\n".join(lines) + "\n")
    atomic_write_json(out / "sweep.json", summary)
    say(f"sweep: {summary['complete']} complete, {summary['pruned']} pruned; best config: {out / 'best.yaml'}")
