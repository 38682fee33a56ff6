"""The shared training loop: it learns, resumes exactly, keeps only trainable state, stops on NaN."""

from __future__ import annotations

import json

import pytest
import torch

from llmcycle.errors import TrainingError
from llmcycle.train.checkpoint import checkpoint_dirs
from llmcycle.train.loop import train_loop
from llmcycle.train.schedule import lr_factor

from .conftest import batch_source, tiny_llama


def test_a_few_steps_lower_the_loss_and_write_logs(tmp_path, loop_cfg):
    train, val = batch_source()
    result = train_loop(tiny_llama(), train, val, loop_cfg(max_steps=16), tmp_path)
    losses = [r["loss"] for r in result.history if r.get("split") == "train"]
    assert losses[-1] < losses[0] - 0.5
    assert result.val_loss is not None and result.best_val_loss <= result.val_loss + 1e-9
    lines = [json.loads(x) for x in (tmp_path / "metrics.jsonl").read_text().splitlines()]
    assert lines == result.history
    assert {"tokens_per_s", "mfu", "lr", "grad_norm"} <= set(lines[0])
    assert 0 < result.mfu < 1 and result.tokens == 16 * 8 * 17
    assert (tmp_path / "loss.png").stat().st_size > 1000
    assert any((tmp_path / "tensorboard").iterdir())
    assert [p.name for p in checkpoint_dirs(tmp_path / "checkpoints")] == ["step-000012", "step-000016"]


def test_killed_then_resumed_run_ends_with_the_same_loss(tmp_path, loop_cfg):
    """With dropout on, so the resumed run is exact only if the RNG state is restored too."""
    train, val = batch_source()
    cfg = loop_cfg(max_steps=14, grad_accum=2, batch_size=4)  # 48 rows / 4 = 12 batches: crosses epochs
    full_model = tiny_llama(dropout=0.2)
    full = train_loop(full_model, train, val, cfg, tmp_path / "full")

    def kill(step, record):
        if step == 10:
            raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        train_loop(tiny_llama(dropout=0.2), train, val, cfg, tmp_path / "cut", on_step=kill)
    assert checkpoint_dirs(tmp_path / "cut" / "checkpoints")[-1].name == "step-000008"
    resumed_model = tiny_llama(seed=5, dropout=0.2)  # resume must not depend on the fresh model's init
    resumed = train_loop(resumed_model, train, val, cfg, tmp_path / "cut", resume=True)
    assert resumed.steps == full.steps == 14
    assert resumed.train_loss == pytest.approx(full.train_loss, abs=1e-6)
    assert resumed.val_loss == pytest.approx(full.val_loss, abs=1e-6)
    assert [r["step"] for r in resumed.history] == [r["step"] for r in full.history]
    for (name, a), b in zip(full_model.state_dict().items(), resumed_model.state_dict().values()):
        assert torch.allclose(a, b, atol=1e-6), name


def test_grad_accumulation_matches_one_big_batch(tmp_path, loop_cfg):
    """Micro-batches with unequal label counts: only a loss weighted by tokens across them matches."""
    train, val = batch_source(batch=8, masked=True)
    small_train, _ = batch_source(batch=4, masked=True)
    a = train_loop(tiny_llama(), train, val, loop_cfg(max_steps=3, batch_size=8), tmp_path / "a")
    b = train_loop(tiny_llama(), small_train, val, loop_cfg(max_steps=3, batch_size=4, grad_accum=2), tmp_path / "b")
    assert [r["loss"] for r in a.history if "loss" in r] == pytest.approx(
        [r["loss"] for r in b.history if "loss" in r], abs=1e-5)


def test_two_processes_weight_unequal_micro_batches_by_tokens(tmp_path, loop_cfg):
    """Two processes whose batches hold different label counts take the steps one process accumulating both takes:
    the loss is weighted by tokens across processes, not averaged per process."""
    import os
    import socket
    import subprocess
    import sys
    from pathlib import Path

    train, val = batch_source(batch=4, masked=True)
    one = train_loop(tiny_llama(), train, val, loop_cfg(max_steps=3, batch_size=4, grad_accum=2, eval_every=3,
                                                        save_every=3), tmp_path / "one")
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    script, out = Path(__file__).with_name("two_process_loop.py"), tmp_path / "two" / "losses.json"
    out.parent.mkdir()
    env = {**os.environ, "OMP_NUM_THREADS": "1", "LLMCYCLE_QUIET": "1", "CUDA_VISIBLE_DEVICES": ""}
    cmd = [sys.executable, "-m", "accelerate.commands.launch", "--num_processes", "2", "--num_machines", "1",
           "--mixed_precision", "no", "--dynamo_backend", "no", "--multi_gpu", "--main_process_port", str(port),
           str(script), str(out)]
    proc = subprocess.run(cmd, capture_output=True, text=True, env=env, timeout=300)
    assert proc.returncode == 0, proc.stderr[-2000:]
    two = json.loads(out.read_text())
    assert two["losses"] == pytest.approx([r["loss"] for r in one.history if "loss" in r], abs=1e-5)


