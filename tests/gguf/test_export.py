"""Export -> llama.cpp says what our engine says; import(export(model)) is the model again."""

from __future__ import annotations

import json

import pytest

PROMPTS = [
    "hello there, how are you",
    "i went hiking with my friends and",
    "do you like movies? i",
    "what did you do this weekend? we went up to the",
]

MIXED = "Hello  world!\n\n  12345 3.14 x=42,\tnaïve café 東京 — it's done.\n"


def our_greedy(model_dir, prompts, n=32):
    from llmcycle.infer import GenerationSettings
    from llmcycle.infer.engine import Engine

    engine = Engine.load(model_dir, dtype="fp32")
    ids = [engine.encode_prompt(p) for p in prompts]
    settings = GenerationSettings(max_new_tokens=n, min_new_tokens=n, temperature=0.0)
    return ids, [c.token_ids for c in engine.generate_ids(ids, settings)]


@pytest.mark.parametrize("arch,quant", [("llama", "f32"), ("llama", "f16"), ("qwen2", "f32"), ("qwen2", "f16"),
                                        ("mistral", "f16")])
def test_llamacpp_greedy_equals_engine(arch, quant, peaky_model, exported, llamacpp):
    prompts, ours = our_greedy(peaky_model(arch), PROMPTS)
    server = llamacpp(exported(arch, quant))
    theirs = [server.greedy(p, 32) for p in prompts]
    assert theirs == ours


def test_q8_0_top1_agrees_teacher_forced(trained_model, val_texts, llamacpp, tmp_path):
    import torch

    from llmcycle.export import export_gguf
    from llmcycle.loading import load_model
    from llmcycle.loading import load_tokenizer

    tok = load_tokenizer(trained_model)
    model = load_model(trained_model, dtype="fp32").eval()
    server = llamacpp(export_gguf(trained_model, tmp_path / "q8", "q8_0"))
    agree = total = 0
    for text in val_texts[:3]:
        seq = tok(text)["input_ids"][:40]
        with torch.no_grad():
            top1 = model(torch.tensor([seq])).logits[0].argmax(-1).tolist()
        for i in range(1, len(seq)):
            agree += server.greedy(seq[:i], 1)[0] == top1[i - 1]
            total += 1
    assert total > 60 and agree / total >= 0.95, f"{agree}/{total}"


def test_q4_0_runs_in_llamacpp(exported, llamacpp):
    from gguf import GGUFReader

    path = exported("llama", "q4_0")
    types = {t.name: t.tensor_type.name for t in GGUFReader(path).tensors}
    assert types["blk.0.attn_q.weight"] == "Q4_0" and types["output.weight"] == "Q8_0"
    assert types["blk.0.attn_norm.weight"] == "F32"
    assert len(llamacpp(path).greedy("hello there", 8)) == 8


@pytest.mark.parametrize("arch", ["llama", "qwen2"])
def test_import_of_export_gives_the_same_logits(arch, peaky_model, exported, tmp_path):
    import torch

    from llmcycle.gguf.importer import import_gguf
    from llmcycle.loading import load_model

    back = import_gguf(exported(arch, "f32"), tmp_path / "back")
    a = load_model(peaky_model(arch), dtype="fp32").eval()
    b = load_model(back, dtype="fp32").eval()
    ids = torch.tensor([list(range(3, 40))])
    with torch.no_grad():
        assert torch.allclose(a(ids).logits, b(ids).logits, atol=1e-4)
    assert json.loads((back / "manifest.json").read_text())["stage"] == "import"


def test_tokenizer_round_trips(peaky_model, exported, llamacpp, tmp_path):
    from llmcycle.gguf.importer import import_gguf
    from llmcycle.loading import load_tokenizer

    ours = load_tokenizer(peaky_model("llama"))
    want = ours(MIXED, add_special_tokens=False)["input_ids"]
    assert llamacpp(exported("llama", "f16")).tokenize(MIXED) == want
    back = load_tokenizer(import_gguf(exported("llama", "f16"), tmp_path / "back"))
    assert back(MIXED, add_special_tokens=False)["input_ids"] == want
    assert back.decode(want) == MIXED


def test_metadata_matches_the_model(peaky_model, exported):
    from gguf import GGUFReader
    from transformers import AutoConfig

    from llmcycle.loading import load_tokenizer

    cfg = AutoConfig.from_pretrained(peaky_model("llama"))
    tok = load_tokenizer(peaky_model("llama"))
    fields = {k: f.contents() for k, f in GGUFReader(exported("llama", "f16")).fields.items()
              if not k.startswith("tokenizer.ggml.t") and k != "tokenizer.ggml.merges"}
    assert fields["llama.context_length"] == cfg.max_position_embeddings
    assert fields["llama.rope.dimension_count"] == cfg.hidden_size // cfg.num_attention_heads
    assert fields["llama.rope.freq_base"] == pytest.approx(cfg.rope_parameters["rope_theta"])
    assert fields["tokenizer.ggml.pre"] == "gpt-2" and fields["tokenizer.ggml.add_bos_token"] is False
    assert fields["tokenizer.ggml.eos_token_id"] == tok.convert_tokens_to_ids("<|im_end|>")
    assert "{% generation %}" not in fields["tokenizer.chat_template"]
    qwen = [t.name for t in GGUFReader(exported("qwen2", "f16")).tensors]
    assert "output.weight" not in qwen and "blk.0.attn_q.bias" in qwen  # tied embeddings; qwen2 biases
