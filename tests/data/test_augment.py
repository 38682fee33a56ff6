"""Counterfactual augmentation: gendered words and names swap both ways, case kept; only train is augmented,
balanced, switchable, and counted in the card."""

from __future__ import annotations

import json
from collections import Counter

from llmcycle.data.augment import swap_text


def test_swaps_both_ways_keeping_case():
    counts = Counter()
    text = "He gave her book to her. John and his Wife met Mary; SHE left."
    swapped = swap_text(text, counts)
    assert swapped == "She gave his book to him. Mary and her Husband met John; HE left."
    assert counts == Counter(to_female=2, to_male=4, names=2)
    assert swap_text(swap_text("He met Mary and his aunt.", Counter()), Counter()) == "He met Mary and his aunt."
    assert swap_text("the hero ate an apple", Counter()) == "the hero ate an apple"  # no partial-word swaps


def chat(i, text):
    return {"messages": [{"role": "user", "content": f"tell me about record {i}"},
                         {"role": "assistant", "content": text}], "meta": {"id": i}}


def run_data(tmp_path, mode):
    from llmcycle.data import DataConfig, run

    corpus = tmp_path / "corpus.jsonl"
    rows = [chat(i, "he is a good man and his son is kind" if i % 2 else "the weather is fine today")
            for i in range(40)]
    corpus.write_text("".join(json.dumps(r) + "\n" for r in rows))
    out = tmp_path / f"data-{mode}"
    run(DataConfig(source="jsonl", path=str(corpus), counterfactual=mode, near_dedup="off", exact_dedup=False,
                   val_frac=0.1, test_frac=0.1), out)
    return out


def read(path):
    return [json.loads(line) for line in path.read_text().splitlines()]


def test_data_stage_adds_counted_swapped_copies_to_train_only(tmp_path):
    plain, added = run_data(tmp_path, "off"), run_data(tmp_path, "add")
    train, base = read(added / "train.jsonl"), read(plain / "train.jsonl")
    gendered = sum("he is" in r["messages"][1]["content"] for r in base)
    assert len(train) == len(base) + gendered
    texts = [r["messages"][1]["content"] for r in train]
    assert texts.count("he is a good man and his son is kind") == texts.count("she is a good woman and her "
                                                                               "daughter is kind") == gendered
    assert read(added / "test.jsonl") == read(plain / "test.jsonl")
    card = json.loads((added / "card.json").read_text())
    step = next(f for f in card["filters"] if f["step"] == "counterfactual")
    assert step["added"] == gendered and step["words_to_female"] == 4 * gendered
    assert "counterfactual" in (added / "card.md").read_text()
    assert all(f["step"] != "counterfactual" for f in json.loads((plain / "card.json").read_text())["filters"])


def test_swap_mode_keeps_size_and_balances(tmp_path):
    train = read(run_data(tmp_path, "swap") / "train.jsonl")
    texts = [r["messages"][1]["content"] for r in train]
    male, female = texts.count("he is a good man and his son is kind"), texts.count(
        "she is a good woman and her daughter is kind")
    assert abs(male - female) <= 1 and male + female == sum("is kind" in t for t in texts)
