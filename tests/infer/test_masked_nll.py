"""Perplexity and bias-pair scoring (`masked_nll`, the engine's scoring) give the same numbers whatever the batch
and whichever forward computes them."""

import random

import pytest
import torch
from transformers import AutoModelForCausalLM

from llmcycle.evaluate.perplexity import score_records
from llmcycle.infer import Engine
from llmcycle.loading import load_tokenizer_for


@pytest.fixture(scope="module")
def engines(make_tiny_model):
    path = make_tiny_model("llama")
    model = AutoModelForCausalLM.from_pretrained(path).eval()
    tokenizer = load_tokenizer_for(path)
    return Engine(model, tokenizer, fast=True), Engine(model, tokenizer, fast=False)


def rows(n: int = 6) -> list[tuple[list[int], list[bool]]]:
    rng = random.Random(0)
    out = []
    for i in range(n):
        ids = [rng.randrange(3, 200) for _ in range(5 + 3 * i)]
        out.append((ids, [False] + [rng.random() < 0.7 for _ in ids[1:]]))
    return out


def test_batch_one_equals_batch_n(engines):
    fast, _ = engines
    together, counts = fast.masked_nll(rows())
    alone = [fast.masked_nll([row]) for row in rows()]
    assert counts == [c for _, (c,) in alone]
    assert together == pytest.approx([nll for (nll,), _ in alone], abs=1e-5)


def test_fast_backend_and_transformers_score_alike(engines):
    fast, plain = engines
    assert fast.backend_name == "fast" and plain.backend_name == "transformers"
    (fast_nll, fast_counts), (plain_nll, plain_counts) = fast.masked_nll(rows()), plain.masked_nll(rows())
    assert fast_counts == plain_counts and fast_nll == pytest.approx(plain_nll, rel=1e-5)
    ids, mask = rows()[3]
    with torch.inference_mode():  # teacher forcing through our own forward: the same NLL to 1e-5
        logits = fast.backend.start(torch.tensor([ids[:1]]), torch.ones(1, 1, dtype=torch.long), len(ids))
        nll = 0.0
        for position, token in enumerate(ids[1:], start=1):
            if mask[position]:
                nll -= float(torch.log_softmax(logits.float(), -1)[0, token])
            logits = fast.backend.step(torch.tensor([token]))
    assert nll == pytest.approx(fast.masked_nll([(ids, mask)])[0][0], abs=1e-5)


def test_perplexity_scores_through_the_same_function(engines):
    fast, _ = engines
    records = [{"text": "hello there friend"}, {"text": "a longer line of text to score here"}]
    one = [score_records(fast.model, fast.tokenizer, [r], batch_size=1).nll_nats for r in records]
    both = score_records(fast.model, fast.tokenizer, records, batch_size=8).nll_nats
    assert both == pytest.approx(sum(one), abs=1e-5)


def reference_logprobs(engine, context, target):
    """Teacher forcing of one (context, target) through the model's own forward, no padding, no batching."""
    with torch.inference_mode():
        logits = engine.model(torch.tensor([list(context) + list(target)])).logits[0].float()
    logp = torch.log_softmax(logits, -1)
    return [float(logp[len(context) - 1 + i, t]) for i, t in enumerate(target)]


def test_every_loglik_path_scores_alike_at_batch_1_and_n_on_both_backends(engines):
    """Benchmarks (separate and shared-context questions), bias pairs and perplexity: each path, on the fast
    backend and on transformers, at batch 1 and batch N (padded rows of different lengths; packed rows of a
    context and its answers on the fast backend), equals plain teacher forcing of each sequence alone to 1e-5."""
    from llmcycle.infer.packed import packable
    from llmcycle.infer.scoring import score_questions, score_shared_context, score_texts

    assert packable(engines[0].backend) and not packable(engines[1].backend)

    questions = [([5, 17, 33], [[12], [40, 41, 42], [40, 41, 7]]), ([9, 8, 7, 6, 5, 4, 3, 2], [[100, 3, 9], [11]]),
                 ([4], [[1, 2, 3, 4, 5], [1, 2, 3, 4, 6]])]
    pairs = [(c, t) for c, conts in questions for t in conts]
    expected = [reference_logprobs(engines[1], c, t) for c, t in pairs]
    texts = ["the nurse said she would help", "the engineer said he would help them all"]
    for engine in engines:
        for batch in (1, len(pairs)):
            got = engine.score_ids([c for c, _ in pairs], [t for _, t in pairs], batch_size=batch)
            assert [x for row in got for x in row] == pytest.approx([x for row in expected for x in row], abs=1e-5)
            packed = score_questions(engine, questions, batch_size=batch)
            assert [x for q in packed for row in q for x in row] == pytest.approx(
                [x for row in expected for x in row], abs=1e-5)
        shared = score_shared_context(engine, *questions[0], batch_size=2)
        assert [x for row in shared for x in row] == pytest.approx([x for row in expected[:3] for x in row], abs=1e-5)
        assert score_texts(engine, texts, None, batch_size=1) == pytest.approx(
            score_texts(engines[1], texts, None, batch_size=2), abs=1e-5)
        records = [{"text": t} for t in texts]
        alone = sum(score_records(engine.model, engine.tokenizer, [r], batch_size=1).nll_nats for r in records)
        assert score_records(engine.model, engine.tokenizer, records, batch_size=2).nll_nats == pytest.approx(
            alone, abs=1e-5)


def test_head_on_scored_positions_only_equals_full_logits(engines):
    from llmcycle.infer.scoring import plain_head

    fast, _ = engines
    assert plain_head(fast.model)  # a llama: the head runs on the scored positions only
    got, counts = fast.masked_nll(rows())
    with torch.inference_mode():
        for (ids, mask), nll, count in zip(rows(), got, counts):
            logprobs = torch.log_softmax(fast.model(input_ids=torch.tensor([ids])).logits[0].float(), -1)
            expected = -sum(float(logprobs[i - 1, ids[i]]) for i in range(1, len(ids)) if mask[i])
            assert count == sum(mask[1:]) and nll == pytest.approx(expected, abs=1e-4)


def test_perplexity_through_the_packed_forward_equals_transformers(engines):
    """The eval's perplexity on the fast backend (packed rows, row-major weights, head on scored tokens only)
    equals the transformers forward's to 1e-5 relative, as one padded batch and one record at a time."""
    fast, plain = engines
    records = [{"text": "hello there friend"}, {"text": "a longer line of text to score here, with more words"},
               {"messages": [{"role": "user", "content": "hi, how are you?"},
                             {"role": "assistant", "content": "fine thanks, and you?"},
                             {"role": "user", "content": "good"}, {"role": "assistant", "content": "great to hear"}]}]
    reference = score_records(plain.model, plain.tokenizer, records, batch_size=8)
    for batch in (1, 8):
        got = score_records(fast.model, fast.tokenizer, records, batch_size=batch, backend=fast.backend)
        assert (got.tokens, got.n_bytes) == (reference.tokens, reference.n_bytes)
        assert got.perplexity == pytest.approx(reference.perplexity, rel=1e-5)
        assert got.nll_nats == pytest.approx(reference.nll_nats, rel=1e-5)
    plain_rows, packed_rows = plain.masked_nll(rows()), fast.masked_nll(rows())
    assert packed_rows[1] == plain_rows[1]
    assert packed_rows[0] == pytest.approx(plain_rows[0], rel=1e-5)
