"""Dropout with numpy's random bits (`llmcycle.train.dropout`): nn.Dropout's distribution, scaling and gradient,
repeatable under `torch.manual_seed`, and in place on every LoRA dropout the training loop runs."""

from __future__ import annotations

import math

import pytest
import torch

from llmcycle.train import dropout as fast
from llmcycle.train.loop import train_loop

from .conftest import batch_source, tiny_llama


@pytest.mark.parametrize("p", [0.05, 0.5])
def test_each_element_is_dropped_with_probability_p_and_the_rest_scaled(p):
    torch.manual_seed(0)
    x = torch.randn(1000, 1000, requires_grad=True)
    y = fast.dropout(x, p, training=True)
    dropped = y == 0
    se = math.sqrt(p * (1 - p) / x.numel())
    assert abs(dropped.float().mean().item() - p) < 5 * se
    assert torch.equal(y[~dropped], x.detach()[~dropped] * (1 / (1 - p)))
    halves = dropped.view(2, -1).float().mean(1)  # the two 32-bit halves of each 64-bit draw are both used
    assert (halves - p).abs().max().item() < 7 * se
    y.sum().backward()
    assert torch.equal(x.grad, (~dropped).float() * (1 / (1 - p)))


def test_seeded_runs_repeat_and_evaluation_is_the_identity():
    x = torch.randn(64, 48)
    masks = []
    for seed in (3, 3, 4):
        torch.manual_seed(seed)
        masks.append(fast.dropout(x, 0.3, training=True) == 0)
    assert torch.equal(masks[0], masks[1]) and not torch.equal(masks[0], masks[2])
    assert fast.dropout(x, 0.3, training=False) is x


def test_the_training_loop_gives_every_lora_dropout_the_fast_mask(tmp_path, loop_cfg):
    from llmcycle.train.lora import wrap_with_adapter

    model = wrap_with_adapter(tiny_llama(), "lora", 4, 8, 0.1, ["q_proj", "v_proj"])
    dropouts = [m for n, m in model.named_modules() if type(m) is torch.nn.Dropout and "lora_dropout" in n]
    assert len(dropouts) == 4
    train, val = batch_source()
    result = train_loop(model, train, val, loop_cfg(max_steps=3, eval_every=3), tmp_path / "run")
    assert all(m.forward.__func__ is fast._forward for m in dropouts)
    assert math.isfinite(result.history[-1].get("val_loss", result.history[-1].get("loss")))
