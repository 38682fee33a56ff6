"""Each decoding knob, on logits directly and through the engine on a tiny model."""

from __future__ import annotations

import math

import pytest
import torch

from llmcycle.errors import ConfigError
from llmcycle.infer import Engine, GenerationSettings
from llmcycle.infer import sampling
from llmcycle.infer.settings import parse_knob

PROMPT = "hello there, how are"


@pytest.fixture(scope="module")
def engine(make_tiny_model):
    return Engine.load(make_tiny_model("llama"))


def greedy(engine, n=20, **kw):
    settings = GenerationSettings(max_new_tokens=n, min_new_tokens=n, temperature=0, **kw)
    return engine.generate([PROMPT], settings)[0]


def test_repetition_penalty_lowers_seen_tokens():
    logits = torch.tensor([[2.0, -1.0, 0.5, 1.0]])
    history = torch.tensor([[0, 1, 1]])
    before = logits.softmax(-1)
    after = sampling.repetition_penalty(logits, history, 2.0).softmax(-1)
    assert after[0, 0] < before[0, 0] and after[0, 1] < before[0, 1]  # seen: positive and negative logits
    assert after[0, 2] > before[0, 2] and after[0, 3] > before[0, 3]  # unseen gain what the seen lose
    assert sampling.repetition_penalty(logits, history, 2.0)[0, 1] == -2.0


def test_top_k_top_p_min_p_keep_the_right_tokens():
    logits = torch.log(torch.tensor([[0.5, 0.3, 0.15, 0.05]]))
    assert torch.isinf(sampling.top_k(logits, 2)).tolist() == [[False, False, True, True]]
    assert torch.isinf(sampling.top_p(logits, 0.75)).tolist() == [[False, False, True, True]]
    assert torch.isinf(sampling.top_p(logits, 0.1)).tolist() == [[False, True, True, True]]
    assert torch.isinf(sampling.min_p(logits, 0.4)).tolist() == [[False, False, True, True]]
    assert not torch.isinf(sampling.top_p(logits, 1.0)).any()


def test_min_new_tokens_suppresses_eos():
    settings = GenerationSettings(min_new_tokens=2, temperature=0)
    pipeline = sampling.LogitsPipeline(settings, eos_ids=[3])
    logits = torch.tensor([[0.0, 0.0, 0.0, 9.0]])
    assert pipeline.choose(logits, None, 0).item() != 3
    assert pipeline.choose(logits, None, 2).item() == 3


def test_banned_ngrams():
    assert sampling.banned_ngram_tokens([1, 2, 3, 1], 2) == {2}
    assert sampling.banned_ngram_tokens([1, 2, 3, 1, 2], 3) == {3}


def test_temperature_zero_and_top_k_one_are_greedy(engine):
    reference = greedy(engine).token_ids
    hot = dict(max_new_tokens=20, min_new_tokens=20, do_sample=True, seed=3)
    assert engine.generate([PROMPT], GenerationSettings(temperature=0, **hot))[0].token_ids == reference
    assert engine.generate([PROMPT], GenerationSettings(temperature=1.5, top_k=1, **hot))[0].token_ids == reference
    sampled = engine.generate([PROMPT], GenerationSettings(temperature=1.5, **hot))[0].token_ids
    assert sampled != reference


def test_sampling_reproducible_with_seed(engine):
    def sample(seed):
        s = GenerationSettings(max_new_tokens=24, min_new_tokens=24, temperature=1.2, top_p=0.95, seed=seed)
        return engine.generate([PROMPT, "we went up to"], s)

    first, again, other = sample(7), sample(7), sample(8)
    assert [c.token_ids for c in first] == [c.token_ids for c in again]
    assert [c.token_ids for c in first] != [c.token_ids for c in other]


def test_row_seeds_give_each_row_its_own_draws(engine):
    """Rows with the same seed and prompt draw the same tokens whatever their batch; other seeds draw others."""
    s = GenerationSettings(max_new_tokens=24, min_new_tokens=24, temperature=1.2, top_p=0.95, seed=0)
    ids = engine.encode_prompt(PROMPT)
    batch = engine.generate_ids([ids, ids, ids], s, batch_size=3, seeds=[3, 3, 4])
    alone = engine.generate_ids([ids], s, batch_size=1, seeds=[3])
    assert batch[0].token_ids == batch[1].token_ids == alone[0].token_ids
    assert batch[2].token_ids != batch[0].token_ids


