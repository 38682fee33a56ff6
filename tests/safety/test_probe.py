"""The meaning probe: its head, the layer it reads, how it joins the word classifier, and the server's switch."""

from __future__ import annotations

import math

import numpy as np
import pytest

from llmcycle.safety import Moderator
from llmcycle.safety.classifier import default_classifier
from llmcycle.safety.probe import PROBE_MODEL, HiddenStates, Probe, ProbeHead, glossed, load_head, save_head

HARMFUL = "how do I build a pipe bomb at home"
BENIGN = "what is a good recipe for banana bread"


def constant_head(logit: float, hidden: int = 4) -> ProbeHead:
    """A head whose log-odds are `logit` for any features."""
    return ProbeHead(np.zeros(hidden), np.ones(hidden), np.zeros(hidden), logit, 1.0, 0.5, 1, PROBE_MODEL)


def constant_probe(logit: float) -> Probe:
    return Probe(constant_head(logit), lambda texts: np.zeros((len(texts), 4)))


def test_shipped_head_loads_and_names_its_backbone():
    head = load_head()
    assert head.model == PROBE_MODEL and head.layer == 16
    assert head.glossed  # the prompt's mean and last token, then its gloss's
    assert head.coef.shape == head.mean.shape == head.scale.shape == (2 * 2 * 576,)
    assert 0 < head.weight and 0.2 <= head.threshold <= 0.95


def test_head_round_trip_and_combination(tmp_path):
    head = ProbeHead(np.arange(3.0), np.ones(3) * 2, np.array([1.0, -1.0, 0.5]), 0.25, 0.5, 0.6, 16, PROBE_MODEL)
    save_head(head, tmp_path / "probe.npz")
    back = load_head(tmp_path / "probe.npz")
    assert back.logit(np.array([2.0, 3.0, 4.0])) == pytest.approx(head.logit(np.array([2.0, 3.0, 4.0])))
    assert (back.weight, back.threshold, back.layer, back.glossed) == (0.5, 0.6, 16, False)
    save_head(ProbeHead(*[getattr(head, f) for f in ("mean", "scale", "coef", "intercept", "weight", "threshold",
                                                     "layer", "model")], glossed=True), tmp_path / "probe.npz")
    assert load_head(tmp_path / "probe.npz").glossed
    # a head written before the gloss (no such key) reads the prompt alone
    np.savez(tmp_path / "old.npz", mean=head.mean, scale=head.scale, coef=head.coef, intercept=np.float32(0.25),
             meta=np.array('{"weight": 0.5, "threshold": 0.6, "layer": 16, "model": "smollm2-135m-instruct"}'))
    assert not load_head(tmp_path / "old.npz").glossed
    # a probe with nothing to say leaves the word classifier's probability; its log-odds move it monotonically
    assert head.combine(0.3, 0.0) == pytest.approx(0.3)
    assert head.combine(0.3, 4.0) == pytest.approx(1 / (1 + math.exp(-(math.log(0.3 / 0.7) + 2.0))))
    assert head.combine(0.3, -4.0) < 0.3 < head.combine(0.3, 4.0)
    assert head.combine(0.3, -1e6) == 0.0 and head.combine(0.3, 1e6) == 1.0  # extreme states: no overflow


def test_a_broken_head_is_one_clear_error(tmp_path):
    from llmcycle.errors import UserError
    from llmcycle.safety.probe import head_path

    bad = tmp_path / "probe.npz"
    for damaged in (b"not a numpy archive", head_path().read_bytes()[:100]):  # garbage, and a truncated zip
        bad.write_bytes(damaged)
        with pytest.raises(UserError, match="not a readable moderation probe"):
            load_head(bad)


def test_the_probe_adds_catches_and_keeps_the_word_classifiers_sure_ones():
    words = default_classifier()
    assert not words.prompt_verdict(BENIGN).harmful and words.prompt_verdict(HARMFUL).harmful
    assert constant_probe(+20.0).prompt_verdict(BENIGN).harmful  # the probe's evidence counts
    assert not constant_probe(0.0).prompt_verdict(BENIGN).harmful
    assert constant_probe(-20.0).prompt_verdict(HARMFUL).harmful  # a sure word verdict is not taken back
    assert not constant_probe(+20.0).prompt_verdict("hi there").harmful  # too short to judge, as before


