"""A run's deadline: the budgeted training stage stops in time for the stages after it, at its measured speed."""

from __future__ import annotations

from types import SimpleNamespace

import pytest
import torch

import llmcycle.train.loop as loop_module
import llmcycle.train.schedule as schedule_module
from llmcycle.config import load_config
from llmcycle.errors import ConfigError
from llmcycle.infer import threads
from llmcycle.pipeline import RunConfig, Step, deadline_for
from llmcycle.train.loop import train_loop
from llmcycle.train.schedule import Deadline, TimeBudget, run_deadline
from llmcycle.train.setup import make_accelerator

from .conftest import batch_source, tiny_llama


def test_the_budget_leaves_the_later_steps_time_before_the_deadline():
    budget = TimeBudget(10.0, Deadline(at=100.0, later_steps=20))
    assert budget.update(spent=10.0, steps=10, now=50.0) == pytest.approx(10.0 + 30.0)  # 1 s/step: 20 s kept
    assert not budget.exhausted() and budget.cut_by_deadline()
    budget.update(spent=20.0, steps=10, now=60.0)  # 2 s/step now: the later stages need 40 s of the 40 left
    assert budget.exhausted() and budget.fraction() == 1.0
    assert TimeBudget(0.5, Deadline(at=1e12, later_steps=20)).update(1.0, 1, now=0.0) == 30.0  # own minutes win


def test_the_stage_keeps_its_floor_when_the_deadline_cannot_be_met():
    budget = TimeBudget(10.0, Deadline(at=0.0, later_steps=50, min_seconds=120.0))
    budget.update(spent=60.0, steps=30, now=500.0)
    assert budget.limit == 120.0 and not budget.exhausted()


def test_a_loop_under_a_passed_deadline_stops_and_decays_the_lr(tmp_path, loop_cfg, monkeypatch):
    """A fake clock, one second per optimizer step: the deadline leaves 6 s, the later work needs 4 steps."""
    clock = {"now": 0.0}

    def perf_counter():
        clock["now"] += 0.5
        return clock["now"]

    monkeypatch.setattr(loop_module, "time", SimpleNamespace(perf_counter=perf_counter))
    monkeypatch.setattr(schedule_module, "time", SimpleNamespace(time=lambda: clock["now"]))
    train, val = batch_source()
    cfg = loop_cfg(max_steps=1000, max_minutes=10.0, warmup_steps=1, eval_every=100, save_every=100, log_every=1)
    with run_deadline(at=10.0, later_steps=4):
        result = train_loop(tiny_llama(), train, val, cfg, tmp_path)
    assert result.cut_by_deadline and result.budget_spent
    assert 2 <= result.steps <= 8 and result.budget_seconds < 10.0
    lrs = [r["lr"] for r in result.history if r.get("split") == "train"]
    assert lrs[-1] == pytest.approx(cfg.lr * cfg.min_lr_ratio)
    result = train_loop(tiny_llama(), train, val, loop_cfg(max_steps=3), tmp_path / "after")
    assert result.steps == 3 and not result.cut_by_deadline  # outside the block: no deadline


def test_the_run_puts_its_deadline_on_the_budget_stage_only(tmp_path):
    path = tmp_path / "run.yaml"
    path.write_text("budget: {minutes: 9, later_steps: 400, min_share: 0.25}\npretrain: {train: {max_minutes: 4}}\n")
    cfg = load_config(RunConfig, path)
    pretrain = Step("pretrain", cfg.pretrain, {}, tmp_path / "base")
    with deadline_for(cfg, pretrain, run_started=1000.0) as deadline:
        assert deadline == Deadline(at=1000.0 + 540.0, later_steps=400, min_seconds=60.0)
        assert TimeBudget(4.0).deadline == deadline
    with deadline_for(cfg, Step("finetune", cfg.finetune, {}, tmp_path / "sft"), 1000.0) as none:
        assert none is None and TimeBudget(1.0).deadline is None
    path.write_text("budget: {minutes: 9, stage: pretrian, later_steps: 1}\n")
    with pytest.raises(ConfigError, match="budget.stage"):
        load_config(RunConfig, path)


def test_training_takes_back_the_cores_a_decoding_engine_narrowed(monkeypatch):
    monkeypatch.setattr(threads, "PROCESS_DEFAULT", 2)
    before = torch.get_num_threads()
    try:
        threads.apply_threads(None, params=1_000)  # a small model's engine decodes on one thread
        assert torch.get_num_threads() == 1
        make_accelerator("fp32")
        assert torch.get_num_threads() == 2
    finally:
        torch.set_num_threads(before)


def test_the_speed_estimate_forgets_a_burst_of_load_once_it_has_passed():
    budget = TimeBudget(None, Deadline(at=1000.0, later_steps=100))
    spent = 0.0
    for step in range(1, 121):
        spent += 3.0 if step <= 10 else 1.0  # the first 10 steps ran beside another job
        budget.update(spent, step, now=spent)
    assert budget.seconds_per_step() == pytest.approx(1.0)  # the last 100 steps, not the mean of all 120 (1.17)
    assert budget.limit == pytest.approx(140.0 + (1000.0 - 140.0 - 100 * 1.0))


def test_a_few_slow_steps_at_the_end_do_not_reprice_the_later_stages():
    budget = TimeBudget(None, Deadline(at=1000.0, later_steps=100))
    spent = 0.0
    for step in range(1, 201):
        spent += 1.5 if step > 180 else 1.0  # the last 20 steps ran 50% slower; the stages after do not
        budget.update(spent, step, now=spent)
    assert budget.seconds_per_step() == pytest.approx(1.1)  # not 1.5, the pace of those 20 alone