def bigrams(ids):
    return list(zip(ids, ids[1:]))


def test_no_repeat_ngram_size_two(engine):
    plain = greedy(engine, 60).token_ids
    assert len(set(bigrams(plain))) < len(bigrams(plain)), "the tiny model should repeat itself without the knob"
    prompt_ids = engine.encode_prompt(PROMPT)
    [blocked] = engine.generate_ids([prompt_ids], GenerationSettings(max_new_tokens=60, min_new_tokens=60,
                                                                      temperature=0, no_repeat_ngram_size=2))
    pairs = bigrams(prompt_ids + blocked.token_ids)
    assert len(set(pairs)) == len(pairs)


def test_repetition_penalty_reduces_repeats(engine):
    plain = greedy(engine, 40).token_ids
    penalised = greedy(engine, 40, repetition_penalty=3.0).token_ids
    assert len(set(penalised)) > len(set(plain))


def test_stop_string_truncates(engine):
    full = greedy(engine, 30)
    text = full.text
    start = next(i for i in range(4, len(text) - 2) if text[i:i + 2].isalpha())
    stop = text[start:start + 2]
    cut = greedy(engine, 30, stop=[stop])
    assert cut.finish_reason == "stop"
    assert cut.text == text[:text.find(stop)]
    assert len(cut.token_ids) < len(full.token_ids)
    streamed = "".join(engine.stream(PROMPT, GenerationSettings(max_new_tokens=30, temperature=0, stop=[stop])))
    assert streamed == cut.text


def test_stop_token_ids_end_a_sequence(engine):
    full = greedy(engine, 20)
    stop_id = full.token_ids[5]
    cut = engine.generate([PROMPT], GenerationSettings(max_new_tokens=20, temperature=0, stop_token_ids=[stop_id]))[0]
    assert cut.finish_reason == "stop"
    assert cut.token_ids == full.token_ids[:full.token_ids.index(stop_id)]


def test_beam_search_scores_at_least_greedy(engine):
    prompt_ids = engine.encode_prompt(PROMPT)
    n = 6
    fixed = dict(max_new_tokens=n, min_new_tokens=n, temperature=0, length_penalty=0.0)
    [plain] = engine.generate_ids([prompt_ids], GenerationSettings(**fixed))
    [beam] = engine.generate_ids([prompt_ids], GenerationSettings(num_beams=4, **fixed))
    out = engine.model.generate(torch.tensor([prompt_ids]), do_sample=False, num_beams=4, max_new_tokens=n,
                                min_new_tokens=n, length_penalty=0.0, pad_token_id=engine.pad_token_id)
    assert beam.token_ids == out[0, len(prompt_ids):].tolist()
    greedy_lp, beam_lp = (sum(s) for s in engine.score_ids([prompt_ids] * 2, [plain.token_ids, beam.token_ids]))
    assert beam_lp >= greedy_lp - 1e-4


@pytest.mark.parametrize("knobs, message", [
    (dict(temperature=-0.5), "temperature"), (dict(top_p=0.0), "top_p"), (dict(top_p=1.5), "top_p"),
    (dict(top_k=-1), "top_k"), (dict(min_p=1.0), "min_p"), (dict(repetition_penalty=0), "repetition_penalty"),
    (dict(max_new_tokens=0), "max_new_tokens"), (dict(num_beams=0), "num_beams"), (dict(stop=[""]), "stop"),
    (dict(temperature="hot"), "temperature"),
])
def test_bad_knobs(knobs, message):
    with pytest.raises(ConfigError, match=message):
        GenerationSettings(**knobs)


def test_knob_text_parsing():
    s = GenerationSettings()
    assert s.with_text_value("temperature", "0.7").temperature == 0.7
    assert s.with_text_value("do_sample", "off").do_sample is False
    assert s.with_text_value("stop", "a,\\n").stop == ["a", "\n"]
    assert s.with_text_value("seed", "none").seed is None
    with pytest.raises(ConfigError, match="unknown knob"):
        parse_knob("warmth", "1")
    with pytest.raises(ConfigError, match="top_k"):
        parse_knob("top_k", "many")