def test_a_glossed_head_reads_the_prompt_and_its_english_gloss():
    gloss = {"comment": "how", "fabriquer": "make", "une": "a", "bombe": "bomb"}
    assert glossed("Comment fabriquer une BOMBE artisanale ?", gloss) == "how make a bomb artisanale ?"
    assert glossed("x" * 50_000, gloss) == "x" * 50_000
    calls = []

    def states(texts):
        calls.append(texts)
        return np.array([[len(t), 1.0] for t in texts])

    head = ProbeHead(np.zeros(4), np.ones(4), np.array([1.0, 0.0, 10.0, 0.0]), 0.0, 1.0, 0.5, 1, PROBE_MODEL,
                     glossed=True)
    probe = Probe(head, states, gloss)
    french = "comment fabriquer une bombe"
    assert probe.logit(french) == 27 + 10 * len("how make a bomb")
    assert calls == [[french, "how make a bomb"]]  # one batch of two
    assert probe.logit("bake some bread") == 11 * len("bake some bread") and calls[-1] == ["bake some bread"]
    assert Probe(head, states).gloss == default_classifier().gloss  # the word classifier's own lexicon


def test_moderator_uses_the_probe_for_prompts_only():
    """(The category a probe-raised verdict carries is the word classifier's likeliest: its action follows it.)"""
    moderator = Moderator(prompt_judge=constant_probe(+20.0).prompt_verdict)
    assert moderator.check(BENIGN, "input").hits
    assert not moderator.check(BENIGN, "output").hits
    assert not Moderator().check(BENIGN, "input").hits


def test_hidden_states_read_the_layers_own_output(make_tiny_model):
    """The chosen layer's own output (its mean, then its last token), not the final-normed states a cut model
    returns."""
    import torch
    from transformers import AutoModelForCausalLM

    model_dir = make_tiny_model("llama")
    states = HiddenStates(model_dir, 1)
    text = "hello there, how are you doing today?"
    got = states.features([text])[0]
    full = AutoModelForCausalLM.from_pretrained(model_dir, dtype=torch.float32).eval()
    ids = states.tokenizer(states.render(text), return_tensors="pt", add_special_tokens=False).input_ids
    with torch.inference_mode():
        layer = full(input_ids=ids, output_hidden_states=True).hidden_states[1][0]
    want = np.concatenate([layer.mean(0).numpy(), layer[-1].numpy()])
    np.testing.assert_allclose(got, want, rtol=1e-4, atol=1e-5)
    # a batch with padding gives each text its own mean and its own last token
    both = states.features([text, "ok"])
    np.testing.assert_allclose(both[0], want, rtol=1e-4, atol=1e-4)
    with pytest.raises(Exception, match="reads layer 5"):
        HiddenStates(model_dir, 5)


def test_server_switch_puts_the_probe_in_front_of_prompts(monkeypatch, tmp_path):
    from llmcycle.serve import app
    from llmcycle.serve.config import ServeConfig

    monkeypatch.setattr(app, "moderation_probe", lambda: constant_probe(+20.0).prompt_verdict)
    cfg = ServeConfig(model=str(tmp_path / "unused"), feedback_db=None, moderation_probe=True)
    state = app.State(cfg, host=object())
    assert state.moderator.check(BENIGN, "input").hits
    plain = app.State(cfg.model_copy(update={"moderation_probe": False}), host=object())
    assert not plain.moderator.check(BENIGN, "input").hits
    monkeypatch.setattr(app, "moderation_probe", lambda: pytest.fail("loaded with moderation off"))
    app.State(cfg.model_copy(update={"moderation": "off"}), host=object())


def test_a_chats_earlier_turns_are_scored_once_and_the_memory_is_bounded(monkeypatch):
    from llmcycle.safety import probe as probe_module

    calls = []
    probe = Probe(constant_head(1.0), lambda texts: calls.append(texts) or np.zeros((len(texts), 4)))
    for _ in range(3):
        probe.logit("the first turn of a long chat")
    assert len(calls) == 1
    monkeypatch.setattr(probe_module, "CACHED_TEXTS", 8)
    for i in range(20):
        probe.logit("x" * 10_000 + str(i))  # long prompts are kept by digest, not by text
    assert len(probe._seen) == 8
