"""The engine's public API on tiny random models: greedy parity with `generate`, completions, scoring."""

from __future__ import annotations

import pytest
import torch

from llmcycle.errors import DataError
from llmcycle.infer import Completion, Engine, GenerationSettings

PROMPTS = ["hello there, how are", "we went up to the mountains near the lake and"]


def reference_greedy(engine: Engine, prompt_ids: list[int], new_tokens: int) -> list[int]:
    ids = torch.tensor([prompt_ids])
    out = engine.model.generate(ids, attention_mask=torch.ones_like(ids), do_sample=False, max_new_tokens=new_tokens,
                                min_new_tokens=new_tokens, eos_token_id=engine.eos_token_ids,
                                pad_token_id=engine.pad_token_id)
    return out[0, len(prompt_ids):].tolist()


@pytest.mark.parametrize("arch", ["llama", "phi3", "qwen2", "mistral"])
@pytest.mark.parametrize("fast", [True, False])
def test_greedy_matches_generate(make_tiny_model, arch, fast):
    engine = Engine.load(make_tiny_model(arch), fast=fast)
    assert engine.backend_name == ("fast" if fast else "transformers")
    settings = GenerationSettings(max_new_tokens=24, min_new_tokens=24, temperature=0)
    for prompt in PROMPTS:
        ids = engine.encode_prompt(prompt)
        [ours] = engine.generate_ids([ids], settings)
        assert ours.token_ids == reference_greedy(engine, ids, 24)
        assert ours.finish_reason == "length" and ours.prompt_tokens == len(ids)


@pytest.mark.parametrize("arch", ["llama", "phi3"])
def test_batched_left_padding_matches_single(make_tiny_model, arch):
    engine = Engine.load(make_tiny_model(arch))
    settings = GenerationSettings(max_new_tokens=12, min_new_tokens=12, temperature=0)
    batched = engine.generate(PROMPTS, settings)
    singles = [engine.generate([p], settings)[0] for p in PROMPTS]
    assert [c.token_ids for c in batched] == [c.token_ids for c in singles]


def test_prompts_of_very_different_lengths_batch_apart_and_decode_the_same(make_tiny_model, monkeypatch):
    from llmcycle.infer.engine import generation_batches
    from llmcycle.infer.lengths import length_groups

    engine = Engine.load(make_tiny_model("llama"))
    settings = GenerationSettings(max_new_tokens=6, min_new_tokens=6, temperature=0)
    prompts = [[5 + i] * n for i, n in enumerate([40, 3, 4, 3, 5])]
    batches = []
    run_batch = engine._generate_batch
    monkeypatch.setattr(engine, "_generate_batch",
                        lambda ps, s, seeds=None: batches.append([len(p) for p in ps]) or run_batch(ps, s, seeds))
    got = engine.generate_ids(prompts, settings, batch_size=8)
    assert sorted(batches) == [[3, 3, 4, 5], [40]]  # the long prompt does not pad the four short ones
    assert [c.token_ids for c in got] == [run_batch([p], settings)[0].token_ids for p in prompts]
    assert length_groups([3, 3, 3, 3, 3], max_rows=2, min_rows=1) == [[0, 1], [2, 3], [4]]
    assert generation_batches([3000, 2500, 10, 12], 8) == [[2, 3], [1], [0]]  # masked-grid prefill: alone
    assert generation_batches([3000, 2500, 10, 12], 8, None) == [[2, 3], [1, 0]]  # packed prefill: together


