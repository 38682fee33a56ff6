"""Training products through oneDNN (`llmcycle.train.fastlinear`): the same gradients as `F.linear` and the same
loss after 20 steps; by default only for models at least 512 wide."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from llmcycle.infer import gemm
from llmcycle.train import fastlinear
from llmcycle.train.loop import train_loop

from .conftest import batch_source, tiny_llama

pytestmark = pytest.mark.skipif(not gemm.enabled(), reason="no oneDNN linear kernel in this PyTorch build")


def test_gradients_match_f_linear():
    torch.manual_seed(0)
    x, w, b = torch.randn(3, 16, 64), torch.randn(48, 64), torch.randn(48)
    grads = []
    for fn in (F.linear, fastlinear.OneDNNLinear.apply):
        leaves = [t.clone().requires_grad_() for t in (x, w, b)]
        out = fn(*leaves)
        out.square().sum().backward()
        grads.append([out.detach(), *(t.grad for t in leaves)])
    for plain, fast in zip(*grads):
        torch.testing.assert_close(fast, plain, rtol=1e-5, atol=1e-4)


def test_twenty_steps_give_the_same_loss(tmp_path, loop_cfg):
    train, val = batch_source()
    cfg = loop_cfg(max_steps=20, eval_every=10)
    plain = train_loop(tiny_llama(), train, val, cfg, tmp_path / "plain")
    model = tiny_llama()
    assert fastlinear.use_fast_linears(model, min_weight=0) > 0
    fast = train_loop(model, train, val, cfg, tmp_path / "fast")
    losses = [[r["loss"] for r in run.history if "loss" in r] for run in (plain, fast)]
    assert len(losses[0]) == 20 and losses[1] == pytest.approx(losses[0], abs=1e-4)
    assert fast.val_loss == pytest.approx(plain.val_loss, abs=1e-4)


def test_only_asked_for_by_the_environment(monkeypatch, tmp_path, loop_cfg):
    train, val = batch_source(vocab=256)
    monkeypatch.delenv(gemm.GEMM_ENV, raising=False)
    assert not fastlinear.requested()
    monkeypatch.setenv(gemm.GEMM_ENV, "onednn")
    assert fastlinear.requested()
    model = tiny_llama(vocab=256)
    model.lm_head = torch.nn.Linear(32, 256 * 8, bias=False)  # a weight big enough to be routed (65,536 elements)
    train_loop(model, train, val, loop_cfg(max_steps=1), tmp_path / "run")
    assert model.lm_head.forward.__func__ is fastlinear._forward


def test_auto_routes_wide_models_only(monkeypatch):
    """`auto` (the default) takes oneDNN where it measured faster in training (SmolLM2's 576 wide), not at the
    default preset's 128; `blas` never, `onednn` always."""
    from types import SimpleNamespace

    wide = SimpleNamespace(config=SimpleNamespace(hidden_size=576))
    narrow = SimpleNamespace(config=SimpleNamespace(hidden_size=128))
    monkeypatch.delenv(gemm.GEMM_ENV, raising=False)
    assert fastlinear.requested(wide) and not fastlinear.requested(narrow) and not fastlinear.requested(None)
    monkeypatch.setenv(gemm.GEMM_ENV, "blas")
    assert not fastlinear.requested(wide)
    monkeypatch.setenv(gemm.GEMM_ENV, "onednn")
    assert fastlinear.requested(narrow)
