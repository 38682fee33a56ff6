"""Paired comparisons from sample rows: a benchmark accuracy difference with its sign test, and chrF deltas."""

from __future__ import annotations

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
