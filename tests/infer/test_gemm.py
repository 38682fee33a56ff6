"""float32 products through oneDNN (infer/gemm.py): used where it pays, same results, never under autograd."""

from __future__ import annotations

import pytest
import torch
from torch.profiler import ProfilerActivity, profile

from llmcycle.infer import Engine, GenerationSettings, gemm

KERNEL = "mkldnn::_linear_pointwise"


def kernel_calls(fn) -> int:
    with profile(activities=[ProfilerActivity.CPU]) as prof:
        fn()
    return sum(e.count for e in prof.key_averages() if e.key.startswith(KERNEL))


@pytest.fixture
def wide_model(make_tiny_model):
    """Layers of 256 x 512: big enough to take the oneDNN path (the tiny models' layers are not)."""
    return make_tiny_model("llama", hidden_size=256, intermediate_size=512, initializer_range=0.1)


def blas_engine(path, monkeypatch) -> Engine:
    monkeypatch.setenv(gemm.GEMM_ENV, "blas")
    gemm.enabled.cache_clear()
    try:
        engine = Engine.load(path)
        assert not gemm.enabled()
        return engine
    finally:
        monkeypatch.delenv(gemm.GEMM_ENV)
        gemm.enabled.cache_clear()


def test_scoring_uses_onednn_and_matches_blas(wide_model, monkeypatch):
    texts = ["hello there, how are you doing today?", "we went up to the mountains near the lake."]
    reference = blas_engine(wide_model, monkeypatch)
    theirs = reference.score(texts, None, 2)
    engine = Engine.load(wide_model)
    assert gemm.enabled()
    ours: list[float] = []
    assert kernel_calls(lambda: ours.extend(engine.score(texts, None, 2))) > 0
    assert ours == pytest.approx(theirs, abs=1e-3)
    assert kernel_calls(lambda: reference.score(texts, None, 2)) == 0  # the opt-out really opts out


def test_prefill_and_batched_decode_use_onednn_with_the_same_tokens(wide_model, monkeypatch):
    settings = GenerationSettings(max_new_tokens=8, min_new_tokens=8, temperature=0)
    prompts = ["hello there, how are", "we went up to the", "do you like movies?", "i went hiking with my",
               "not bad at all.", "that sounds like a lot", "yes, i love movies", "i am doing well"]
    theirs = [c.token_ids for c in blas_engine(wide_model, monkeypatch).generate(prompts, settings, batch_size=8)]
    engine = Engine.load(wide_model)
    assert engine.backend_name == "fast"
    ours: list = []
    assert kernel_calls(lambda: ours.extend(engine.generate(prompts, settings, batch_size=8))) > 0
    assert [c.token_ids for c in ours] == theirs


def test_autograd_and_small_inputs_keep_blas():
    layer = torch.nn.Linear(512, 256)
    gemm.use_onednn(layer)
    x = torch.randn(16, 512, requires_grad=True)
    assert kernel_calls(lambda: layer(x).sum().backward()) == 0
    assert x.grad is not None and layer.weight.grad is not None
    with torch.inference_mode():
        assert kernel_calls(lambda: layer(torch.randn(2, 512))) == 0  # batch-1-like rows: BLAS is as fast
        assert kernel_calls(lambda: layer(torch.randn(16, 512))) == 1
        out = layer(torch.randn(3, 16, 512))
    assert out.shape == (3, 16, 256)
    assert layer.state_dict().keys() == {"weight", "bias"}
