"""The stage registry is the one stage list: the run config, the plan, resume rules, `run --stages` help and the
improve preset all come from it."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

from llmcycle import registry
from llmcycle.pipeline import CORE_STAGES, DEFAULT_DIRS, STAGES, RunConfig, stage_plan

ROOT = Path(__file__).resolve().parents[1]


def test_every_stage_has_its_section_runner_and_dir():
    assert STAGES == registry.NAMES and CORE_STAGES == registry.CORE
    for stage in registry.STAGES:
        section = RunConfig.model_fields[stage.name]
        assert section.annotation is stage.config_class, stage.name
        assert callable(registry._resolve(stage.runner)), stage.name
        assert DEFAULT_DIRS[stage.name] == stage.out_dir
    assert len(set(DEFAULT_DIRS.values())) == len(DEFAULT_DIRS)  # no two stages share a dir
    assert registry.RESUMABLE == {"pretrain", "finetune", "reward", "align"}


def test_run_defaults_come_from_the_registry():
    cfg = RunConfig()
    assert (cfg.reward.record_offset, cfg.reward.record_stride) == (0, 2)  # the run's judge split, not the class's
    assert cfg.stages == list(CORE_STAGES)


def test_plan_wires_inputs_by_kind(tmp_path):
    cfg = RunConfig(stages=list(STAGES))
    plan = {step.stage: step for step in stage_plan(cfg, tmp_path)}
    assert list(plan) == list(STAGES)
    for name, step in plan.items():
        assert set(step.inputs) == (set(registry.stage(name).inputs) or set(step.inputs)), name
    assert plan["align"].inputs["reward"] == str(tmp_path / "reward")
    assert plan["gates"].inputs["candidate"] == str(tmp_path / "aligned")
    assert plan["eval"].inputs["model"] == str(tmp_path / "merged")  # the final model of an adapter run
    full = {s.stage: s for s in stage_plan(RunConfig(stages=list(STAGES), base="some/model",
                                                     finetune={"method": "full"}), tmp_path)}
    assert "pretrain" not in full and "merge" not in full and full["finetune"].inputs["base"] == "some/model"
    assert full["eval"].inputs["model"] == str(tmp_path / "sft")


def test_improve_is_a_preset_of_registered_stages(tmp_path):
    from llmcycle.improve import ImproveConfig, preset

    steps = preset(ImproveConfig(), "current", tmp_path, feedback=tmp_path / "fb.db")
    assert [s.stage for s in steps] == ["data", "reward", "align", "merge"]
    assert all(s.stage in STAGES for s in steps)
    assert steps[-1].inputs == {"adapter": str(tmp_path / "candidate")}
    given = preset(ImproveConfig(), "current", tmp_path, data=tmp_path / "d", judge="j", candidate="c")
    assert given == []


def test_run_help_lists_every_registered_stage():
    out = subprocess.run([sys.executable, "-m", "llmcycle", "run", "--help"], capture_output=True, text=True,
                         cwd=ROOT, env={"COLUMNS": "200", "PATH": "", "PYTHONPATH": str(ROOT / "src")}).stdout
    for name in STAGES:
        assert name in out, name


def test_eval_covers_the_aligned_model_only_in_a_run_that_aligns(tmp_path):
    aligning = {s.stage: s for s in stage_plan(RunConfig(stages=list(STAGES)), tmp_path)}
    assert aligning["eval"].inputs["aligned"] == str(tmp_path / "aligned")
    assert list(aligning).index("eval") > list(aligning).index("align")  # the aligned model exists by then
    core = {s.stage: s for s in stage_plan(RunConfig(), tmp_path)}
    assert "aligned" not in core["eval"].inputs and "compare" in core["eval"].inputs
