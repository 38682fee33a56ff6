"""Text metrics on cases small enough to check by hand."""

from __future__ import annotations

import pytest

from llmcycle.evaluate.textmetrics import (
    bleu, chrf, distinct_n, generation_metrics, lcs_length, mean_words, repetition_rate, rouge_l, words,
)


def test_bleu_and_chrf_of_identical_strings_are_100_and_drop_for_other_text():
    refs = ["the cat sat on the mat today", "i went hiking with my friends"]
    assert bleu(refs, refs) == pytest.approx(100.0)
    assert chrf(refs, refs) == pytest.approx(100.0)
    other = ["a dog ran in the park", "we stayed home and slept"]
    assert bleu(other, refs) < 20 and chrf(other, refs) < 40
    assert bleu([], []) == 0.0


def test_lcs_and_rouge_l_of_known_pairs():
    assert lcs_length("abcbdab", "bdcaba") == 4  # the textbook example
    assert lcs_length([], ["x"]) == 0
    assert rouge_l("the cat sat", "the cat sat") == pytest.approx(1.0)
    # hyp 3 words, ref 4 words, LCS "the cat mat" = 3: P = 1, R = 3/4, F = 2*0.75/1.75
    assert rouge_l("the cat mat", "the cat on mat") == pytest.approx(2 * 0.75 / 1.75)
    # LCS of "a b c d" and "d c b a" is 1: P = R = 1/4
    assert rouge_l("a b c d", "d c b a") == pytest.approx(0.25)
    assert rouge_l("", "x") == 0.0 and rouge_l("x y", "z") == 0.0


def test_distinct_n_of_a_known_list():
    texts = ["a b a b", "a c"]
    # unigrams: a b a b a c -> 3 distinct of 6; bigrams: ab ba ab | ac -> 3 distinct of 4
    assert distinct_n(texts, 1) == pytest.approx(3 / 6)
    assert distinct_n(texts, 2) == pytest.approx(3 / 4)
    assert distinct_n([], 1) == 0.0


def test_repetition_rate_of_a_known_list():
    # "i know i know i know": bigrams (i know)(know i)(i know)(know i)(i know) -> 2 distinct of 5 -> 0.6 repeated
    # "hello there friend": no repeats -> 0; "hi": no bigram -> 0
    assert repetition_rate(["i know i know i know", "hello there friend", "hi"]) == pytest.approx(0.6 / 3)
    assert repetition_rate(["no repeats at all"]) == 0.0


def test_words_lengths_and_the_bundle():
    assert words("Hello, World!") == ["hello", ",", "world", "!"]
    assert mean_words(["a b", "c d e f"]) == 3.0
    metrics = generation_metrics(["the same reply"], ["the same reply"])
    assert metrics["bleu"] == pytest.approx(100) and metrics["rouge_l"] == pytest.approx(1.0)
    assert set(metrics) == {"bleu", "chrf", "rouge_l", "distinct_1", "distinct_2", "repetition_rate",
                            "mean_reply_words"}