def test_only_trainable_parameters_are_optimised_and_checkpointed(tmp_path, loop_cfg):
    from safetensors.torch import load_file

    model = tiny_llama()
    for name, p in model.named_parameters():
        p.requires_grad = "mlp" in name
    frozen = {n: p.detach().clone() for n, p in model.named_parameters() if not p.requires_grad}
    train, val = batch_source()
    train_loop(model, train, val, loop_cfg(max_steps=4), tmp_path)
    saved = load_file(str(checkpoint_dirs(tmp_path / "checkpoints")[-1] / "trainable.safetensors"))
    assert saved and all("mlp" in n for n in saved)
    assert set(saved) == {n for n, p in model.named_parameters() if p.requires_grad}
    assert all(torch.equal(frozen[n], p) for n, p in model.named_parameters() if n in frozen)
    assert not torch.equal(saved["model.layers.0.mlp.up_proj.weight"], tiny_llama().model.layers[0].mlp.up_proj.weight)


def test_nan_loss_stops_and_keeps_the_last_good_checkpoint(tmp_path, loop_cfg):
    train, val = batch_source()
    model = tiny_llama()

    def poison(step, record):
        if step == 5:
            with torch.no_grad():
                model.model.norm.weight.fill_(float("nan"))

    with pytest.raises(TrainingError, match="step 6: loss is nan.*step-000004"):
        train_loop(model, train, val, loop_cfg(max_steps=10), tmp_path, on_step=poison)
    assert [p.name for p in checkpoint_dirs(tmp_path / "checkpoints")] == ["step-000004"]


def test_resume_without_checkpoint_is_a_training_error(tmp_path, loop_cfg):
    train, val = batch_source()
    with pytest.raises(TrainingError, match="no checkpoint to resume from"):
        train_loop(tiny_llama(), train, val, loop_cfg(), tmp_path, resume=True)


def test_schedule_warms_up_then_decays_to_the_floor():
    factors = [lr_factor(s, 100, 10, 0.1) for s in range(100)]
    assert factors[0] == pytest.approx(0.1) and factors[9] == pytest.approx(1.0)
    assert all(a >= b for a, b in zip(factors[10:], factors[11:]))
    assert lr_factor(100, 100, 10, 0.1) == pytest.approx(0.1)


@pytest.mark.parametrize("decay", ["linear", "wsd"])
def test_other_decay_shapes_end_at_the_floor(decay):
    factors = [lr_factor(s, 110, 10, 0.0, decay=decay) for s in range(111)]
    assert factors[9] == pytest.approx(1.0) and factors[110] == pytest.approx(0.0)
    assert all(a >= b for a, b in zip(factors[10:], factors[11:]))
    halfway = lr_factor(60, 110, 10, 0.0, decay=decay)
    # linear is at half the peak halfway through its decay; warmup-stable-decay still holds the peak there and
    # decays over the last fifth only
    assert halfway == pytest.approx(0.5 if decay == "linear" else 1.0)
    if decay == "wsd":
        assert lr_factor(89, 110, 10, 0.0, decay=decay) == pytest.approx(1.0)
        assert lr_factor(100, 110, 10, 0.0, decay=decay) == pytest.approx(0.5)


def test_early_stopping_stops_when_val_loss_stops_improving(tmp_path, loop_cfg):
    train, _ = batch_source()
    countdown = torch.arange(16, 0, -1).repeat(8, 1)  # learning to count up makes counting down worse

    def val():
        yield {"input_ids": countdown, "labels": countdown}

    cfg = loop_cfg(max_steps=60, eval_every=2, early_stopping_patience=2)
    result = train_loop(tiny_llama(), train, val, cfg, tmp_path)
    vals = [r["val_loss"] for r in result.history if r.get("split") == "val"]
    assert result.stopped_early and result.steps < 60
    assert min(vals[-2:]) >= result.best_val_loss


def test_time_budget_stops_the_run_and_ends_the_schedule_at_the_floor(tmp_path, loop_cfg, monkeypatch):
    """A fake clock (one second per optimizer step): a 5-second budget stops a 1,000-step run after 5 steps."""
    from types import SimpleNamespace

    import llmcycle.train.loop as loop_module

    ticks = iter(range(10_000))
    monkeypatch.setattr(loop_module, "time", SimpleNamespace(perf_counter=lambda: float(next(ticks))))
    train, val = batch_source()
    cfg = loop_cfg(max_steps=1000, max_minutes=5 / 60, warmup_steps=1, eval_every=100, save_every=100)
    result = train_loop(tiny_llama(), train, val, cfg, tmp_path)
    assert result.budget_spent and result.steps == 5
    assert result.val_loss is not None  # the last step is evaluated and saved like max_steps
    assert [p.name for p in checkpoint_dirs(tmp_path / "checkpoints")] == ["step-000005"]
    lrs = [r["lr"] for r in result.history if r.get("split") == "train"]
    assert all(a >= b for a, b in zip(lrs, lrs[1:]))
    assert lrs[-1] == pytest.approx(cfg.lr * cfg.min_lr_ratio)  # decayed by time, not by steps (5 of 1,000)
