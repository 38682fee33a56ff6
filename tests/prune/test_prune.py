"""Pruning on tiny random Llama models: exact sparsity, the N:M pattern, structured pruning that really shrinks the
model (loads in transformers, exports to GGUF, runs in llama.cpp), and bad input refused with nothing written."""

from __future__ import annotations

import importlib.util
import json

import pytest
import torch

from llmcycle.config import validate
from llmcycle.errors import ConfigError, UserError
from llmcycle.prune import PruneConfig, run

PROMPT = [5, 17, 42, 9, 77, 3, 120]


def load(path):
    from transformers import AutoModelForCausalLM

    return AutoModelForCausalLM.from_pretrained(path, dtype=torch.float32).eval()


def decoder_weights(model):
    return {n: p for n, p in model.named_parameters() if ".layers." in n and n.endswith("proj.weight")}


def mean_loss(model, texts_ids):
    with torch.no_grad():
        return sum(float(model(input_ids=ids, labels=ids).loss) for ids in texts_ids) / len(texts_ids)


@pytest.fixture(scope="module")
def val_ids(chat_data_dir, tiny_tokenizer_dir):
    from transformers import AutoTokenizer

    from llmcycle.records import read_jsonl

    tok = AutoTokenizer.from_pretrained(tiny_tokenizer_dir)
    texts = [" ".join(m["content"] for m in r["messages"]) for _, r in read_jsonl(chat_data_dir / "val.jsonl")]
    return [torch.tensor([tok(t)["input_ids"]]) for t in texts]