def test_chat_stream_score_and_beam(make_tiny_model):
    engine = Engine.load(make_tiny_model("llama"))
    settings = GenerationSettings(max_new_tokens=10, temperature=0)
    convo = [{"role": "system", "content": "be nice"}, {"role": "user", "content": "hello there"}]
    [reply] = engine.chat([convo], settings)
    assert isinstance(reply, Completion) and reply.finish_reason in ("eos", "length")
    assert "".join(engine.stream_chat(convo, settings)) == reply.text
    *pieces, done = engine.events_chat(convo, settings)  # a generation's events end in its Completion
    assert "".join(pieces) == reply.text and done.token_ids == reply.token_ids
    assert not hasattr(engine, "last_completion")
    im_start = engine.tokenizer.convert_tokens_to_ids("<|im_start|>")
    assert im_start in engine.chat_settings(settings).stop_token_ids  # a new turn ends the reply
    assert im_start not in settings.stop_token_ids
    likely, unlikely = engine.score(["hello there, how are you doing today?", "zq xv zq kk qq zz vv"])
    assert likely < 0 and unlikely < 0
    [beam] = engine.generate([PROMPTS[0]], GenerationSettings(max_new_tokens=8, num_beams=3, temperature=0))
    assert beam.finish_reason in ("eos", "length") and len(beam.token_ids) <= 8


ROPE_LLAMA3 = {"rope_type": "llama3", "factor": 8.0, "low_freq_factor": 1.0, "high_freq_factor": 4.0,
               "original_max_position_embeddings": 64, "rope_theta": 10000.0}
ROPE_LONG = {"rope_type": "longrope", "short_factor": [1.0 + i / 8 for i in range(8)],
             "long_factor": [2.0 + i for i in range(8)], "original_max_position_embeddings": 24, "rope_theta": 10000.0}
ROPE_YARN = {"rope_type": "yarn", "factor": 4.0, "original_max_position_embeddings": 64, "rope_theta": 10000.0}


@pytest.mark.parametrize("arch, variant, backend", [
    ("phi3", dict(partial_rotary_factor=0.5), "fast"),
    ("llama", dict(tie_word_embeddings=True), "fast"),
    ("llama", dict(attention_bias=True, mlp_bias=True, head_dim=32), "fast"),
    ("llama", dict(rope_parameters=ROPE_LLAMA3), "fast"),
    ("llama", dict(rope_parameters=ROPE_YARN), "fast"),
    ("llama", dict(rope_parameters={"rope_type": "dynamic", "factor": 2.0, "rope_theta": 10000.0}), "transformers"),
    ("mistral", dict(sliding_window=16), "fast"),
    ("phi3", dict(sliding_window=12), "fast"),
    ("phi3", dict(rope_parameters=ROPE_LONG, original_max_position_embeddings=24), "fast"),
    ("phi3", dict(rope_parameters={**ROPE_LONG, "original_max_position_embeddings": 8},
                  original_max_position_embeddings=8), "fast"),
])
def test_variants_match_generate_or_fall_back(make_tiny_model, arch, variant, backend):
    engine = Engine.load(make_tiny_model(arch, **variant))
    assert engine.backend_name == backend
    ids = engine.encode_prompt(PROMPTS[1] + " " + PROMPTS[0])  # long enough to pass the sliding window
    settings = GenerationSettings(max_new_tokens=20, min_new_tokens=20, temperature=0)
    assert engine.generate_ids([ids], settings)[0].token_ids == reference_greedy(engine, ids, 20)


def test_bad_engine_inputs(make_tiny_model, tmp_path):
    from llmcycle.errors import ModelLoadError

    engine = Engine.load(make_tiny_model("llama"))
    with pytest.raises(DataError, match="empty prompt"):
        engine.generate(["  "])
    with pytest.raises(DataError, match="context"):
        engine.generate(["hello there " * 300])
    with pytest.raises(DataError, match="empty conversation"):
        engine.chat([[]])
    (tmp_path / "config.json").write_text("{not json")
    with pytest.raises(ModelLoadError):
        Engine.load(tmp_path)
    near_end = engine.encode_prompt("hello there " * 100)[: engine.context_length - 3]
    [c] = engine.generate_ids([near_end], GenerationSettings(max_new_tokens=50, min_new_tokens=50, temperature=0))
    assert len(c.token_ids) == 3 and c.finish_reason == "length"  # clipped to the context that is left
