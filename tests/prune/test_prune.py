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


def test_layers_drop_the_layer_that_changes_its_input_least(make_tiny_model, chat_data_dir, tmp_path):
    """A layer planted as the identity (its attention and MLP outputs zeroed) has no influence: it is the one
    removed, and the shallower model computes what the full one computes."""
    import shutil

    base = make_tiny_model("llama", num_hidden_layers=4)
    shutil.copytree(base, tmp_path / "planted")  # the tokenizer beside the weights
    planted = load(base)
    with torch.no_grad():
        planted.model.layers[2].self_attn.o_proj.weight.zero_()
        planted.model.layers[2].mlp.down_proj.weight.zero_()
    planted.save_pretrained(tmp_path / "planted")
    cfg = dict(method="magnitude", pattern="structured", sparsity=0.25)
    full = run(PruneConfig(**cfg), tmp_path / "planted", chat_data_dir, tmp_path / "full")
    short = run(PruneConfig(**cfg, layers=0.25), tmp_path / "planted", chat_data_dir, tmp_path / "short")
    metrics = json.loads((short / "manifest.json").read_text())["metrics"]
    assert metrics["removed_layers"] == [2] and metrics["num_hidden_layers"] == [4, 3]
    assert min(metrics["layer_influence"]) == metrics["layer_influence"][2] < 1e-6
    shallow, deep = load(short), load(full)
    assert shallow.config.num_hidden_layers == 3 and len(shallow.model.layers) == 3
    ids = torch.tensor([PROMPT])
    torch.testing.assert_close(shallow(ids).logits, deep(ids).logits, rtol=1e-5, atol=1e-5)
    # the shallower model decodes with a KV cache in llmcycle's engine exactly as full forward passes choose
    from llmcycle.infer import GenerationSettings
    from llmcycle.infer.engine import Engine

    greedy = list(PROMPT)
    with torch.no_grad():
        for _ in range(6):
            greedy.append(int(shallow(torch.tensor([greedy])).logits[0, -1].argmax()))
    settings = GenerationSettings(max_new_tokens=6, min_new_tokens=6, temperature=0.0)
    assert Engine.load(short, dtype="fp32").generate_ids([list(PROMPT)], settings)[0].token_ids == greedy[len(PROMPT):]


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
    (dict(method="magnitude", layers=0.5), "structured only"),
    (dict(pattern="structured", method="magnitude", sparsity=0.25, layers=0.5), "give a data dir"),
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
def test_structured_model_exports_to_gguf_and_runs_in_llamacpp(make_tiny_model, chat_data_dir, tmp_path):
    from transformers import AutoTokenizer

    from llmcycle.export import export_gguf
    from llmcycle.gguf.llamacpp import LlamaCpp

    # confident logits: no greedy near-ties; MLP channels, query heads and one of three layers removed
    base = make_tiny_model("llama", seed=1, initializer_range=0.25, num_hidden_layers=3)
    out = run(PruneConfig(method="magnitude", pattern="structured", sparsity=0.25, heads=0.5, layers=0.34), base,
              chat_data_dir, tmp_path / "p")
    pruned = load(out)
    assert pruned.config.num_hidden_layers == 2
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


@pytest.mark.parametrize("objective", ["distill", "sft"])
def test_heal_trains_the_pruned_model(make_tiny_model, chat_data_dir, tmp_path, objective):
    base = make_tiny_model("llama")
    cfg = dict(method="magnitude", pattern="structured", sparsity=0.25, heads=0.5)
    plain = load(run(PruneConfig(**cfg), base, None, tmp_path / "plain"))
    healed_dir = run(PruneConfig(**cfg, heal_steps=6, heal_objective=objective), base, chat_data_dir,
                     tmp_path / "healed")
    healed = load(healed_dir)
    assert healed.config.intermediate_size == plain.config.intermediate_size == 96
    assert healed.num_parameters() == plain.num_parameters()  # merged into plain weights: no adapter left
    name = "model.layers.0.self_attn.q_proj.weight"
    assert not torch.equal(healed.get_parameter(name), plain.get_parameter(name))
    assert {p.name for p in tmp_path.iterdir()} == {"plain", "healed"}  # no scratch or partial dirs left
    heal = json.loads((healed_dir / "manifest.json").read_text())["metrics"]["heal"]
    assert heal["objective"] == objective and heal["steps"] == 6
    if objective == "distill":  # taught by the unpruned model: the pruned one moves towards it
        assert heal["kl_to_teacher"] < heal["kl_to_teacher_before"]


def test_a_gguf_file_is_pruned_like_its_hf_dir(make_tiny_model, tmp_path, monkeypatch):
    from llmcycle.export import export_gguf

    monkeypatch.setenv("LLMCYCLE_CACHE", str(tmp_path / "cache"))  # where the GGUF's import is cached
    gguf = export_gguf(make_tiny_model("llama"), tmp_path / "gguf", "f32")
    out = run(PruneConfig(method="magnitude", pattern="structured", sparsity=0.25), gguf, None, tmp_path / "p")
    assert load(out).config.intermediate_size == 96
