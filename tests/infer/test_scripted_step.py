"""The scripted decode step gives exactly the Python forward's logits and cache writes (same calls, same
kernels), alone and with rows at different positions under a mask, with float and with quantized weights."""

from __future__ import annotations

import pytest
import torch

from llmcycle.errors import HardwareError
from llmcycle.infer import Engine
from llmcycle.infer.quantize import check_method
from llmcycle.infer.scripted_step import ScriptedStep


def _caches(fast, rows: int, length: int) -> tuple[list[torch.Tensor], list[torch.Tensor]]:
    generator = torch.Generator().manual_seed(1)
    shape = (rows, fast.n_kv, length, fast.head_dim)
    return ([torch.randn(shape, generator=generator) for _ in fast.layers],
            [torch.randn(shape, generator=generator) for _ in fast.layers])


def _both(fast, rows: int, column: int, mask: torch.Tensor | None):
    tokens = torch.arange(rows) * 7 + 3
    positions = torch.arange(rows) + column - rows + 1  # each row at its own rotary position
    keys, values = _caches(fast, rows, column + 4)
    keys2, values2 = [k.clone() for k in keys], [v.clone() for v in values]
    with torch.inference_mode():
        scripted = fast.step_rows(keys, values, tokens, positions, column, mask)
        fast._scripted, saved = False, fast._scripted  # the Python forward
        python = fast.step_rows(keys2, values2, tokens, positions, column, mask)
        fast._scripted = saved
    return (scripted, keys, values), (python, keys2, values2)


@pytest.mark.parametrize("quantize", [None, "bf16", "int8", "int4"])
def test_scripted_step_is_the_python_forward_exactly(make_tiny_model, quantize):
    try:
        check_method(quantize)
    except HardwareError as exc:
        pytest.skip(str(exc))
    engine = Engine.load(make_tiny_model("llama"), quantize=quantize)
    fast = engine.backend
    mask = torch.zeros(3, 1, 1, 10)
    mask[1, ..., :4] = float("-inf")  # row 1 owns the columns from 4 on
    for rows, column, row_mask in ((1, 5, None), (3, 9, mask)):
        (scripted, keys, values), (python, keys2, values2) = _both(fast, rows, column, row_mask)
        assert isinstance(fast._scripted, ScriptedStep)  # the scripted graph ran
        assert torch.equal(scripted, python)
        assert all(torch.equal(a, b) for a, b in zip(keys + values, keys2 + values2))


def test_quantized_weights_script_at_any_rows_float_only_below_the_onednn_rows(make_tiny_model):
    assert ScriptedStep.build(Engine.load(make_tiny_model("llama"), quantize="int8").backend).max_rows > 1000
    assert ScriptedStep.build(Engine.load(make_tiny_model("llama")).backend).max_rows < 8


@pytest.mark.parametrize("quantize", [None, "int8"])
def test_one_requests_decode_steps_are_scripted_and_exact(make_tiny_model, quantize):
    fast = Engine.load(make_tiny_model("llama"), quantize=quantize).backend
    ids = torch.tensor([[0, 0, 5, 9, 11], [3, 4, 5, 6, 7]])
    mask = (ids != 0).long()  # a left-padded batch (a mask per row), then one row alone (no mask)
    runs = []
    for scripted in (None, False):
        logits = []
        with torch.inference_mode():
            for prompt, attention in ((ids, mask), (ids[1:], mask[1:])):
                fast._scripted = scripted
                fast.start(prompt, attention, 6)
                tokens = prompt[:, -1]
                for _ in range(5):
                    out = fast.step(tokens)
                    logits.append(out)
                    tokens = out.argmax(-1)
        assert isinstance(fast._scripted, ScriptedStep) if scripted is None else fast._scripted is False
        runs.append(logits)
    assert all(torch.equal(a, b) for a, b in zip(*runs))
