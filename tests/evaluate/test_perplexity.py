"""Perplexity and bits-per-byte of models whose probabilities we set, so the right answer is known exactly."""

from __future__ import annotations

import math

import pytest

from llmcycle.evaluate.perplexity import (
    Target, record_targets, score_each, score_records, turn_targets, unigram_score, windows,
)
from llmcycle.infer.scoring import masked_nll
from llmcycle.loading import load_model, load_tokenizer_for
from llmcycle.records import load_split


def test_uniform_model_has_perplexity_v_and_known_bits_per_byte(uniform_model_dir, chat_data_dir):
    model, tok = load_model(uniform_model_dir), load_tokenizer_for(uniform_model_dir)
    vocab = model.config.vocab_size
    test = load_split(chat_data_dir, "test")
    score = score_records(model, tok, test, batch_size=4)
    assert score.perplexity == pytest.approx(vocab, rel=1e-5)
    replies = [m["content"] for r in test for m in r["messages"] if m["role"] == "assistant"]
    # only assistant tokens are scored: each reply's own tokens plus its end-of-turn token
    expected_tokens = sum(len(tok(c, add_special_tokens=False)["input_ids"]) + 1 for c in replies)
    expected_bytes = sum(len(c.encode("utf-8")) for c in replies)
    assert (score.tokens, score.n_bytes) == (expected_tokens, expected_bytes)
    assert score.bits_per_byte == pytest.approx(expected_tokens * math.log2(vocab) / expected_bytes, rel=1e-5)


def test_known_distribution_gives_hand_computed_bits_per_byte(char_tokenizer, fixed_distribution):
    a, b = ord("a"), ord("b")
    model = fixed_distribution({a: 0.5, b: 0.25})
    score = score_records(model, char_tokenizer, [{"text": "abab"}, {"text": "b"}])
    bits = 1 + 2 + 1 + 2 + 2  # -log2 of 0.5, 0.25, 0.5, 0.25 | 0.25
    assert score.tokens == 5 and score.n_bytes == 5
    assert score.bits_per_byte == pytest.approx(bits / 5)
    assert score.perplexity == pytest.approx(2 ** (bits / 5))
    each = score_each(model, char_tokenizer, [{"text": "abab"}, {"text": "b"}])
    assert [s.nll_nats / math.log(2) for s in each] == pytest.approx([6, 2])


def test_text_longer_than_the_context_is_scored_once_per_token(char_tokenizer, fixed_distribution):
    model = fixed_distribution({ord("a"): 0.5})  # context 8 tokens
    text = "a" * 50
    score = score_records(model, char_tokenizer, [{"text": text}])
    assert score.tokens == 50 and score.bits_per_byte == pytest.approx(1.0)
    pieces = windows(Target(list(range(51)), [False] + [True] * 50, 50), 8)
    scored = [tok for ids, mask in pieces for tok, m in zip(ids, mask) if m]
    assert scored == list(range(1, 51)) and all(len(ids) <= 8 and not mask[0] for ids, mask in pieces)


RECORD = {"messages": [{"role": "system", "content": "be brief"}, {"role": "user", "content": "hi"},
                       {"role": "assistant", "content": "hello"}, {"role": "user", "content": "how are you"},
                       {"role": "assistant", "content": "fine, thanks"}]}


def test_chat_turns_are_conditioned_on_the_rendered_conversation(make_tiny_model):
    tok = load_tokenizer_for(make_tiny_model("llama"))
    first, second = turn_targets(tok, RECORD["messages"], "x")
    prompt = tok.apply_chat_template(RECORD["messages"][:4], add_generation_prompt=True, tokenize=False)
    start = second.mask.index(True)
    assert tok.decode(second.ids[:start]) == prompt and all(second.mask[start:])
    assert tok.decode(second.ids[start:]) == "fine, thanks" + tok.eos_token
    assert first.n_bytes == 5 and second.n_bytes == 12
    (whole,) = record_targets(tok, RECORD, "x")  # one sequence, both replies and their EOS marked
    scored = tok.decode([t for t, m in zip(whole.ids, whole.mask) if m])
    assert scored == f"hello{tok.eos_token}fine, thanks{tok.eos_token}"
    assert whole.n_bytes == 17


def test_one_pass_scoring_equals_turn_by_turn(make_tiny_model):
    model_dir = make_tiny_model("llama")
    model, tok = load_model(model_dir), load_tokenizer_for(model_dir)
    turns = turn_targets(tok, RECORD["messages"], "x")
    (whole,) = record_targets(tok, RECORD, "x")
    nll_turns, count_turns = masked_nll(model, [(t.ids, t.mask, 0) for t in turns], tok.pad_token_id)
    nll_whole, count_whole = masked_nll(model, [(whole.ids, whole.mask, 0)], tok.pad_token_id)
    assert sum(count_turns) == count_whole[0]
    assert sum(nll_turns) == pytest.approx(nll_whole[0], rel=1e-4)


def test_unigram_baseline_matches_counts(char_tokenizer):
    score = unigram_score(char_tokenizer, [{"text": "aab"}], [{"text": "ab"}])
    total = 3 + 128  # add-one smoothing over 128 tokens: counts a=2, b=1
    expected = -(math.log(3 / total) + math.log(2 / total))
    assert score.nll_nats == pytest.approx(expected) and score.tokens == 2
