"""The scripted decode step gives exactly the Python forward's logits and cache writes (same calls, same
kernels), alone and with rows at different positions under a mask; quantized weights keep the Python forward."""

from __future__ import annotations

import torch

from llmcycle.infer import Engine
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


def test_scripted_step_is_the_python_forward_exactly(make_tiny_model):
    engine = Engine.load(make_tiny_model("llama"))
    fast = engine.backend
    mask = torch.zeros(3, 1, 1, 10)
    mask[1, ..., :4] = float("-inf")  # row 1 owns the columns from 4 on
    for rows, column, row_mask in ((1, 5, None), (3, 9, mask)):
        (scripted, keys, values), (python, keys2, values2) = _both(fast, rows, column, row_mask)
        assert isinstance(fast._scripted, ScriptedStep)  # the scripted graph ran
        assert torch.equal(scripted, python)
        assert all(torch.equal(a, b) for a, b in zip(keys + values, keys2 + values2))


def test_quantized_weights_keep_the_python_forward(make_tiny_model):
    engine = Engine.load(make_tiny_model("llama"), quantize="int8")
    assert ScriptedStep.build(engine.backend) is None
