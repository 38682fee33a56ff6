"""`bench/prune_bench.py`'s speed pass: every model decoded in turn, the order rotated each round, and each round's
speed divided by the original's from the same round (so a load that changes between rounds cancels)."""

from __future__ import annotations

import argparse
from pathlib import Path


def test_speed_pass_rotates_and_pairs_each_round_with_the_original(bench_script, monkeypatch):
    bench = bench_script("prune_bench")
    from llmcycle.infer import engine as engine_module

    calls: list[str] = []
    # the load changes between rounds; "b" is 1.5x "a" in two rounds of three, level in the third
    speeds = {"a": [10.0, 40.0, 20.0], "b": [15.0, 60.0, 20.0], "c": [20.0, 80.0, 40.0]}

    class FakeEngine:
        def __init__(self, label: str):
            self.label = label

    def fake_rate(engine, prompt, new_tokens, repeats):
        if new_tokens == 4:  # the warm-up
            return {"tok_per_s_median": 0.0}
        round_ = sum(1 for c in calls if c == engine.label)
        calls.append(engine.label)
        return {"tok_per_s_median": speeds[engine.label][round_]}

    monkeypatch.setattr(engine_module.Engine, "load", staticmethod(lambda d, **_: FakeEngine(Path(d).name)))
    monkeypatch.setattr(bench, "decode_rate", fake_rate)
    args = argparse.Namespace(threads=1, new_tokens=8, speed_rounds=3)
    result = bench.speed_pass({"a": Path("a"), "b": Path("b"), "c": Path("c")}, [1, 2, 3], args)

    assert calls == ["a", "b", "c", "b", "c", "a", "c", "a", "b"]
    models = result["models"]
    assert models["a"]["ratio_to_original_median"] == 1.0
    # per-round ratios 1.5, 1.5, 1.0 (the ratio of the medians would say 20 / 20 = 1.0)
    b = models["b"]
    assert (b["ratio_to_original_median"], b["ratio_min"], b["ratio_max"]) == (1.5, 1.0, 1.5)
    assert models["c"]["ratio_to_original_median"] == 2.0 and models["c"]["tok_per_s_median"] == 40.0
