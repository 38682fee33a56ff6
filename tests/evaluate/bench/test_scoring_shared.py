"""Shared-context scoring gives the same log-probabilities as scoring each (context, continuation) pair alone."""

from __future__ import annotations

import pytest


@pytest.fixture(scope="module")
def engine(make_tiny_model):
    from llmcycle.infer import Engine

    return Engine.load(make_tiny_model("llama"))


def test_shared_context_equals_separate_scoring(engine):
    from llmcycle.infer.scoring import score_shared_context

    context = [5, 17, 33, 8, 91, 4]
    continuations = [[12], [40, 41, 42], [7, 7], [100, 3, 9, 250, 11]]
    shared = score_shared_context(engine, context, continuations, batch_size=3)
    separate = engine.score_ids([context] * len(continuations), continuations, batch_size=1)
    assert [len(r) for r in shared] == [len(c) for c in continuations]
    for a, b in zip(shared, separate):
        assert a == pytest.approx(b, abs=1e-5)


def test_continuations_sharing_their_first_tokens(engine):
    from llmcycle.infer.scoring import score_shared_context

    context = [9, 8, 7]
    continuations = [[50, 51, 52, 60], [50, 51, 52, 61, 62], [50, 51, 52, 63]]  # three shared, then apart
    shared = score_shared_context(engine, context, continuations)
    separate = engine.score_ids([context] * 3, continuations, batch_size=1)
    for a, b in zip(shared, separate):
        assert a == pytest.approx(b, abs=1e-5)
    same = score_shared_context(engine, context, [[5, 6], [5, 6]])  # identical answers score identically
    assert same[0] == same[1] == pytest.approx(engine.score_ids([context], [[5, 6]])[0], abs=1e-5)


def test_one_token_answers_skip_the_second_forward(engine):
    from llmcycle.infer.scoring import score_shared_context

    shared = score_shared_context(engine, [5, 6, 7], [[1], [2]])
    separate = engine.score_ids([[5, 6, 7]] * 2, [[1], [2]])
    assert [r[0] for r in shared] == pytest.approx([r[0] for r in separate], abs=1e-5)


def test_overlong_text_is_a_user_error(engine):
    from llmcycle.errors import DataError
    from llmcycle.infer.scoring import score_shared_context

    with pytest.raises(DataError, match="context"):
        score_shared_context(engine, [1] * engine.context_length, [[2, 3]])


def test_batched_questions_equal_separate_scoring(engine):
    from llmcycle.infer.scoring import score_questions

    questions = [([5, 17, 33], [[12], [40, 41, 42], [40, 41, 7]]),
                 ([9, 8, 7, 6, 5, 4, 3, 2], [[100, 3, 9], [11, 12]]),
                 ([4], [[1, 2, 3, 4, 5], [1, 2, 3, 4, 6]]),
                 ([20, 21], [[30], [31]])]
    batched = score_questions(engine, questions, batch_size=3)
    for (context, conts), got in zip(questions, batched):
        separate = engine.score_ids([context] * len(conts), conts, batch_size=1)
        assert [len(r) for r in got] == [len(c) for c in conts]
        for a, b in zip(got, separate):
            assert a == pytest.approx(b, abs=1e-5)


def test_tails_of_very_different_lengths_run_in_groups_and_score_the_same(engine):
    from llmcycle.infer.lengths import length_groups
    from llmcycle.infer.scoring import score_questions

    lengths = [2, 3, 3, 4, 9, 10, 11, 12, 30, 31, 33, 40]
    groups = length_groups([n - 1 for n in lengths])
    assert len(groups) > 1 and sorted(i for g in groups for i in g) == list(range(len(lengths)))
    questions = [([5 + q, 17, 33], [[(q * 7 + i * 3 + j) % 90 + 3 for j in range(n)] for i, n in
                                    enumerate(lengths[q::3])]) for q in range(3)]
    batched = score_questions(engine, questions, batch_size=3)
    for (context, conts), got in zip(questions, batched):
        separate = engine.score_ids([context] * len(conts), conts, batch_size=1)
        for a, b in zip(got, separate):
            assert a == pytest.approx(b, abs=1e-5)