def test_defaults_from_generation_config(make_tiny_model, tmp_path):
    import json
    import shutil

    model_dir = tmp_path / "m"
    shutil.copytree(make_tiny_model("llama"), model_dir)
    config = json.loads((model_dir / "generation_config.json").read_text())
    config.update(temperature=0.3, top_p=0.8, max_new_tokens=17, do_sample=True)
    (model_dir / "generation_config.json").write_text(json.dumps(config))
    settings = Engine.load(model_dir).default_settings
    assert (settings.temperature, settings.top_p, settings.max_new_tokens) == (0.3, 0.8, 17) and settings.sampling
    assert GenerationSettings.from_model(model_dir, temperature=0).temperature == 0
    assert math.isclose(GenerationSettings.from_model(model_dir).top_p, 0.8)


def test_unset_do_sample_follows_generate(make_tiny_model, tmp_path):
    """Like `generate`: a generation config without do_sample decodes greedily, its temperature/top_p inert; a
    sampling knob the user sets turns sampling on; do_sample=False keeps it off."""
    import json
    import shutil

    import torch

    model_dir = tmp_path / "m"
    shutil.copytree(make_tiny_model("llama"), model_dir)
    config = json.loads((model_dir / "generation_config.json").read_text())
    config.update(temperature=0.7, top_p=0.9)
    (model_dir / "generation_config.json").write_text(json.dumps(config))
    engine = Engine.load(model_dir)
    settings = engine.default_settings
    assert not settings.sampling and settings.temperature == 1.0
    assert not GenerationSettings().sampling
    ids = engine.tokenizer("hello there", add_special_tokens=False)["input_ids"]
    ours = [engine.generate_ids([ids], settings.replace(max_new_tokens=8, seed=s))[0].token_ids for s in (1, 2)]
    ref = engine.model.generate(torch.tensor([ids]), max_new_tokens=8, min_new_tokens=8,
                                generation_config=engine.model.generation_config)[0, len(ids):].tolist()
    assert ours[0] == ours[1] == ref[: len(ours[0])]
    assert GenerationSettings.from_model(model_dir, temperature=0.8).sampling
    assert not GenerationSettings.from_model(model_dir, temperature=0.8, do_sample=False).sampling


def test_rows_chosen_together_draw_what_each_draws_alone():
    """Batched token choice: rows with the same settings are processed in one call, and each sampled row still
    draws exactly what its own pipeline alone would (its seed, its generator); rows needing history stay alone."""
    vocab, eos = 50, [3]
    kinds = [dict(temperature=0.8, top_k=20, top_p=0.9, seed=1), dict(temperature=0.8, top_k=20, top_p=0.9, seed=2),
             dict(temperature=0.8, top_k=20, top_p=0.9, seed=3), dict(temperature=0.5, min_p=0.05, seed=4),
             dict(temperature=0), dict(temperature=0, min_new_tokens=3), dict(temperature=0.8, top_k=20, top_p=0.9,
                                                                               seed=5, min_new_tokens=2),
             dict(temperature=0.7, seed=6, repetition_penalty=1.3)]

    def pipelines():
        return [sampling.LogitsPipeline(GenerationSettings(max_new_tokens=8, **kw), eos) for kw in kinds]

    batched, alone = pipelines(), pipelines()
    generator = torch.Generator().manual_seed(0)
    for step in range(6):
        logits = torch.randn(len(kinds), vocab, generator=generator) * 3
        logits[:, eos] += 6.0  # eos is likely: min_new_tokens must hold it back
        chosen = sampling.choose_rows(batched, logits, [step] * len(kinds))
        assert sorted(chosen) == list(range(len(kinds) - 1))  # all but the row with a repetition penalty
        for row, pipeline in enumerate(alone):
            history = torch.tensor([[1, 2]]) if pipeline.needs_history else None
            expected = int(pipeline.choose(logits[row:row + 1], history, step)[0])
            if row in chosen:
                assert chosen[row] == expected, (step, row)
            else:
                batched[row].choose(logits[row:row + 1], history, step)  # keep its generator in step
        assert chosen[5] != 3 or step >= 3
