"""On-policy pairs: the best of a prompt's sampled replies against its worst, pairs within the ranker's noise dropped."""

from __future__ import annotations

from types import SimpleNamespace

from llmcycle.train.onpolicy import OnPolicyConfig, ranked_pairs


class ScriptedEngine:
    """Replies from a fixed list, in order; remembers how many conversations it was asked to answer."""

    def __init__(self, replies: list[str]):
        self.replies, self.asked = replies, 0

    def chat(self, convs, settings, batch_size):
        self.asked = len(convs)
        return [SimpleNamespace(text=r) for r in self.replies[:len(convs)]]


class LengthJudge:
    """Scores a reply by its length in characters."""

    def score(self, convs):
        return [float(len(c[-1]["content"])) for c in convs]


def prompt(i: int) -> list[dict]:
    return [{"role": "user", "content": f"hello {i}"}]


def test_pair_is_best_against_worst_of_the_samples():
    engine = ScriptedEngine(["bb", "dddd", "a", "ccc", "xx", "xx", "xx", "xx"])
    records = ranked_pairs(engine, LengthJudge(), [prompt(0), prompt(1)], OnPolicyConfig(samples=4), seed=0)
    assert engine.asked == 8
    assert len(records) == 1  # the second prompt's four replies are one reply: nothing to prefer
    assert records[0]["chosen"][0]["content"] == "dddd" and records[0]["rejected"][0]["content"] == "a"
    assert records[0]["meta"]["reward_gap"] == 3.0


def test_pairs_within_min_gap_are_dropped():
    engine = ScriptedEngine(["aaaa", "aaa", "a", "aaaaaa"])
    cfg = OnPolicyConfig(samples=2, min_gap=1.5)
    records = ranked_pairs(engine, LengthJudge(), [prompt(0), prompt(1)], cfg, seed=0)
    assert [r["chosen"][0]["content"] for r in records] == ["aaaaaa"]


def test_empty_replies_never_enter_a_pair():
    engine = ScriptedEngine(["", "abc", "ab"])
    records = ranked_pairs(engine, LengthJudge(), [prompt(0)], OnPolicyConfig(samples=3), seed=0)
    assert records[0]["rejected"][0]["content"] == "ab"