def test_unstructured_magnitude_hits_the_sparsity_exactly(make_tiny_model, tmp_path):
    base = make_tiny_model("llama")
    out = run(PruneConfig(method="magnitude", sparsity=0.5), base, None, tmp_path / "p")
    pruned, original = load(out), load(base)
    for name, weight in decoder_weights(pruned).items():
        assert float((weight == 0).float().mean()) == 0.5, name
        assert (weight == 0).sum(dim=1).unique().tolist() == [weight.shape[1] // 2]  # every row the same
    kept = decoder_weights(pruned)["model.layers.0.mlp.up_proj.weight"] != 0
    assert torch.equal(original.get_parameter("model.layers.0.mlp.up_proj.weight")[kept],
                       pruned.get_parameter("model.layers.0.mlp.up_proj.weight")[kept])
    assert torch.equal(pruned.model.embed_tokens.weight, original.model.embed_tokens.weight)
    manifest = json.loads((out / "manifest.json").read_text())
    assert manifest["stage"] == "prune" and manifest["metrics"]["achieved_sparsity"] == 0.5


def test_magnitude_10_percent_keeps_the_loss(make_tiny_model, tmp_path, val_ids):
    base = make_tiny_model("llama", seed=3, initializer_range=0.1)
    before = mean_loss(load(base), val_ids)
    after = mean_loss(load(run(PruneConfig(method="magnitude", sparsity=0.1), base, None, tmp_path / "p")), val_ids)
    assert abs(after - before) / before < 0.02, (before, after)


def test_wanda_2_4_pattern_holds(make_tiny_model, chat_data_dir, tmp_path):
    out = run(PruneConfig(method="wanda", pattern="2:4", calibration_length=32), make_tiny_model("llama"),
              chat_data_dir, tmp_path / "p")
    for name, weight in decoder_weights(load(out)).items():
        zeros = (weight.reshape(weight.shape[0], -1, 4) == 0).sum(dim=2)
        assert zeros.eq(2).all(), name


def test_wanda_uses_the_activations(make_tiny_model, chat_data_dir, tmp_path):
    base = make_tiny_model("llama")
    cfg = dict(sparsity=0.5, calibration_length=32)
    wanda = load(run(PruneConfig(method="wanda", **cfg), base, chat_data_dir, tmp_path / "w"))
    magnitude = load(run(PruneConfig(method="magnitude", **cfg), base, None, tmp_path / "m"))
    name = "model.layers.0.self_attn.q_proj.weight"
    assert not torch.equal(wanda.get_parameter(name) == 0, magnitude.get_parameter(name) == 0)


@pytest.mark.parametrize("method", ["magnitude", "wanda"])
def test_structured_model_is_really_smaller_and_loads(method, make_tiny_model, chat_data_dir, tmp_path):
    base = make_tiny_model("llama")
    out = run(PruneConfig(method=method, pattern="structured", sparsity=0.25, heads=0.5, calibration_length=32),
              base, chat_data_dir, tmp_path / "p")
    pruned, original = load(out), load(base)
    cfg = pruned.config
    assert (cfg.intermediate_size, cfg.num_attention_heads, cfg.num_key_value_heads, cfg.head_dim) == (96, 2, 2, 16)
    assert pruned.model.layers[1].self_attn.q_proj.weight.shape == (32, 64)
    assert pruned.model.layers[1].mlp.down_proj.weight.shape == (64, 96)
    assert pruned.num_parameters() < original.num_parameters()
    logits = pruned(torch.tensor([PROMPT])).logits
    assert logits.shape[-1] == original.config.vocab_size and torch.isfinite(logits).all()
    names = {p.name for p in out.iterdir()}
    assert {"model.safetensors", "config.json", "tokenizer.json", "generation_config.json", "manifest.json"} <= names


def test_structured_keeps_the_chosen_heads_exactly(make_tiny_model, tmp_path):
    """The kept query head's q rows and o columns are copied unchanged; K/V are untouched."""
    base = make_tiny_model("llama")
    pruned = load(run(PruneConfig(method="magnitude", pattern="structured", sparsity=0.25, heads=0.5), base, None,
                      tmp_path / "p"))
    original = load(base)
    q_old = original.model.layers[0].self_attn.q_proj.weight.reshape(4, 16, 64)
    q_new = pruned.model.layers[0].self_attn.q_proj.weight.reshape(2, 16, 64)
    # one head from each KV group (heads 0-1 share KV head 0, heads 2-3 KV head 1)
    assert any(torch.equal(q_new[0], q_old[h]) for h in (0, 1)) and any(torch.equal(q_new[1], q_old[h]) for h in (2, 3))
    assert torch.equal(pruned.model.layers[0].self_attn.k_proj.weight, original.model.layers[0].self_attn.k_proj.weight)


@pytest.mark.parametrize("values,fragment", [
    ({"sparsity": 1.5}, "sparsity"), ({"sparsity": 0.0}, "sparsity"), ({"pattern": "4:2"}, "pattern"),
    ({"pattern": "two:four"}, "pattern"), ({"method": "random"}, "method"),
])
def test_bad_config_values_are_one_line(values, fragment):
    with pytest.raises(ConfigError) as err:
        validate(PruneConfig, values, "prune.yaml")
    assert fragment in str(err.value) and "\n" not in str(err.value)


@pytest.mark.parametrize("cfg,fragment", [
    (dict(pattern="3:7", method="magnitude"), "divisible by 7"),
    (dict(pattern="structured", heads=0.9, method="magnitude"), "all 2 query heads"),
    (dict(pattern="structured", heads=0.1, method="magnitude"), "removes none"),
    (dict(pattern="structured", sparsity=0.05, method="magnitude"), "MLP channels"),
    (dict(method="wanda"), "needs calibration text"),
    (dict(method="magnitude", heads=0.5), "structured only"),
])
def test_shapes_the_model_cannot_take_are_refused_with_nothing_written(cfg, fragment, make_tiny_model, tmp_path):
    out = tmp_path / "p"
    with pytest.raises(UserError) as err:
        run(PruneConfig(**cfg), make_tiny_model("llama"), None, out)
    assert fragment in str(err.value) and "\n" not in str(err.value)
    assert not out.exists() and not (tmp_path / "p.partial").exists()


def test_structured_refuses_fused_projections(make_tiny_model, tmp_path):
    with pytest.raises(ConfigError, match="not 'phi3'"):
        run(PruneConfig(method="magnitude", pattern="structured", sparsity=0.25), make_tiny_model("phi3"), None,
            tmp_path / "p")
    assert not (tmp_path / "p").exists()


@pytest.mark.skipif(importlib.util.find_spec("xllamacpp") is None, reason="llama.cpp (xllamacpp) not installed")
def test_structured_model_exports_to_gguf_and_runs_in_llamacpp(make_tiny_model, tmp_path):
    from transformers import AutoTokenizer

    from llmcycle.export import export_gguf
    from llmcycle.gguf.llamacpp import LlamaCpp

    base = make_tiny_model("llama", seed=1, initializer_range=0.25)  # confident logits: no greedy near-ties
    out = run(PruneConfig(method="magnitude", pattern="structured", sparsity=0.25, heads=0.5), base, None,
              tmp_path / "p")
    pruned = load(out)
    special = AutoTokenizer.from_pretrained(out).all_special_ids  # llama.cpp never samples control tokens
    ids = list(PROMPT)
    with torch.no_grad():
        for _ in range(8):
            logits = pruned(torch.tensor([ids])).logits[0, -1]
            logits[special] = float("-inf")
            ids.append(int(logits.argmax()))
    server = LlamaCpp(export_gguf(out, tmp_path / "gguf", "f32"), n_ctx=64, exact=True)
    try:
        assert server.greedy(PROMPT, 8) == ids[len(PROMPT):]
    finally:
        server.close()


def test_heal_fine_tunes_the_pruned_model(make_tiny_model, chat_data_dir, tmp_path):
    base = make_tiny_model("llama")
    cfg = dict(method="magnitude", pattern="structured", sparsity=0.25, heads=0.5)
    plain = load(run(PruneConfig(**cfg), base, None, tmp_path / "plain"))
    healed_dir = run(PruneConfig(**cfg, heal_steps=3), base, chat_data_dir, tmp_path / "healed")
    healed = load(healed_dir)
    assert healed.config.intermediate_size == plain.config.intermediate_size == 96
    assert healed.num_parameters() == plain.num_parameters()  # merged into plain weights: no adapter left
    name = "model.layers.0.self_attn.q_proj.weight"
    assert not torch.equal(healed.get_parameter(name), plain.get_parameter(name))
    assert {p.name for p in tmp_path.iterdir()} == {"plain", "healed"}  # no scratch or partial dirs left
