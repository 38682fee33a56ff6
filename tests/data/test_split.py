"""Splits: grouped (no movie/conversation/near-duplicate cluster in two splits), seeded, deterministic."""

from __future__ import annotations

import os
import random
import subprocess
import sys

from llmcycle.data import DataConfig, run
from llmcycle.data.dedup import near_pairs
from llmcycle.data.example import Example
from llmcycle.data.split import assign_groups

SPLITS = ("train", "val", "test")


def test_no_movie_in_two_splits_and_every_split_used(tmp_path, h):
    corpus = h.write_cornell(tmp_path / "corpus", movies=12, convs_per_movie=3)
    out = run(DataConfig(source="cornell", path=str(corpus), val_frac=0.2, test_frac=0.2), tmp_path / "data")
    movies = {s: {r["meta"]["movie_id"] for r in h.read_split(out, s)} for s in SPLITS}
    assert all(movies.values())
    assert not (movies["train"] & movies["val"]) and not (movies["train"] & movies["test"])
    assert not (movies["val"] & movies["test"])
    assert h.card(out)["leakage"]["groups_in_several_splits"] == 0


def test_near_duplicate_clusters_never_straddle_splits(tmp_path, h):
    """In group mode near-copies are kept, but each cluster lands in one split (checked for several seeds)."""
    rng = random.Random(0)
    rows = []
    for i in range(30):
        prompt = " ".join(h.sentence(rng) for _ in range(4))
        rows.append({"prompt": prompt, "response": f"answer {i}"})
        rows.append({"prompt": prompt + " Indeed.", "response": f"answer {i}"})  # a near-copy
    path = h.write_jsonl(tmp_path / "rows.jsonl", rows)
    for seed in range(3):
        cfg = DataConfig(source="jsonl", path=str(path), near_dedup="group", val_frac=0.25, test_frac=0.25, seed=seed)
        out = run(cfg, tmp_path / f"data{seed}")
        split_of = {r["meta"]["line"]: s for s in SPLITS for r in h.read_split(out, s)}
        assert len(split_of) == 60
        examples = [Example({"messages": [{"role": "user", "content": r["prompt"]},
                                          {"role": "assistant", "content": r["response"]}]}, str(i + 1))
                    for i, r in enumerate(rows)]
        pairs = near_pairs(examples, cfg)
        assert len(pairs) == 30  # every near-copy found...
        for i, similar in pairs.items():
            for j in similar:  # ...and in the same split as its original
                assert split_of[i + 1] == split_of[j + 1]
        assert len({split_of[k] for k in split_of}) == 3


def test_assign_groups_is_seeded_and_close_to_the_fractions():
    sizes = {f"g{i}": 1 + i % 5 for i in range(300)}
    fractions = {"train": 0.8, "val": 0.1, "test": 0.1}
    a = assign_groups(sizes, fractions, seed=1)
    assert a == assign_groups(dict(reversed(list(sizes.items()))), fractions, seed=1)  # input order irrelevant
    assert a != assign_groups(sizes, fractions, seed=2)
    total = sum(sizes.values())
    for split, frac in fractions.items():
        share = sum(n for g, n in sizes.items() if a[g] == split) / total
        assert abs(share - frac) < 0.02


def test_same_seed_gives_byte_identical_files_and_another_seed_differs(tmp_path, h):
    """The second run is a separate process with another PYTHONHASHSEED: no set or dict order may leak out."""
    corpus = h.write_cornell(tmp_path / "corpus", movies=10, convs_per_movie=3)
    args = ["--source", "cornell", "--path", str(corpus), "--val-frac", "0.2", "--test-frac", "0.2"]
    first = run(DataConfig(source="cornell", path=str(corpus), seed=5, val_frac=0.2, test_frac=0.2), tmp_path / "a")
    env = {**os.environ, "PYTHONHASHSEED": "12345", "LLMCYCLE_QUIET": "1"}
    subprocess.run([sys.executable, "-m", "llmcycle", "data", *args, "--seed", "5", "--out", str(tmp_path / "b")],
                   check=True, env=env, capture_output=True, timeout=300)
    other = run(DataConfig(source="cornell", path=str(corpus), seed=6, val_frac=0.2, test_frac=0.2), tmp_path / "c")
    names = ["train.jsonl", "val.jsonl", "test.jsonl", "card.json", "card.md", "card_lengths.png"]
    for name in names:
        assert (first / name).read_bytes() == (tmp_path / "b" / name).read_bytes(), name
    assert any((first / n).read_bytes() != (other / n).read_bytes() for n in names[:3])


def test_group_by_a_meta_field(tmp_path, h):
    rng = random.Random(3)
    rows = [{"prompt": " ".join(h.sentence(rng) for _ in range(3)), "response": "ok", "meta": {"topic": i % 7}}
            for i in range(42)]
    path = h.write_jsonl(tmp_path / "rows.jsonl", rows)
    out = run(DataConfig(source="jsonl", path=str(path), group_by="topic", val_frac=0.2, test_frac=0.2),
              tmp_path / "data")
    topics = {s: {r["meta"]["topic"] for r in h.read_split(out, s)} for s in SPLITS}
    assert all(topics.values()) and sum(len(t) for t in topics.values()) == 7  # each topic in exactly one split
