"""Quantized products of many rows use the weight's bf16 copy (faster where bf16 is native); fewer rows keep the
integer kernel, and the scripted decode step makes the same choice as the Python forward, to the bit."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from llmcycle.infer import Engine, quantize
from llmcycle.infer.quantize import Int4Weight, Int8Weight, allow_batch_copies, check_method
from llmcycle.infer.scripted_step import ScriptedStep


@pytest.fixture
def bf16_native(monkeypatch):
    monkeypatch.setattr(quantize, "native_bf16", lambda: True)


@pytest.mark.parametrize("kind", [Int8Weight, Int4Weight])
def test_many_rows_use_the_bf16_copy_few_rows_the_integer_kernel(kind, bf16_native):
    try:
        check_method("int8" if kind is Int8Weight else "int4")
    except Exception as exc:  # noqa: BLE001 - a torch build without the kernel
        pytest.skip(str(exc))
    generator = torch.Generator().manual_seed(0)
    weight = kind(torch.randn(96, 64, generator=generator), None)
    fresh = kind(torch.randn(96, 64, generator=torch.Generator().manual_seed(0)), None)  # never allowed a copy
    assert allow_batch_copies([weight])
    rows = kind.batch_rows
    x = torch.randn(rows, 64, generator=generator)
    small = weight(x[:rows - 1])
    assert weight._batch is None  # a few rows never make the copy
    wide = weight(x)
    copy_ = weight.batch_weight()
    assert copy_.dtype == torch.bfloat16 and torch.equal(copy_, weight.dequantize().to(torch.bfloat16))
    assert torch.equal(wide, F.linear(x.to(torch.bfloat16), copy_).float())
    assert torch.equal(small, fresh(x[:rows - 1]))  # the integer kernel, as before
    assert torch.equal(fresh(x), fresh(x)) and fresh.batch_weight() is None  # not allowed: never made
    assert (wide - x @ weight.dequantize().t()).abs().max() < 0.05 * wide.abs().max()


def test_no_copy_where_bf16_is_emulated(monkeypatch):
    monkeypatch.setattr(quantize, "native_bf16", lambda: False)
    weight = Int8Weight(torch.randn(32, 64), None)
    assert not allow_batch_copies([weight])
    x = torch.randn(Int8Weight.batch_rows, 64)
    out = weight(x)
    assert weight.batch_weight() is None
    assert torch.equal(out, torch.ops.aten._weight_int8pack_mm(x.to(torch.bfloat16), weight.codes,
                                                                weight.scales).float())


@pytest.mark.parametrize("method", ["int8", "int4"])
def test_scripted_step_uses_the_same_copies_as_the_python_forward(make_tiny_model, method, bf16_native):
    try:
        check_method(method)
    except Exception as exc:  # noqa: BLE001
        pytest.skip(str(exc))
    fast = Engine.load(make_tiny_model("llama"), quantize=method).backend
    assert fast.batch_copy_bytes == 2 * sum(p.numel() for p in Engine.load(make_tiny_model("llama")).model.parameters()
                                            if p.dim() == 2) - 2 * fast.embed.numel()  # every product, not the lookup
    rows, column = (Int8Weight if method == "int8" else Int4Weight).batch_rows, 6
    generator = torch.Generator().manual_seed(1)
    shape = (rows, fast.n_kv, column + 2, fast.head_dim)
    keys = [torch.randn(shape, generator=generator) for _ in fast.layers]
    values = [torch.randn(shape, generator=generator) for _ in fast.layers]
    keys2, values2 = [k.clone() for k in keys], [v.clone() for v in values]
    tokens, positions = torch.arange(rows) % 50 + 3, torch.full((rows,), column)
    with torch.inference_mode():
        scripted = fast.step_rows(keys, values, tokens, positions, column, None)
        assert isinstance(fast._scripted, ScriptedStep) and fast._scripted._wide  # the copies ran in the graph
        fast._scripted, saved = False, fast._scripted
        python = fast.step_rows(keys2, values2, tokens, positions, column, None)
        fast._scripted = saved
        one_row = fast.step_rows([k[:1].clone() for k in keys2], [v[:1].clone() for v in values2], tokens[:1],
                                 positions[:1], column, None)
    assert torch.equal(scripted, python)
    assert all(torch.equal(a, b) for a, b in zip(keys + values, keys2 + values2))
    assert (scripted[:1] - one_row).abs().max() > 0  # one row: the integer kernel, other numbers
    assert (scripted[:1] - one_row).abs().max() < 0.05 * one_row.abs().max()


def test_no_copies_when_they_would_not_fit(make_tiny_model, bf16_native, monkeypatch):
    monkeypatch.setattr(quantize, "fits_in_memory", lambda size: False)
    fast = Engine.load(make_tiny_model("llama"), quantize="int8").backend
    assert fast.lm_head.batch_weight() is None and fast.layers[0].qkv.batch_weight() is None
    assert fast.batch_copy_bytes == 0
