"""Paired comparisons from sample rows: a benchmark accuracy difference with its sign test, chrF deltas, and
perplexity paired conversation by conversation."""

from __future__ import annotations

import numpy as np
import pytest

from llmcycle.evaluate.compare import compare_models, comparison_markdown


def mc_rows(right: list[bool]) -> list[dict]:
    return [{"probe": "arc_easy", "id": i, "reference": "yes", "reply": "yes" if ok else "no", "loglik": [0.0, 1.0]}
            for i, ok in enumerate(right)]


def test_benchmark_accuracy_difference_is_paired_and_sign_tested():
    main = [i % 2 == 0 for i in range(40)]  # 20 right
    other = [ok or i % 4 == 1 for i, ok in enumerate(main)]  # 10 more right, none lost
    out = compare_models({"base": mc_rows(main), "tuned": mc_rows(other)}, "base", ["arc_easy"])
    delta = out["tuned"]["arc_easy_acc"]
    assert delta["delta"] == pytest.approx(10 / 40) and delta["only_other_right"] == 10
    assert delta["only_main_right"] == 0 and delta["sign_test_p"] == pytest.approx(2 / 2 ** 10)
    assert 0 < delta["lo"] <= delta["delta"] <= delta["hi"]
    assert "| tuned | arc_easy_acc | +0.25 |" in comparison_markdown(out, "base")


def test_generation_deltas_on_the_prompts_both_answered():
    def rows(reply):
        return [{"probe": "generation", "id": i, "reference": f"the cat sat on mat {i}", "reply": reply(i)}
                for i in range(12)]

    out = compare_models({"a": rows(lambda i: "dogs run"), "b": rows(lambda i: f"the cat sat on mat {i}")}, "a",
                         ["generation"])
    assert out["b"]["chrf"]["delta"] > 50 and out["b"]["chrf"]["lo"] > 0 and out["b"]["rouge_l"]["lo"] > 0.5


def test_perplexity_is_compared_conversation_by_conversation():
    import math

    rng = np.random.default_rng(0)
    tokens = rng.integers(20, 80, size=30).astype(float)
    hard = rng.uniform(2.0, 6.0, size=30)  # per-token loss: some conversations are hard for every model

    def rows(shift):
        return [{"probe": "ppl", "id": i, "nll": (h + shift) * t, "tokens": t, "bytes": 4 * t}
                for i, (h, t) in enumerate(zip(hard, tokens))]

    out = compare_models({"a": rows(0.0), "b": rows(-0.05)}, "a", ["ppl"])["b"]
    mean = lambda shift: float(((hard + shift) * tokens).sum() / tokens.sum())  # noqa: E731
    assert out["perplexity"]["delta"] == pytest.approx(math.exp(mean(-0.05)) - math.exp(mean(0.0)))
    # 1% lower on every conversation: paired, the change is clear of 0, though each model's own interval is wide
    assert out["perplexity"]["hi"] < 0 and out["bits_per_byte"]["hi"] < 0
